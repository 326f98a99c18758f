"""Chapter 3: self-attention, from the simplified form to multi-head attention.

The chapter builds attention in four steps, and so does this file:

1. ``simplified_self_attention``: no trainable weights, every token scores every
   other by a dot product.
2. ``scaled_dot_product_attention``: queries, keys and values, scores divided by
   sqrt(d_k), an optional mask, dropout on the weights.
3. ``causal_mask`` and ``CausalAttention``: one head that cannot see the future.
4. ``MultiHeadAttention``: several heads side by side (``split_heads`` /
   ``merge_heads``), the layer used inside the GPT model of chapter 4.

``MultiHeadAttention`` has two paths with the same result: the lesson path above
(which also returns the attention weights, for plots) and a fast path on
``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, FlashAttention
on GPUs). ``tests/test_attention.py`` proves they agree.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # only for type hints; model.py imports this module
    from .model import GPTConfig


def simplified_self_attention(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chapter 3, step 1: attention without trainable weights.

    Each token's context vector is the average of all token vectors, weighted by
    the softmax of their dot products with it.

    x: (T, d) or (B, T, d).  Returns (context, weights): (.., T, d) and (.., T, T).
    """
    scores = x @ x.transpose(-2, -1)  # (.., T, T): token i against token j
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1
    return weights @ x, weights


def causal_mask(T: int, device: torch.device | str | None = None, past: int = 0) -> torch.Tensor:
    """Chapter 3, step 3: which keys each query may look at.

    Returns a bool tensor of shape (T, past + T), True where attention is allowed:
    query i (at absolute position past + i) sees keys 0 .. past + i, never later ones.
    ``past`` is the number of cached tokens during generation (chapter 4).
    """
    q_pos = torch.arange(past, past + T, device=device).unsqueeze(1)  # (T, 1)
    k_pos = torch.arange(past + T, device=device).unsqueeze(0)  # (1, past + T)
    return k_pos <= q_pos


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chapter 3, step 2: softmax(q k^T / sqrt(d_k)) v, written out.

    q: (.., Tq, d_k), k: (.., Tk, d_k), v: (.., Tk, d_v).
    mask: bool, broadcastable to (.., Tq, Tk), True where attention is allowed.
    Dropout (chapter 3) zeroes attention weights at random, only in training.
    Returns (context (.., Tq, d_v), weights (.., Tq, Tk)).
    """
    d_k = q.size(-1)
    # Without the 1/sqrt(d_k) the scores grow with d_k and the softmax saturates,
    # which makes its gradients vanish.
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(d_k)  # (.., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if training and dropout > 0:
        weights = F.dropout(weights, p=dropout, training=True)
    return weights @ v, weights


class CausalAttention(nn.Module):
    """Chapter 3, step 3: one attention head with a causal mask and dropout.

    (B, T, d_in) -> (B, T, d_out).  ``last_weights`` keeps the (B, T, T) attention
    weights of the latest call, for plotting.
    """

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = dropout
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        mask = causal_mask(x.size(-2), device=x.device)
        context, self.last_weights = scaled_dot_product_attention(
            q, k, v, mask, self.dropout, self.training
        )
        return context


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Chapter 3, step 4: (B, T, d) -> (B, n_heads, T, d // n_heads).

    Head h gets the channels h*head_dim .. (h+1)*head_dim - 1 of every token.
    """
    B, T, d = x.shape
    return x.view(B, T, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Chapter 3, step 4: the inverse of ``split_heads``, (B, H, T, hd) -> (B, T, H * hd)."""
    B, H, T, hd = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hd)


class KVCache:
    """Chapter 4: the keys and values of tokens already processed, for fast generation.

    Without a cache, generating token t re-computes keys and values for all t - 1
    earlier tokens; with it, each step only computes them for the new token.
    The buffers are allocated once, (B, n_heads, max_len, head_dim) per layer,
    so a step writes in place instead of concatenating.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int,
                 device: torch.device | str, dtype: torch.dtype):
        if max_len > config.context_length:
            raise ValueError(
                f"KVCache max_len {max_len} exceeds the model's context_length "
                f"{config.context_length}"
            )
        shape = (batch_size, config.n_heads, max_len, config.emb_dim // config.n_heads)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.max_len = max_len
        self.length = 0  # number of positions filled, the same for every layer

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (B, H, T, hd) keys/values of ``layer``; return all keys/values so far."""
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KVCache is full: {end} positions needed, {self.max_len} allocated")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        """Called by the model once every layer has stored ``n`` new positions."""
        self.length += n


class MultiHeadAttention(nn.Module):
    """Chapter 3, step 4: causal multi-head self-attention, the layer inside GPT.

    One linear layer computes queries, keys and values for all heads at once
    (three (d, d) matrices stacked into one (d, 3d) matrix, as GPT-2 does), each head
    attends on its own slice of channels, and ``out_proj`` mixes the heads' results.

    ``fast=True`` uses ``F.scaled_dot_product_attention`` (fused kernels); ``fast=False``
    runs the lesson path, ``scaled_dot_product_attention`` above. Asking for the
    attention weights always takes the lesson path, since the fused kernels never
    materialise them.
    """

    def __init__(self, config: GPTConfig, fast: bool = True):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.emb_dim, 3 * config.emb_dim, bias=config.qkv_bias)
        self.out_proj = nn.Linear(config.emb_dim, config.emb_dim)
        self.dropout = config.drop_rate
        self.resid_dropout = nn.Dropout(config.drop_rate)
        self.fast = fast

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, d).  mask: bool (B or 1, 1, T, Tk), True = may attend; None means
        plain causal attention over x alone.  Returns ((B, T, d), weights (B, H, T, Tk) or None).
        """
        q, k, v = self.qkv(x).split(x.size(-1), dim=-1)  # 3 x (B, T, d)
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))  # (B, H, T, hd)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, Tk, hd), Tk = cached + T

        dropout = self.dropout if self.training else 0.0
        if self.fast and not return_weights:
            # is_causal only fits a square mask; with a cache or padding, pass it explicitly.
            is_causal = mask is None and k.size(2) == q.size(2)
            if mask is None and not is_causal:
                mask = causal_mask(q.size(2), x.device, past=k.size(2) - q.size(2))
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal
            )
            weights = None
        else:
            if mask is None:
                mask = causal_mask(q.size(2), x.device, past=k.size(2) - q.size(2))
            context, weights = scaled_dot_product_attention(q, k, v, mask, dropout, self.training)

        out = self.out_proj(merge_heads(context))  # (B, T, d)
        return self.resid_dropout(out), weights
