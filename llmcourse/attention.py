"""Self-attention, from the simplified form to multi-head attention (chapter 3).

The chapter builds attention in four steps, and so does this file:

1. ``simplified_self_attention``: no trainable weights, every token scores every
   other by a dot product.
2. ``scaled_dot_product_attention``: queries, keys and values, scores divided by
   sqrt(d_k), an optional mask, dropout on the weights.
3. ``causal_mask`` and ``CausalAttention``: one head that cannot see the future.
4. ``MultiHeadAttention``: several heads side by side (``split_heads`` /
   ``merge_heads``), the layer used inside the GPT model of chapter 4.

Two pieces serve the GPT of chapter 4 when it generates: ``padded_causal_mask`` (the
mask for left-padded batches of prompts) and ``KVCache`` (the keys and values of
tokens already processed). Every class here takes its sizes as plain arguments
(``emb_dim``, ``n_heads``, ``drop_rate``, ``qkv_bias``, as ``GPTConfig`` names them), so
the chapter needs no model configuration yet.

``MultiHeadAttention`` has two paths with the same result: the lesson path above
(which also returns the attention weights, for plots) and a fast path on
``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, FlashAttention
on GPUs). ``tests/test_attention.py`` proves they agree.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def simplified_self_attention(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention without trainable weights (step 1).

    Each token's context vector is the average of all token vectors, weighted by
    the softmax of their dot products with it.

    x: (T, d) or (B, T, d).  Returns (context, weights): (.., T, d) and (.., T, T).
    """
    scores = x @ x.transpose(-2, -1)  # (.., T, T): token i against token j
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1
    return weights @ x, weights


def causal_mask(T: int, device: torch.device | str | None = None, past: int = 0) -> torch.Tensor:
    """Which keys each query may look at (step 3).

    Returns a bool tensor of shape (T, past + T), True where attention is allowed:
    query i (at absolute position past + i) sees keys 0 .. past + i, never later ones.
    ``past`` is the number of cached tokens during generation (chapter 4).
    """
    q_pos = torch.arange(past, past + T, device=device).unsqueeze(1)  # (T, 1)
    k_pos = torch.arange(past + T, device=device).unsqueeze(0)  # (1, past + T)
    return k_pos <= q_pos


def padded_causal_mask(real: torch.Tensor, T: int, past: int = 0) -> torch.Tensor:
    """The causal mask for a batch of left-padded sequences.

    real: bool (B, past + T), True for real tokens and False for padding. Returns a
    bool (B, 1, T, past + T) mask (broadcast over heads): query i sees the real keys
    up to its own position. A padding query would see no real key, so it attends to
    itself alone, which keeps its softmax defined (its output is never used).
    """
    allowed = causal_mask(T, real.device, past) & real[:, None, :]  # (B, T, past + T)
    q_pos = torch.arange(past, past + T, device=real.device)  # absolute slots of the queries
    own = torch.arange(past + T, device=real.device) == q_pos[:, None]  # (T, past + T)
    return (allowed | own)[:, None]  # (B, 1, T, past + T)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d_k)) v, written out (step 2).

    q: (.., Tq, d_k), k: (.., Tk, d_k), v: (.., Tk, d_v).
    mask: bool, broadcastable to (.., Tq, Tk), True where attention is allowed.
    ``dropout`` is the probability that an attention weight is zeroed, only in training.
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
    """One attention head with a causal mask and dropout (step 3).

    (B, T, d_in) -> (B, T, d_out).  ``drop_rate`` is the dropout on the attention
    weights, in training only. ``last_weights`` keeps the (B, T, T) attention weights
    of the latest call, for plotting.
    """

    def __init__(self, d_in: int, d_out: int, drop_rate: float = 0.0, qkv_bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.drop_rate = drop_rate
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        mask = causal_mask(x.size(-2), device=x.device)
        context, self.last_weights = scaled_dot_product_attention(
            q, k, v, mask, self.drop_rate, self.training
        )
        return context


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, d) -> (B, n_heads, T, d // n_heads): one slice of channels per head (step 4).

    Head h gets the channels h*head_dim .. (h+1)*head_dim - 1 of every token.
    """
    B, T, d = x.shape
    return x.view(B, T, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """The inverse of ``split_heads``, (B, H, T, hd) -> (B, T, H * hd)."""
    B, H, T, hd = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hd)


class KVCache:
    """The keys and values of tokens already processed, for fast generation (chapter 4).

    Without a cache, generating token t re-computes keys and values for all t - 1
    earlier tokens; with it, each step only computes them for the new token.
    Each of the ``n_layers`` layers gets its buffers once, at its first ``update``:
    (B, n_heads, max_len, head_dim), shaped, placed and typed like the keys it is
    given, so a step writes in place instead of concatenating.
    """

    def __init__(self, n_layers: int, max_len: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.max_len = max_len
        self.length = 0  # number of positions filled, the same for every layer

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (B, H, T, hd) keys/values of ``layer``; return all keys/values so far."""
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KVCache is full: {end} positions needed, {self.max_len} allocated")
        if self.keys[layer] is None:
            B, H, _, hd = k.shape
            self.keys[layer] = k.new_empty(B, H, self.max_len, hd)
            self.values[layer] = v.new_empty(B, H, self.max_len, hd)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        """Called by the model once every layer has stored ``n`` new positions."""
        self.length += n


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention, the layer inside GPT (step 4).

    One linear layer computes queries, keys and values for all heads at once
    (three (d, d) matrices stacked into one (d, 3d) matrix, as GPT-2 does), each of the
    ``n_heads`` heads attends on its own emb_dim // n_heads channels, and ``out_proj``
    mixes the heads' results. ``drop_rate`` is the dropout on the attention weights
    and on the output, in training only.

    ``fast_attention=True`` uses ``F.scaled_dot_product_attention`` (fused kernels);
    ``fast_attention=False`` runs the lesson path, ``scaled_dot_product_attention``
    above. Asking for the attention weights always takes the lesson path, since the
    fused kernels never materialise them.
    """

    def __init__(self, emb_dim: int, n_heads: int, drop_rate: float = 0.0, qkv_bias: bool = False,
                 fast_attention: bool = True):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(emb_dim, 3 * emb_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(emb_dim, emb_dim)
        self.drop_rate = drop_rate
        self.resid_dropout = nn.Dropout(drop_rate)
        self.fast_attention = fast_attention

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

        dropout = self.drop_rate if self.training else 0.0
        if self.fast_attention and not return_weights:
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
