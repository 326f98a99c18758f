"""Checks of the chapter 4 assignment: the GPT model, its loss, a training step, generation.

Every exercise is a plain function of tensors and numbers (what the grader can call).
References come from ``llmcourse.model``, ``llmcourse.generate`` and ``torch.optim.AdamW``;
the small wrappers here load the given weights into them. Typical mistakes are the
variants below, each named by the hint a matching answer gets.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from .checks import Case, Check, Mistake, dropout_problem, randn, register, register_quiz
from .policy import ADAMW, ATTENTION, CROSS_ENTROPY, GELU, LAYER_NORM

# What the chapter's exercises write by hand. One set for all: they build one model, and a
# block on a built-in layer norm is not written by hand either (softmax is fine here).
CH4_CONCEPTS = (LAYER_NORM, GELU, ATTENTION, CROSS_ENTROPY, ADAMW)


def _rand(gen: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=gen, dtype=torch.float64).to(dtype)


def _reg(**kwargs) -> Check:
    return register(Check(concepts=CH4_CONCEPTS, **kwargs))


# ---------------------------------------------------------------- layer norm

def reference_layer_norm(x, weight, bias, eps=1e-5):
    from ..model import layer_norm

    return layer_norm(x, weight, bias, eps)


def _ln_args(gen, shape, dtype=torch.float32, scale=1.0, eps=1e-5):
    d = shape[-1]
    x = randn(gen, *shape, dtype=dtype, scale=scale) + randn(gen, *shape[:-1], 1, dtype=dtype)
    return (x, 1 + 0.3 * randn(gen, d, dtype=dtype), 0.2 * randn(gen, d, dtype=dtype), eps)


def _ln_cases(gen, kind):
    if kind == "visible":
        # A small spread (std 0.01): there eps inside or outside the square root makes a difference.
        return [Case(_ln_args(gen, (2, 3, 8)), "x (2, 3, 8)"),
                Case(_ln_args(gen, (4, 6), scale=0.01), "x (4, 6) with a small spread (std 0.01)")]
    return [Case(_ln_args(gen, (1, 5, 16), scale=0.02), "x (1, 5, 16), std 0.02"),
            Case(_ln_args(gen, (3, 4), dtype=torch.float64), "float64 x (3, 4)"),
            Case(_ln_args(gen, (2, 7, 4), eps=1e-2), "x (2, 7, 4) with eps=1e-2"),
            Case(_ln_args(gen, (5, 5)), "square x (5, 5): normalise over the last dim")]


def _ln_variant(x, weight, bias, eps=1e-5, *, unbiased=False, eps_outside=False, dim=-1):
    mean = x.mean(dim=dim, keepdim=True)
    var = x.var(dim=dim, keepdim=True, unbiased=unbiased)
    denom = torch.sqrt(var) + eps if eps_outside else torch.sqrt(var + eps)
    return weight * (x - mean) / denom + bias


_reg(id="ch4.layer_norm", function_name="layer_norm", reference=reference_layer_norm, draw_cases=_ln_cases,
     mistakes=(
         Mistake(lambda *a: _ln_variant(*a, unbiased=True),
                 "variance computed without unbiased=False: layer norm divides by d (the population "
                 "variance), torch.var divides by d - 1 by default"),
         Mistake(lambda *a: _ln_variant(*a, eps_outside=True),
                 "eps outside the square root: divide by sqrt(var + eps), not sqrt(var) + eps"),
         Mistake(lambda *a: _ln_variant(*a, dim=0),
                 "normalised over the wrong dimension: each token's vector is normalised over its "
                 "channels, the last dim (dim=-1)"),
         Mistake(lambda *a: _ln_variant(*a, dim=-2),
                 "normalised over the wrong dimension: each token's vector is normalised over its "
                 "channels, the last dim (dim=-1)"),
     ), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- GELU

def reference_gelu(x):
    from ..model import gelu

    return gelu(x)


def _gelu_cases(gen, kind):
    if kind == "visible":
        return [Case((randn(gen, 4, 50, scale=2.0),), "x (4, 50), values mostly in [-6, 6]")]
    return [Case((torch.linspace(-5, 5, 201),), "x = linspace(-5, 5, 201)"),
            Case((randn(gen, 2, 3, 17, dtype=torch.float64, scale=2.0),), "float64 x (2, 3, 17)"),
            Case((torch.tensor([0.0, -0.0, 30.0, -30.0]),), "0 and large |x|")]


def _gelu_erf(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))


def _gelu_no_cubic(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * x))


_reg(id="ch4.gelu", function_name="gelu", reference=reference_gelu, draw_cases=_gelu_cases,
     mistakes=(
         Mistake(_gelu_erf, "this is the exact (erf) GELU; GPT-2 uses the tanh approximation "
                 "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))"),
         Mistake(_gelu_no_cubic, "the 0.044715 x^3 term inside the tanh is missing"),
         Mistake(torch.relu, "this is ReLU, not GELU"),
     ), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- feed-forward

def _ff_module(d, f, W1, b1, W2, b2, dtype):
    from ..config import GPTConfig
    from ..model import FeedForward

    ff = FeedForward(GPTConfig(vocab_size=8, context_length=8, emb_dim=d, n_heads=1, n_layers=1,
                               drop_rate=0.0, ff_dim=f)).to(dtype).eval()
    with torch.no_grad():
        ff.fc1.weight.copy_(W1.T)
        ff.fc1.bias.copy_(b1)
        ff.fc2.weight.copy_(W2.T)
        ff.fc2.bias.copy_(b2)
    return ff


def reference_feed_forward(x, W1, b1, W2, b2, dropout=0.0, training=False):
    """``llmcourse.model.FeedForward`` with the given weights (applied as ``x @ W1``), in eval mode:
    the compared cases call it with ``training=False`` or ``dropout=0``, which are deterministic;
    dropout in training is judged by ``judge_ff_dropout``."""
    with torch.no_grad():
        return _ff_module(W1.size(0), W1.size(1), W1, b1, W2, b2, x.dtype)(x)


def _ff_args(gen, B, T, d, f, dtype=torch.float32):
    return (randn(gen, B, T, d, dtype=dtype), randn(gen, d, f, dtype=dtype, scale=1 / math.sqrt(d)),
            randn(gen, f, dtype=dtype, scale=0.1), randn(gen, f, d, dtype=dtype, scale=1 / math.sqrt(f)),
            randn(gen, d, dtype=dtype, scale=0.1))


def _ff_cases(gen, kind):
    if kind == "visible":
        return [Case(_ff_args(gen, 2, 3, 4, 16), "x (2, 3, 4), W1 (4, 16), W2 (16, 4)")]
    args = _ff_args(gen, 2, 4, 4, 8)
    return [Case(_ff_args(gen, 1, 5, 6, 10), "x (1, 5, 6), hidden width 10"),
            Case(_ff_args(gen, 2, 2, 8, 32, torch.float64), "float64"),
            Case(args, "x (2, 4, 4), hidden width 8"),
            Case(args + (0.5, False), "the same inputs with dropout=0.5 and training=False",
                 hint="dropout active in eval(): with training=False nothing may be dropped",
                 base="x (2, 4, 4), hidden width 8"),
            Case(_ff_args(gen, 1, 3, 4, 8) + (0.0, True), "training=True with dropout=0"),
            Case(_ff_args(gen, 4, 32, 32, 64) + (0.4, True), "dropout=0.4 with training=True (4 x 32 x 32 "
                 "outputs): about 40% zeroed, the rest scaled by 1/0.6", judge=judge_ff_dropout)]


def judge_ff_dropout(args: tuple, got) -> str | None:
    """Dropout in training is random: the output must be the eval-mode output with dropout
    applied to it (``dropout_problem``), as the task says (on the output, as GPT-2 does)."""
    if not isinstance(got, torch.Tensor):
        return f"expected a tensor, got {type(got).__name__}"
    return dropout_problem(reference_feed_forward(*args[:5]), got, args[5], "outputs",
                           "to the output, after the second layer")


def _ff_relu(x, W1, b1, W2, b2, dropout=0.0, training=False):
    return torch.relu(x @ W1 + b1) @ W2 + b2


def _ff_no_bias2(x, W1, b1, W2, b2, dropout=0.0, training=False):
    return reference_gelu(x @ W1 + b1) @ W2


_reg(id="ch4.feed_forward", function_name="feed_forward", reference=reference_feed_forward, draw_cases=_ff_cases,
     mistakes=(
         Mistake(_ff_relu, "ReLU instead of GELU between the two layers (use your gelu)"),
         Mistake(_ff_no_bias2, "the second bias b2 was not added"),
     ), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- transformer block

def _config(d, f, n_heads, n_layers=1, vocab=8, context=8):
    from ..config import GPTConfig

    return GPTConfig(vocab_size=vocab, context_length=context, emb_dim=d, n_heads=n_heads, n_layers=n_layers,
                     drop_rate=0.0, qkv_bias=False, ff_dim=f)


def _load_block(block, ln1_w, ln1_b, W_q, W_k, W_v, W_o, ln2_w, ln2_b, W1, b1, W2, b2):
    with torch.no_grad():
        block.norm1.weight.copy_(ln1_w)
        block.norm1.bias.copy_(ln1_b)
        block.attn.qkv.weight.copy_(torch.cat([W_q.T, W_k.T, W_v.T]))
        block.attn.out_proj.weight.copy_(W_o.T)
        block.attn.out_proj.bias.zero_()
        block.norm2.weight.copy_(ln2_w)
        block.norm2.bias.copy_(ln2_b)
        block.ff.fc1.weight.copy_(W1.T)
        block.ff.fc1.bias.copy_(b1)
        block.ff.fc2.weight.copy_(W2.T)
        block.ff.fc2.bias.copy_(b2)


def reference_transformer_block(x, ln1_w, ln1_b, W_q, W_k, W_v, W_o, ln2_w, ln2_b, W1, b1, W2, b2, n_heads):
    """``llmcourse.model.TransformerBlock`` (lesson attention path) with the given weights."""
    from ..model import TransformerBlock

    block = TransformerBlock(_config(x.size(-1), W1.size(1), n_heads), fast_attention=False).to(x.dtype).eval()
    _load_block(block, ln1_w, ln1_b, W_q, W_k, W_v, W_o, ln2_w, ln2_b, W1, b1, W2, b2)
    with torch.no_grad():
        return block(x)[0]


def given_attention(x, W_q, W_k, W_v, W_o, n_heads):
    """The causal multi-head attention the notebook gives (chapter 3), for the mistake variants."""
    from .checks_ch3 import reference_multi_head_attention

    return reference_multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads)


def _block_variant(x, ln1_w, ln1_b, W_q, W_k, W_v, W_o, ln2_w, ln2_b, W1, b1, W2, b2, n_heads, *,
                   post_norm=False, shortcut1=True, shortcut2=True):
    def ln1(t):
        return reference_layer_norm(t, ln1_w, ln1_b)

    def ln2(t):
        return reference_layer_norm(t, ln2_w, ln2_b)

    def attn(t):
        return given_attention(t, W_q, W_k, W_v, W_o, n_heads)

    def ff(t):
        return reference_gelu(t @ W1 + b1) @ W2 + b2

    if post_norm:
        x = ln1(x + attn(x))
        return ln2(x + ff(x))
    x = (x if shortcut1 else 0) + attn(ln1(x))
    return (x if shortcut2 else 0) + ff(ln2(x))


def _block_weights(gen, d, f, dtype=torch.float32, layers=None):
    lead = () if layers is None else (layers,)
    s = 1 / math.sqrt(d)
    return (1 + 0.2 * randn(gen, *lead, d, dtype=dtype), 0.1 * randn(gen, *lead, d, dtype=dtype),
            *(randn(gen, *lead, d, d, dtype=dtype, scale=s) for _ in range(4)),
            1 + 0.2 * randn(gen, *lead, d, dtype=dtype), 0.1 * randn(gen, *lead, d, dtype=dtype),
            randn(gen, *lead, d, f, dtype=dtype, scale=s), randn(gen, *lead, f, dtype=dtype, scale=0.1),
            randn(gen, *lead, f, d, dtype=dtype, scale=1 / math.sqrt(f)), randn(gen, *lead, d, dtype=dtype, scale=0.1))


def _block_cases(gen, kind):
    def case(B, T, d, f, H, dtype=torch.float32):
        return (randn(gen, B, T, d, dtype=dtype),) + _block_weights(gen, d, f, dtype) + (H,)

    if kind == "visible":
        return [Case(case(2, 4, 8, 32, 2), "x (2, 4, 8), 2 heads, hidden width 32")]
    return [Case(case(1, 6, 12, 24, 3), "x (1, 6, 12), 3 heads"),
            Case(case(2, 3, 8, 16, 1), "one head"),
            Case(case(1, 5, 8, 16, 4, torch.float64), "float64, 4 heads")]


_SHORTCUT = ("a shortcut is missing: the block computes x = x + attention(norm1(x)), then "
             "x = x + feed_forward(norm2(x))")
_reg(id="ch4.transformer_block", function_name="transformer_block", reference=reference_transformer_block,
     draw_cases=_block_cases,
     mistakes=(
         Mistake(lambda *a: _block_variant(*a, post_norm=True),
                 "post-norm: GPT-2 normalises the input of each branch (pre-norm), x + attention(norm1(x)), "
                 "not norm1(x + attention(x))"),
         Mistake(lambda *a: _block_variant(*a, shortcut1=False), _SHORTCUT + " (the one around attention)"),
         Mistake(lambda *a: _block_variant(*a, shortcut2=False), _SHORTCUT + " (the one around the feed-forward)"),
     ), rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- the GPT forward pass

def reference_gpt_forward(idx, tok_emb, pos_emb, ln1_w, ln1_b, W_q, W_k, W_v, W_o, ln2_w, ln2_b,
                          W1, b1, W2, b2, lnf_w, lnf_b, n_heads):
    """``llmcourse.model.GPT`` (tied head) with the given weights; block weights are stacked
    along a first dim of size n_layers."""
    from ..model import GPT

    (V, d), C, L, f = tok_emb.shape, pos_emb.size(0), W_q.size(0), W1.size(-1)
    model = GPT(_config(d, f, n_heads, L, V, C), fast_attention=False).to(tok_emb.dtype).eval()
    stacked = (ln1_w, ln1_b, W_q, W_k, W_v, W_o, ln2_w, ln2_b, W1, b1, W2, b2)
    with torch.no_grad():
        model.tok_emb.weight.copy_(tok_emb)
        model.pos_emb.weight.copy_(pos_emb)
        for layer, block in enumerate(model.blocks):
            _load_block(block, *(w[layer] for w in stacked))
        model.final_norm.weight.copy_(lnf_w)
        model.final_norm.bias.copy_(lnf_b)
        return model(idx)


def _gpt_variant(idx, tok_emb, pos_emb, *rest, positions=True, final_norm=True):
    *stacked, lnf_w, lnf_b, n_heads = rest
    T = idx.size(1)
    x = tok_emb[idx] + (pos_emb[:T] if positions else 0)
    for layer in range(stacked[0].size(0)):
        x = _block_variant(x, *(w[layer] for w in stacked), n_heads)
    if final_norm:
        x = reference_layer_norm(x, lnf_w, lnf_b)
    return x @ tok_emb.T


def _gpt_cases(gen, kind):
    def case(B, T, V, C, d, f, H, L, dtype=torch.float32):
        idx = torch.randint(0, V, (B, T), generator=gen)
        return (idx, randn(gen, V, d, dtype=dtype, scale=0.5), randn(gen, C, d, dtype=dtype, scale=0.3),
                *_block_weights(gen, d, f, dtype, layers=L), 1 + 0.2 * randn(gen, d, dtype=dtype),
                0.1 * randn(gen, d, dtype=dtype), H)

    if kind == "visible":
        return [Case(case(2, 5, 11, 8, 8, 16, 2, 2), "idx (2, 5), vocab 11, context 8, d 8, 2 layers, 2 heads")]
    return [Case(case(1, 8, 13, 8, 12, 24, 3, 1), "idx (1, 8) filling the whole context, 1 layer"),
            Case(case(3, 1, 7, 4, 8, 16, 1, 3), "one token per sequence, 3 layers"),
            Case(case(2, 4, 9, 6, 8, 16, 2, 2, torch.float64), "float64 weights")]


# float32 through several layers: layer norm magnifies rounding where a token's channels
# barely vary, so honest answers reach ~4% of these tolerances (3,000 seeds); the typical
# mistakes are off by far more.
_reg(id="ch4.gpt_forward", function_name="gpt_forward", reference=reference_gpt_forward, draw_cases=_gpt_cases,
     mistakes=(
         Mistake(lambda *a: _gpt_variant(*a, positions=False),
                 "the position embeddings were not added: x = tok_emb[idx] + pos_emb[:T]"),
         Mistake(lambda *a: _gpt_variant(*a, final_norm=False),
                 "the final layer norm (lnf_w, lnf_b) before the output head is missing"),
     ), rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- the next-token loss

def reference_next_token_loss(logits, targets, ignore_index=-100):
    from ..model import next_token_loss

    return next_token_loss(logits, targets, ignore_index)


def _loss_args(gen, B, T, V, n_ignored=0, dtype=torch.float32, ignore_index=-100):
    logits = randn(gen, B, T, V, dtype=dtype, scale=2.0)
    targets = torch.randint(0, V, (B, T), generator=gen)
    if n_ignored:
        ignored = torch.randperm(B * T, generator=gen)[:n_ignored]
        targets.view(-1)[ignored] = ignore_index
        # Padding positions score token 0 low: a loss that counts them as token 0 (the usual
        # way of turning -100 into a valid index) moves the mean for sure, not by chance.
        logits.view(B * T, V)[ignored, 0] -= 10
    return (logits, targets, ignore_index)


def _loss_cases(gen, kind):
    if kind == "visible":
        return [Case(_loss_args(gen, 2, 4, 10), "logits (2, 4, 10), targets (2, 4)"),
                Case(_loss_args(gen, 2, 5, 7, n_ignored=3), "targets (2, 5) with three -100 (padding)")]
    return [Case(_loss_args(gen, 1, 6, 50, dtype=torch.float64), "float64 logits (1, 6, 50)"),
            Case(_loss_args(gen, 3, 4, 5, n_ignored=11), "all but one target are -100",
                 hint="positions whose target is ignore_index must be left out of the mean",
                 base="float64 logits (1, 6, 50)"),
            Case(_loss_args(gen, 2, 3, 6, n_ignored=2, ignore_index=-1), "ignore_index=-1"),
            Case(_loss_args(gen, 2, 4, 6, n_ignored=3)[:2], "ignore_index left at its default (-100)",
                 hint="the default of ignore_index must be -100, the value padding targets carry",
                 base="all but one target are -100")]


def _loss_shifted_again(logits, targets, ignore_index=-100):
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten(), ignore_index=ignore_index)


def _loss_vocab_mean(logits, targets, ignore_index=-100):
    return -torch.log_softmax(logits, dim=-1).mean()


def _loss_ignored_as_zero(logits, targets, ignore_index=-100):
    keep = targets != ignore_index
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return -(logp * keep).sum() / targets.numel()


def _loss_no_ignore(logits, targets, ignore_index=-100):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten().clamp(min=0))


_reg(id="ch4.next_token_loss", function_name="next_token_loss", reference=reference_next_token_loss,
     draw_cases=_loss_cases,
     mistakes=(
         Mistake(_loss_shifted_again, "target shifted twice: targets[:, t] is already the token after "
                 "inputs[:, t], so compare logits[:, t] with targets[:, t]"),
         Mistake(_loss_vocab_mean, "mean over the vocabulary instead of cross-entropy: take -log p of the "
                 "target token only (gather it), then average over the positions"),
         Mistake(_loss_ignored_as_zero, "ignore_index not handled: the ignored positions were counted "
                 "in the mean; average over the positions whose target is not ignore_index only"),
         Mistake(_loss_no_ignore, "ignore_index not handled: positions whose target is ignore_index must "
                 "be left out of the loss"),
     ), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- one AdamW step

def reference_adamw_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One step of ``torch.optim.AdamW`` from the given state: returns (param, m, v) after it.
    ``step`` counts steps from 1 (the first update has step = 1)."""
    p = param.clone().requires_grad_(True)
    opt = torch.optim.AdamW([p], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                            foreach=False, fused=False)
    p.grad = grad.clone()
    opt.state[p] = {"step": torch.tensor(float(step - 1)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    opt.step()
    state = opt.state[p]
    return p.detach(), state["exp_avg"], state["exp_avg_sq"]


def _adamw_variant(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, *, correct=True,
                   decoupled=True, decay=True, eps_inside=False):
    if decay and not decoupled:
        grad = grad + weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat, v_hat = (m / (1 - beta1 ** step), v / (1 - beta2 ** step)) if correct else (m, v)
    if decay and decoupled:
        param = param * (1 - lr * weight_decay)
    denominator = (v_hat + eps).sqrt() if eps_inside else v_hat.sqrt() + eps
    return param - lr * m_hat / denominator, m, v


def _adamw_args(gen, shape, step, dtype=torch.float32, fresh=False, lr=0.01, wd=0.1, grad_scale=0.1):
    p, g = randn(gen, *shape, dtype=dtype), randn(gen, *shape, dtype=dtype, scale=grad_scale)
    m = torch.zeros(shape, dtype=dtype) if fresh else randn(gen, *shape, dtype=dtype, scale=0.05)
    v = torch.zeros(shape, dtype=dtype) if fresh else _rand(gen, *shape, dtype=dtype) * 0.01
    return (p, g, m, v, step, lr, 0.9, 0.95, 1e-8, wd)


def _adamw_cases(gen, kind):
    if kind == "visible":
        # Gradients near 1e-5 make sqrt(v_hat) comparable to eps: where eps goes shows, on every draw.
        return [Case(_adamw_args(gen, (3, 4), 5), "a (3, 4) weight at step 5"),
                Case(_adamw_args(gen, (6,), 1, fresh=True), "the first step (m = v = 0)"),
                Case(_adamw_args(gen, (8,), 1, fresh=True, grad_scale=1e-5), "tiny gradients (about 1e-5), "
                     "first step: sqrt(v_hat) is near eps")]
    return [Case(_adamw_args(gen, (2, 3, 4), 12, lr=0.003, wd=0.0), "(2, 3, 4), step 12, no weight decay"),
            Case(_adamw_args(gen, (5, 2), 2, dtype=torch.float64, wd=0.5), "float64, step 2, weight_decay 0.5"),
            Case(_adamw_args(gen, (4,), 1000), "step 1000: the bias correction is almost 1")]


_reg(id="ch4.adamw_step", function_name="adamw_step", reference=reference_adamw_step, draw_cases=_adamw_cases,
     mistakes=(
         Mistake(lambda *a: _adamw_variant(*a, correct=False),
                 "no bias correction: divide m by (1 - beta1**step) and v by (1 - beta2**step)"),
         Mistake(lambda *a: _adamw_variant(*a, decoupled=False),
                 "weight decay added to the gradient (Adam with L2): AdamW decays the weight itself, "
                 "param * (1 - lr * weight_decay), outside m and v"),
         Mistake(lambda *a: _adamw_variant(*a, decay=False), "the weight decay was not applied"),
         Mistake(lambda *a: _adamw_variant(*a, eps_inside=True), "eps inside the square root: the update "
                 "divides by sqrt(v_hat) + eps"),
     ), rtol=1e-5, atol=1e-6, keeps_inputs=True)  # "without changing the input tensors"


# ---------------------------------------------------------------- greedy generation

def toy_model(idx, table_last, table_first):
    """The notebook's stand-in for a GPT: logits (B, T, V) for token ids idx (B, T).

    Position t scores the next token from token t and the first token of the window,
    so what the model is fed (its context window) matters, as for a real GPT."""
    return table_last[idx] + table_first[idx[:, :1]]


class _ToyGPT(torch.nn.Module):
    """``toy_model`` dressed as a ``llmcourse`` GPT, so that ``llmcourse.generate.generate`` runs it."""

    def __init__(self, table_last, table_first, context_length):
        super().__init__()
        self.table_last, self.table_first = table_last, table_first
        self.config = SimpleNamespace(context_length=context_length)
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.anchor.device

    def forward(self, idx, cache=None, padding_mask=None, last_only=False):
        logits = toy_model(idx, self.table_last, self.table_first)
        return logits[:, -1:] if last_only else logits


def reference_greedy_generate(idx, n, context_length, table_last, table_first):
    from ..generate import generate

    return generate(_ToyGPT(table_last, table_first, context_length), idx, n, use_cache=False)


def _gen_variant(idx, n, context_length, table_last, table_first, *, crop=True, prompt_only=False, position=-1):
    prompt = idx
    for _ in range(n):
        window = prompt if prompt_only else idx[:, -context_length:] if crop else idx
        next_id = toy_model(window, table_last, table_first)[:, position].argmax(dim=-1)
        idx = torch.cat([idx, next_id[:, None]], dim=1)
    return idx


def _gen_args(gen, B, T, n, C, V, first_weight=1.0):
    # Distinct tokens in each prompt, and (with first_weight > 1) a model led by the first
    # token of its window: then feeding the wrong window changes the output for sure,
    # instead of by chance, so a missing crop cannot pass a case on lucky inputs. The model
    # never repeats its last token, so feeding only the prompt (which repeats one token)
    # and feeding everything uncropped (which does not) never give the same output.
    idx = torch.stack([torch.randperm(V, generator=gen)[:T] for _ in range(B)])
    table_last = randn(gen, V, V) - 1000 * torch.eye(V)
    return (idx, n, C, table_last, first_weight * randn(gen, V, V))


def _gen_cases(gen, kind):
    # Each mistake fails at least one case for sure: a first-token-led model (weight 10)
    # exposes a wrong window, an even one (weight 1) a wrong position.
    if kind == "visible":
        return [Case(_gen_args(gen, 2, 3, 6, 4, 10), "prompt (2, 3), 6 new tokens, context 4"),
                Case(_gen_args(gen, 2, 3, 6, 4, 10, first_weight=10.0),
                     "prompt (2, 3), 6 new tokens, context 4, a model led by the window's first token")]
    return [Case(_gen_args(gen, 1, 5, 8, 3, 12, first_weight=10.0), "prompt (1, 5) longer than the context 3"),
            Case(_gen_args(gen, 2, 5, 8, 3, 12), "prompt (2, 5) longer than the context 3, another model"),
            Case(_gen_args(gen, 3, 2, 0, 4, 6), "n = 0: the prompt unchanged"),
            Case(_gen_args(gen, 2, 1, 7, 8, 9), "a context longer than the whole text")]


_reg(id="ch4.greedy_generate", function_name="greedy_generate", reference=reference_greedy_generate, draw_cases=_gen_cases,
     mistakes=(
         Mistake(lambda *a: _gen_variant(*a, crop=False),
                 "the input was not cropped to the last context_length tokens"),
         Mistake(lambda *a: _gen_variant(*a, prompt_only=True),
                 "only the prompt was fed at every step: feed the sequence so far, with the new tokens appended"),
         Mistake(lambda *a: _gen_variant(*a, position=0),
                 "the logits of the first position were used: the next token comes from the last position, [:, -1]"),
     ), rtol=0, atol=0)


# ---------------------------------------------------------------- concept questions

register_quiz("ch4.q1", "ch4.q2", "ch4.q3")
