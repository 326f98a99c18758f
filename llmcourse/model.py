"""The GPT model, one building block at a time (chapter 4; the parameter count, chapter 1).

Read top to bottom in the order the chapter builds it: how many parameters a
configuration has, layer normalisation, GELU, the feed-forward network, the
transformer block, and the model itself, then the next-token loss it is trained
with. The configuration is ``config.GPTConfig``; attention comes from chapter 3
(``attention.py``).

    token ids (B, T)
      -> token embedding + position embedding        (B, T, d)
      -> n_layers x TransformerBlock                 (B, T, d)
      -> final LayerNorm -> output head              (B, T, vocab_size) logits
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVCache, MultiHeadAttention, padded_causal_mask
from .config import GPTConfig


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Pick where the model runs: ``"auto"`` (or None) takes CUDA, then Apple's MPS, then the CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the ``with`` block with the model in eval mode (no dropout), then put
    back the mode it was in, training or not."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class ParameterCount:
    tied: int  # output head shares the token embedding matrix (GPT-2)
    untied: int  # output head has its own vocab_size x emb_dim matrix


def parameter_count(config: GPTConfig) -> ParameterCount:
    """How many numbers a GPT of this size learns, counted from its shapes.

    Per block: attention 4 d^2 + 4 d (qkv and output projection), feed-forward
    2 d f + f + d, two layer norms 4 d. Plus embeddings and the final norm.
    GPT-3 (d = 12288, 96 layers, f = 4d) comes out at 175B.
    """
    d, f, V = config.emb_dim, config.ff_dim, config.vocab_size
    attn = d * 3 * d + (3 * d if config.qkv_bias else 0) + d * d + d
    ff = d * f + f + f * d + d
    block = attn + ff + 2 * 2 * d
    tied = V * d + config.context_length * d + config.n_layers * block + 2 * d
    return ParameterCount(tied=tied, untied=tied + V * d)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Layer normalisation written out (the lesson version of ``LayerNorm``).

    Each token's vector is shifted to mean 0 and scaled to variance 1 over its
    channels (the last dim), then scaled and shifted by learned weight and bias.
    The variance is the population one (divide by d, ``unbiased=False``), as in GPT-2.
    """
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return weight * (x - mean) / torch.sqrt(var + eps) + bias


class LayerNorm(nn.Module):
    """``layer_norm`` with learned weight and bias, on PyTorch's fused kernel."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(emb_dim))
        self.bias = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU in GPT-2's tanh form, written out (the lesson version of ``GELU``).

    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): close to ReLU for large |x|,
    but smooth, and slightly negative for small negative x.
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class GELU(nn.Module):
    """``gelu`` as a layer, on PyTorch's fused kernel (same formula)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """The position-wise feed-forward network, d -> ff_dim -> d, GELU between.

    It acts on every token on its own; attention is where tokens meet.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.emb_dim, config.ff_dim)
        self.act = GELU()
        self.fc2 = nn.Linear(config.ff_dim, config.emb_dim)
        self.dropout = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(x))))


class TransformerBlock(nn.Module):
    """Attention and feed-forward, each with a pre-LayerNorm and a shortcut.

    x + attn(norm1(x)), then x + ff(norm2(x)): the shortcuts let gradients reach early
    layers unchanged, which is what makes deep stacks trainable.
    """

    def __init__(self, config: GPTConfig, fast_attention: bool = True):
        super().__init__()
        self.norm1 = LayerNorm(config.emb_dim, config.layer_norm_eps)
        self.attn = MultiHeadAttention(config.emb_dim, config.n_heads, config.drop_rate, config.qkv_bias,
                                       fast_attention)
        self.norm2 = LayerNorm(config.emb_dim, config.layer_norm_eps)
        self.ff = FeedForward(config)

    def forward(self, x, mask=None, cache=None, layer=0, return_weights=False):
        attn_out, weights = self.attn(self.norm1(x), mask, cache, layer, return_weights)
        x = x + attn_out
        x = x + self.ff(self.norm2(x))
        return x, weights


class GPT(nn.Module):
    """The decoder-only transformer that predicts the next token.

    ``model(idx)`` maps token ids (B, T) to logits (B, T, vocab_size): row t scores
    every possible token that could follow idx[:, :t + 1]. ``fast_attention=False``
    runs every attention layer on the lesson path (see ``MultiHeadAttention``).
    """

    def __init__(self, config: GPTConfig, device: str | torch.device | None = None,
                 fast_attention: bool = True):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT expects a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.emb_dim)
        self.pos_emb = nn.Embedding(config.context_length, config.emb_dim)
        self.drop_emb = nn.Dropout(config.drop_rate)
        self.blocks = nn.ModuleList(
            TransformerBlock(config, fast_attention) for _ in range(config.n_layers)
        )
        self.final_norm = LayerNorm(config.emb_dim, config.layer_norm_eps)
        self.out_head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # GPT-2 reuses the token embedding as the output matrix: 38M fewer parameters.
            self.out_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init: each residual branch adds to x, so shrink the last
        # projection of each branch by 1/sqrt(2 * n_layers) to keep x's variance steady.
        for block in self.blocks:
            for proj in (block.attn.out_proj, block.ff.fc2):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))
        if device is not None:
            self.to(resolve_device(device))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device

    def num_parameters(self) -> int:
        """Parameters actually stored (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())

    def _check_input(self, idx: torch.Tensor, past: int) -> None:
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"GPT expects token ids as a torch.Tensor, got {type(idx).__name__}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"GPT expects integer token ids (torch.long), got dtype {idx.dtype}")
        if idx.dim() != 2:
            raise ValueError(
                f"GPT expects token ids of shape (batch, seq_len), got shape {tuple(idx.shape)}"
            )
        if idx.size(1) == 0:
            raise ValueError("GPT got an empty sequence (seq_len 0)")
        if past + idx.size(1) > self.config.context_length:
            raise ValueError(
                f"sequence of {past + idx.size(1)} tokens is longer than the model's "
                f"context_length {self.config.context_length}"
            )
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is out of range [0, {self.config.vocab_size})")

    def forward(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        padding_mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """idx: (B, T) token ids.  Returns logits (B, T, vocab_size), or, given
        ``targets`` (B, T), the mean next-token loss without ever building the logits
        (``linear_cross_entropy``; what training calls).  ``last_only``: the logits of the
        last position only, (B, 1, vocab_size): all generation needs, without projecting
        every position to the vocabulary.

        cache: a ``KVCache`` holding earlier tokens (generation, chapter 4); idx then
        holds only the new tokens.  padding_mask: (B, cached + T), True/1 for real
        tokens and False/0 for left padding, so prompts of different lengths can share
        a batch; positions then count real tokens only.
        """
        hidden, _ = self._hidden_states(idx, cache, padding_mask, return_weights=False)
        if targets is not None:
            return linear_cross_entropy(hidden, self.out_head.weight, targets)
        return self.out_head(hidden[:, -1:] if last_only else hidden)  # (B, T or 1, vocab_size)

    def forward_with_attention(self, idx: torch.Tensor, padding_mask: torch.Tensor | None = None
                               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``forward``'s logits (B, T, vocab_size) and every layer's attention weights,
        a list of n_layers (B, n_heads, T, T) tensors (for plots: chapter 3). The
        weights come from the lesson path, whatever ``fast_attention`` says."""
        hidden, maps = self._hidden_states(idx, None, padding_mask, return_weights=True)
        return self.out_head(hidden), maps

    def _hidden_states(self, idx, cache, padding_mask, return_weights):
        """The final LayerNorm's output (B, T, d), and each layer's attention weights
        (None for each when not ``return_weights``)."""
        past = cache.length if cache is not None else 0
        if not torch.compiler.is_compiling():
            self._check_input(idx, past)
        B, T = idx.shape

        mask = None
        if padding_mask is None:
            pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        else:
            if padding_mask.shape != (B, past + T):
                raise ValueError(
                    f"padding_mask must have shape (batch, cached + new tokens) = "
                    f"{(B, past + T)}, got {tuple(padding_mask.shape)}"
                )
            real = padding_mask.to(device=idx.device, dtype=torch.bool)
            pos = (real.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T): real tokens before each
            mask = padded_causal_mask(real, T, past)  # (B, 1, T, past + T)

        x = self.drop_emb(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, d)
        maps = []
        for i, block in enumerate(self.blocks):
            x, weights = block(x, mask, cache, i, return_weights)
            maps.append(weights)
        if cache is not None:
            cache.advance(T)
        return self.final_norm(x), maps


IGNORE_INDEX = -100  # targets equal to this are left out of the loss (PyTorch's default)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The pretraining objective, cross-entropy of the next token.

    logits (B, T, V), targets (B, T) where targets[:, t] is the token after
    inputs[:, t]. Averaging -log p(target) over every position of the batch is
    maximum likelihood on next tokens. Positions whose target is ``ignore_index``
    (padding, or prompts in instruction tuning, chapter 5) do not count.
    """
    _check_targets(logits, targets, "logits")
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index)


def _check_targets(scored: torch.Tensor, targets: torch.Tensor, what: str) -> None:
    """targets must have one entry per row of ``scored`` (logits or hidden states)."""
    if scored.shape[:-1] != targets.shape:
        raise ValueError(
            f"{what} of shape {tuple(scored.shape)} need targets of shape "
            f"{tuple(scored.shape[:-1])}, got {tuple(targets.shape)}"
        )


class LinearCrossEntropy(torch.autograd.Function):
    """``next_token_loss(hidden @ weight.T, targets)`` and its
    gradients, computed ``chunk`` rows at a time, so the (N, vocab_size) logits never
    exist whole. The plain path keeps three tensors of that size alive (the logits,
    their log-softmax, and its gradient); for small models they dominate the step.

    The gradient of the mean cross-entropy with respect to row i's logits is
    (softmax(logits_i) - onehot(target_i)) / n_counted, so each chunk's gradients are
    finished in the forward pass and ``backward`` only scales them.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, ignore_index: int):
        counted = targets != ignore_index  # (N,)
        n = counted.sum()
        safe = targets.masked_fill(~counted, 0)  # any valid row index; those rows are zeroed below
        exact = torch.promote_types(weight.dtype, torch.float32)  # sums in fp32 (or fp64) at least
        loss = torch.zeros((), device=hidden.device, dtype=exact)
        grad_hidden, grad_weight = torch.empty_like(hidden), None
        # addmm_ into grad_weight needs fp32 inputs, and would skip autocast's bf16/fp16 matmul
        in_place = hidden.dtype == exact and not torch.is_autocast_enabled(hidden.device.type)
        for s in range(0, hidden.size(0), chunk):
            h, t, keep = hidden[s:s + chunk], safe[s:s + chunk], counted[s:s + chunk]
            logits = (h @ weight.T).to(exact)  # (chunk, V); autocast may have computed it in bf16
            log_probs = torch.log_softmax(logits, dim=-1)  # one fused pass (logsumexp then sub_: three)
            del logits
            loss -= (log_probs.gather(1, t[:, None])[:, 0] * keep).sum()
            probs = log_probs.exp_()  # softmax, in place
            probs[torch.arange(len(t), device=t.device), t] -= 1.0
            probs *= keep[:, None]
            probs = probs.to(h.dtype)  # not yet divided by n, so fp16 does not underflow
            grad_hidden[s:s + chunk] = probs @ weight
            if grad_weight is None:
                grad_weight = (probs.T @ h).to(exact)
            elif in_place:
                grad_weight.addmm_(probs.T, h)  # one pass over grad_weight
            else:
                grad_weight += probs.T @ h  # the product in bf16/fp16 like every other matmul
        ctx.save_for_backward(grad_hidden, grad_weight, n)
        ctx.weight_dtype = weight.dtype
        return loss / n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight, n = ctx.saved_tensors
        scale = grad_loss / n
        return grad_hidden * scale, (grad_weight * scale).to(ctx.weight_dtype), None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The mean next-token loss straight from the final hidden
    states (B, T, d) and the output matrix (V, d); equals ``next_token_loss(hidden @
    weight.T, targets)`` (a test checks it) but uses far less memory and time. Chunks
    of d rows keep the extra memory at about one more output matrix."""
    if not (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)):
        return next_token_loss(hidden @ weight.T, targets, ignore_index)  # no gradient: nothing to save
    _check_targets(hidden, targets, "hidden states")
    hidden, targets = hidden.flatten(0, 1), targets.flatten()
    return LinearCrossEntropy.apply(hidden, weight, targets, hidden.size(-1), ignore_index)
