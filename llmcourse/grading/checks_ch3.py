"""Chapter 3's checks: self-attention from the simplified form to multi-head attention.

Registered on import (``registry.py`` imports every chapter's module).
"""
from __future__ import annotations

import math

import torch

from .. import attention as ref
from .checks import Case, Check, Mistake, dropout_problem, randn, register, register_quiz
from .policy import ATTENTION

CH3_CONCEPTS = (ATTENTION,)  # softmax is not the exercise here: torch.softmax is fine


def _simplified_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        return [Case((randn(gen, 6, 4),), "x of shape (6, 4)")]
    return [Case((randn(gen, 2, 5, 3),), "a batch, x of shape (2, 5, 3)"),
            Case((randn(gen, 1, 7),), "one token, x of shape (1, 7)"),
            Case((randn(gen, 4, 8, dtype=torch.float64),), "float64 x of shape (4, 8)")]


def _simplified_softmax_dim0(x):
    scores = x @ x.transpose(-2, -1)
    weights = torch.softmax(scores, dim=-2)
    return weights @ x, weights


def _simplified_no_softmax(x):
    scores = x @ x.transpose(-2, -1)
    return scores @ x, scores


register(Check(
    id="ch3.simplified_attention", function_name="simplified_attention",
    reference=ref.simplified_self_attention, draw_cases=_simplified_cases,
    mistakes=(Mistake(_simplified_softmax_dim0, "softmax over the wrong dimension: each row of the "
                      "weights (one query) must sum to 1, use dim=-1"),
              Mistake(_simplified_no_softmax, "the scores were not normalised with a softmax")),
    concepts=CH3_CONCEPTS,
))


def _sdpa_variant(q, k, v, mask=None, dropout=0.0, training=False, *, scale=None, dim=-1, flip=False,
                  ignore_mask=False):
    """The reference with one thing changed, for the typical mistakes below."""
    scores = q @ k.transpose(-2, -1)
    if scale is not None:
        scores = scores * scale(q.size(-1))
    if mask is not None and not ignore_mask:
        scores = scores.masked_fill(mask if flip else ~mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    return weights @ v, weights


def judge_attention_dropout(args: tuple, got) -> str | None:
    """Dropout in training is random, so its output is judged by what it must be: the
    attention weights are the eval-mode weights with dropout applied (``dropout_problem``),
    and the context is computed from those very weights."""
    q, k, v, mask, p, _ = args
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)):
        return "expected (context, weights), two tensors"
    context, weights = got
    clean = ref.scaled_dot_product_attention(q, k, v, mask)[1]  # eval mode: no dropout
    problem = dropout_problem(clean, weights, p, "attention weights", "to the weights, after the softmax")
    if problem:
        return problem
    if not torch.allclose(context.double(), weights.double() @ v.double(), rtol=1e-4, atol=1e-5):
        return "the context is not the returned (dropped-out) weights times v"
    return None


def _sdpa_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        q, k, v = randn(gen, 5, 8), randn(gen, 5, 8), randn(gen, 5, 8)
        return [Case((q, k, v), "q, k, v of shape (5, 8), no mask"),
                Case((q, k, v, ref.causal_mask(5)), "q, k, v of shape (5, 8) with a causal mask")]
    B, H, T, d = 2, 3, 6, 16
    q, k, v = randn(gen, B, H, T, d), randn(gen, B, H, T, d), randn(gen, B, H, T, 4)
    q4, k7 = randn(gen, 4, 16), randn(gen, 7, 16)
    v7 = randn(gen, 7, 5)
    pad = torch.rand(7, generator=gen) > 0.3
    pad[0] = True  # every query keeps a key to attend to
    pad[1 + int(torch.randint(6, (1,), generator=gen))] = False  # and at least one key is masked
    causal = "4-d q, k (2, 3, 6, 16) and v (2, 3, 6, 4), causal mask"
    return [
        Case((q, k, v, ref.causal_mask(T)), causal),
        Case((q4, k7, v7, pad.expand(4, 7)), "4 queries, 7 keys, a padding mask"),
        Case((q.double(), k.double(), v.double()), "float64 inputs: the output keeps the dtype", exact_dtype=True),
        Case((q, k, v, ref.causal_mask(T), 0.5, False), "the same inputs with dropout=0.5 and training=False",
             hint="dropout active in eval(): with training=False the weights must not be dropped", base=causal),
        Case((randn(gen, 4, 32, 16), randn(gen, 4, 32, 16), randn(gen, 4, 32, 8), None, 0.4, True),
             "dropout=0.4 with training=True (4 x 32 x 32 weights): about 40% zeroed, the rest scaled by 1/0.6",
             judge=judge_attention_dropout),
    ]


register(Check(
    id="ch3.scaled_dot_product_attention", function_name="scaled_dot_product_attention",
    reference=ref.scaled_dot_product_attention, draw_cases=_sdpa_cases,
    mistakes=(
        Mistake(lambda *a: _sdpa_variant(*a, scale=None), "missing 1/sqrt(d_k): divide the scores by "
                "the square root of the key dimension"),
        Mistake(lambda *a: _sdpa_variant(*a, scale=lambda d: 1 / d), "scores divided by d_k instead of sqrt(d_k)"),
        Mistake(lambda *a: _sdpa_variant(*a, scale=lambda d: d ** -0.5, flip=True),
                "mask in the wrong direction: True means 'may attend', so fill the scores where the mask is False"),
        Mistake(lambda *a: _sdpa_variant(*a, scale=lambda d: d ** -0.5, ignore_mask=True), "the mask was not applied"),
        Mistake(lambda *a: _sdpa_variant(*a, scale=lambda d: d ** -0.5, dim=-2),
                "softmax over the wrong dimension: each query's weights (a row, dim=-1) must sum to 1"),
    ),
    concepts=CH3_CONCEPTS, rtol=1e-5, atol=1e-6,
))


def _mask_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        T = int(torch.randint(3, 9, (1,), generator=gen))
        return [Case((T,), f"T={T}")]
    T = int(torch.randint(9, 20, (1,), generator=gen))
    return [Case((1,), "T=1"), Case((T,), f"T={T}")]


register(Check(
    id="ch3.causal_mask", function_name="causal_mask",
    reference=lambda T: ref.causal_mask(T), draw_cases=_mask_cases,
    mistakes=(
        Mistake(lambda T: ~ref.causal_mask(T), "mask flipped: True must mean 'may attend'; token i "
                "may see tokens 0..i (itself included), so as written a token sees the future"),
        Mistake(lambda T: ref.causal_mask(T).T, "mask in the wrong direction (a token sees the future): "
                "row i (the query) must be True for columns j <= i"),
        Mistake(lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1), "the diagonal is missing: "
                "a token may attend to itself"),
    ),
    concepts=CH3_CONCEPTS,
))


def _split_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        return [Case((randn(gen, 2, 3, 8), 2), "x (2, 3, 8), 2 heads")]
    return [Case((randn(gen, 1, 5, 12), 3), "x (1, 5, 12), 3 heads"),
            Case((randn(gen, 2, 4, 6), 1), "one head"),
            Case((randn(gen, 3, 2, 8, dtype=torch.float64), 4), "float64 x (3, 2, 8), 4 heads")]


def _merge_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        return [Case((randn(gen, 2, 2, 3, 4),), "x (2, 2, 3, 4): 2 heads of 4 channels")]
    return [Case((randn(gen, 1, 3, 5, 4),), "x (1, 3, 5, 4)"),
            Case((randn(gen, 2, 4, 3, 2, dtype=torch.float64),), "float64 x (2, 4, 3, 2)")]


def _split_no_transpose(x, n_heads):
    B, T, d = x.shape
    return x.reshape(B, n_heads, T, d // n_heads)


def _split_interleaved(x, n_heads):
    B, T, d = x.shape
    return x.view(B, T, d // n_heads, n_heads).permute(0, 3, 1, 2)


def _merge_no_transpose(x):
    B, H, T, hd = x.shape
    return x.reshape(B, T, H * hd)


def _merge_interleaved(x):
    B, H, T, hd = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, H * hd)


_HEADS_HINT = ("heads split or merged in the wrong order: reshape (B, T, d) to (B, T, n_heads, head_dim) "
               "and then swap T and n_heads (and the reverse to merge); a reshape alone mixes tokens")
register(Check(
    id="ch3.split_heads", function_name="split_heads", reference=ref.split_heads, draw_cases=_split_cases,
    mistakes=(Mistake(_split_no_transpose, _HEADS_HINT),
              Mistake(_split_interleaved, "head h must get the contiguous channels h*head_dim .. "
                      "(h+1)*head_dim - 1, not every n_heads-th channel")),
    concepts=CH3_CONCEPTS, rtol=0, atol=0,
))
register(Check(
    id="ch3.merge_heads", function_name="merge_heads", reference=ref.merge_heads, draw_cases=_merge_cases,
    mistakes=(Mistake(_merge_no_transpose, _HEADS_HINT),
              Mistake(_merge_interleaved, "the head channels were interleaved: head 0's channels come first, "
                      "then head 1's, ...")),
    concepts=CH3_CONCEPTS, rtol=0, atol=0,
))


def reference_multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads):
    """Causal multi-head attention with the given (d, d) weights (``y = x @ W``), through
    ``llmcourse.attention.MultiHeadAttention`` (the lesson path)."""
    layer = ref.MultiHeadAttention(x.size(-1), n_heads, fast_attention=False).to(x.dtype).eval()
    with torch.no_grad():
        layer.qkv.weight.copy_(torch.cat([W_q.T, W_k.T, W_v.T]))
        layer.out_proj.weight.copy_(W_o.T)
        layer.out_proj.bias.zero_()
        return layer(x)[0]


def _mha_variant(x, W_q, W_k, W_v, W_o, n_heads, *, causal=True, scale=True, merge=ref.merge_heads,
                 split=ref.split_heads, project=True):
    q, k, v = (split(x @ W, n_heads) for W in (W_q, W_k, W_v))
    scores = q @ k.transpose(-2, -1)
    if scale:
        scores = scores / math.sqrt(q.size(-1))
    if causal:
        scores = scores.masked_fill(~ref.causal_mask(x.size(1)), float("-inf"))
    out = merge(torch.softmax(scores, dim=-1) @ v)
    return out @ W_o if project else out


def _mha_cases(gen: torch.Generator, kind: str) -> list[Case]:
    def case(B, T, d, H, dtype=torch.float32):
        weights = tuple(randn(gen, d, d, dtype=dtype) / math.sqrt(d) for _ in range(4))
        return (randn(gen, B, T, d, dtype=dtype),) + weights + (H,)

    if kind == "visible":
        return [Case(case(2, 5, 8, 2), "x (2, 5, 8), 2 heads")]
    return [Case(case(1, 7, 12, 3), "x (1, 7, 12), 3 heads"),
            Case(case(2, 4, 6, 1), "one head"),
            Case(case(2, 3, 16, 4, torch.float64), "float64, 4 heads")]


register(Check(
    id="ch3.multi_head_attention", function_name="multi_head_attention",
    reference=reference_multi_head_attention, draw_cases=_mha_cases,
    mistakes=(
        Mistake(lambda *a: _mha_variant(*a, causal=False), "no causal mask: a token sees the future"),
        Mistake(lambda *a: _mha_variant(*a, scale=False), "missing 1/sqrt(d_k), with d_k the head dimension"),
        Mistake(lambda *a: _mha_variant(*a, merge=_merge_no_transpose), _HEADS_HINT),
        Mistake(lambda *a: _mha_variant(*a, split=_split_no_transpose), _HEADS_HINT),
        Mistake(lambda *a: _mha_variant(*a, project=False), "the output projection W_o was not applied"),
    ),
    concepts=CH3_CONCEPTS, rtol=1e-4, atol=1e-5,
))


register_quiz("ch3.q1", "ch3.q2")
