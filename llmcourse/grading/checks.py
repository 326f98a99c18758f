"""Declarative checks: what each graded exercise is compared against, and how.

A ``Check`` names one exercise (``"ch3.causal_mask"``): the function name a notebook
defines, the reference from ``llmcourse``, a generator of fresh random inputs
(``visible`` cases a student can run, ``hidden`` ones with other shapes, dtypes and
edge cases), the tolerance, and **typical mistakes**: wrong variants of the reference,
computed on the same inputs, so that a wrong answer that matches one gets a hint
naming the likely cause.

The same ``Check`` serves two places:

* ``check(...)`` in a student's kernel (instant feedback, never trusted), and
* the trusted grader (``grade.py``), which generates the inputs itself, lets the
  answer runner call the student's function in another process, and compares the
  outputs here, in a process the student's code never ran in.

Adding an exercise: write the reference (or reuse ``llmcourse``'s), a ``cases``
function and the mistakes, and ``register(Check(...))``. See ``README.md``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .. import attention as ref
from .policy import ATTENTION, Concept

Output = Any  # a tensor, a tuple of tensors, or a plain value (str, int, float)


@dataclass(frozen=True)
class Case:
    """One call of the student's function: its arguments and how a report describes them."""

    args: tuple
    label: str
    hint: str | None = None  # said when this case fails although the plain ones pass


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer: ``fn`` takes the same arguments as the reference."""

    fn: Callable[..., Output]
    hint: str


@dataclass(frozen=True)
class Check:
    """Everything needed to grade one exercise.

    ``cases(gen, kind)`` returns the calls for ``kind`` "visible" or "hidden", drawing
    every random number from ``gen``. ``concepts`` are what the exercise asks to write by
    hand (``policy.Concept``): the answer runner refuses the torch kernels that compute
    them while the function runs, and the static scan names their built-ins (``scan.py``).
    ``choices`` make a concept question: visible cases only check that
    the answer is one of the choices; the hidden check compares it with the key, which
    the trusted hidden test cell passes (``check(..., cases="hidden", answer="c")``): the
    key is in no file a student has, not even this package.
    """

    id: str
    function: str
    reference: Callable[..., Output]
    cases: Callable[[torch.Generator, str], list[Case]]
    mistakes: tuple[Mistake, ...] = ()
    rtol: float = 1e-5
    atol: float = 1e-6
    concepts: tuple[Concept, ...] = ()
    choices: tuple[str, ...] = ()


@dataclass
class CaseResult:
    label: str
    passed: bool
    message: str = ""


@dataclass
class CheckResult:
    """The outcome of one check on all its cases; ``message`` is what feedback shows."""

    check_id: str
    kind: str
    passed: bool
    cases: list[CaseResult] = field(default_factory=list)
    reason: str = ""  # set when the check could not run at all (missing function, cheat)

    @property
    def message(self) -> str:
        if self.reason:
            return f"{self.check_id} ({self.kind}): FAILED: {self.reason}"
        lines = [f"{self.check_id} ({self.kind}): {'passed' if self.passed else 'FAILED'}"]
        for case in self.cases:
            mark = "ok  " if case.passed else "FAIL"
            lines.append(f"  {mark} {case.label}" + (f"\n       {case.message}" if case.message else ""))
        return "\n".join(lines)


REGISTRY: dict[str, Check] = {}


def register(check: Check) -> Check:
    if check.id in REGISTRY:
        raise ValueError(f"check {check.id!r} is registered twice")
    REGISTRY[check.id] = check
    return check


def get_check(check_id: str) -> Check:
    try:
        return REGISTRY[check_id]
    except KeyError:
        raise KeyError(f"unknown check {check_id!r}; known: {', '.join(sorted(REGISTRY))}") from None


# ---------------------------------------------------------------- comparison

def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {value!r}"[:200]


def _max_error(expected: torch.Tensor, got: torch.Tensor) -> tuple[float, tuple[int, ...]]:
    """The largest absolute difference and its index (NaN or inf where there should be none counts as inf)."""
    diff = (got.double() - expected.double()).abs()
    diff = torch.where(torch.isnan(diff) | torch.isinf(diff), torch.full_like(diff, math.inf), diff)
    if torch.isnan(expected.double()).any():  # NaN in the reference: equal NaNs are no error
        both_nan = torch.isnan(expected.double()) & torch.isnan(got.double())
        diff = torch.where(both_nan, torch.zeros_like(diff), diff)
    if diff.numel() == 0:
        return 0.0, ()
    flat = int(torch.argmax(diff))
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    return float(diff.reshape(-1)[flat]), index


def compare(expected: Output, got: Output, rtol: float, atol: float, what: str = "output") -> str | None:
    """None when ``got`` matches ``expected``; otherwise one line saying what differs.

    Tensors must match in shape and dtype, and in value within ``atol + rtol * |expected|``
    (bool and integer tensors exactly); a Python float within the same tolerance (an int
    is accepted for it). Tuples are compared element by element.
    """
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{what}: expected a {_describe(expected)}, got {_describe(got)}"
        if got.shape != expected.shape:
            return f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        values_match = _values_close(expected, got, rtol, atol)
        if got.dtype != expected.dtype:
            same = " (the values are right)" if values_match else ""
            return f"{what}: expected dtype {expected.dtype}, got {got.dtype}{same}"
        if not values_match:
            err, index = _max_error(expected, got)
            return (f"{what}: values differ; largest error {err:.3g} at index {list(index)} "
                    f"(expected {expected[index].item():.6g}, got {got[index].item():.6g}; "
                    f"tolerance atol={atol:g}, rtol={rtol:g})")
        return None
    if isinstance(expected, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"{what}: expected a tuple of {len(expected)}, got {_describe(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            problem = compare(e, g, rtol, atol, f"{what}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(expected, float) and isinstance(got, (float, int)) and not isinstance(got, bool):
        if math.isclose(got, expected, rel_tol=rtol, abs_tol=atol) or (math.isnan(got) and math.isnan(expected)):
            return None
        return f"{what}: expected {expected!r}, got {got!r} (tolerance atol={atol:g}, rtol={rtol:g})"
    if type(got) is not type(expected) or got != expected:
        return f"{what}: expected {_describe(expected)}, got {_describe(got)}"
    return None


def _values_close(expected: torch.Tensor, got: torch.Tensor, rtol: float, atol: float) -> bool:
    if got.shape != expected.shape or got.dtype.is_complex or expected.dtype.is_complex:
        return False
    if expected.dtype == torch.bool or not expected.dtype.is_floating_point:
        return bool(torch.equal(got.to(torch.int64), expected.to(torch.int64)))
    e, g = expected.double(), got.double()
    return bool(torch.allclose(g, e, rtol=rtol, atol=atol, equal_nan=True))


def matches(expected: Output, got: Output, rtol: float, atol: float) -> bool:
    """Whether ``got`` has ``expected``'s values (dtype aside): used to recognise mistakes."""
    if isinstance(expected, torch.Tensor):
        return isinstance(got, torch.Tensor) and _values_close(expected, got, rtol, atol)
    if isinstance(expected, tuple):
        return (isinstance(got, (tuple, list)) and len(got) == len(expected)
                and all(matches(e, g, rtol, atol) for e, g in zip(expected, got)))
    return expected == got


def diagnose(check: Check, case: Case, got: Output) -> str | None:
    """The hint of the typical mistake whose output ``got`` matches, if any.

    A mistake only counts when it differs from the reference on this case, so a hint
    is never given for a case that cannot tell them apart. Where several mistakes give
    this very output, the case cannot tell which one was made: all their hints are
    listed, so the student's own mistake is never replaced by another's.
    """
    expected = check.reference(*clone_args(case.args))
    hints = []
    for mistake in check.mistakes:
        try:
            wrong = mistake.fn(*clone_args(case.args))
        except Exception:
            continue
        if (not matches(expected, wrong, check.rtol, check.atol) and matches(wrong, got, check.rtol, check.atol)
                and mistake.hint not in hints):
            hints.append(mistake.hint)
    if len(hints) <= 1:
        return hints[0] if hints else None
    return "one of these (this case cannot tell them apart):" + "".join(
        f"\n         - {hint}" for hint in hints)


def draw_showing_mistakes(draw, reference, mistakes, rtol: float = 0, atol: float = 0, tries: int = 100) -> tuple:
    """Arguments from ``draw()``, drawn again (up to ``tries`` times) until every mistake's
    output differs from the reference's: for a visible case that must show each mistake."""
    for _ in range(tries):
        args = draw()
        expected = reference(*clone_args(args))
        if all(not matches(expected, m.fn(*clone_args(args)), rtol, atol) for m in mistakes):
            break
    return args


def clone_args(args: tuple) -> tuple:
    """Fresh copies (tensors, lists, dicts, modules alike), so a function that writes into
    its inputs cannot change what the next call, the reference's included, receives."""
    return copy.deepcopy(args)


def judge(check: Check, case: Case, got: Output, kind: str, answer: str | None = None) -> CaseResult:
    """Compare one output of the student's function with the reference on ``case``
    (for a concept question's hidden check: with ``answer``, the key)."""
    if check.choices:
        if kind == "visible":
            ok = isinstance(got, str) and got in check.choices
            return CaseResult(case.label, ok, "" if ok else
                              f"expected one of {', '.join(map(repr, check.choices))}, got {_describe(got)}")
        if answer not in check.choices:
            raise ValueError(f"the hidden check of {check.id} needs answer= one of {check.choices}, got {answer!r}")
        ok = isinstance(got, str) and got == answer
        return CaseResult(case.label, ok, "" if ok else "not the right choice")
    expected = check.reference(*clone_args(case.args))
    problem = compare(expected, got, check.rtol, check.atol)
    if problem is None:
        return CaseResult(case.label, True)
    hint = diagnose(check, case, got)
    if hint is None and case.hint:
        hint = case.hint
    return CaseResult(case.label, False, problem + (f"\n       likely cause: {hint}" if hint else ""))


def make_cases(check: Check, kind: str, seed: int) -> list[Case]:
    """The cases of ``kind`` for ``check``, drawn from a generator seeded with ``seed``."""
    if kind not in ("visible", "hidden"):
        raise ValueError(f"cases must be 'visible' or 'hidden', got {kind!r}")
    return check.cases(torch.Generator().manual_seed(seed), kind)


# ---------------------------------------------------------------- chapter 3

CH3_CONCEPTS = (ATTENTION,)  # softmax is not the exercise here: torch.softmax is fine


def _randn(gen: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


def _simplified_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        return [Case((_randn(gen, 6, 4),), "x of shape (6, 4)")]
    return [Case((_randn(gen, 2, 5, 3),), "a batch, x of shape (2, 5, 3)"),
            Case((_randn(gen, 1, 7),), "one token, x of shape (1, 7)"),
            Case((_randn(gen, 4, 8, dtype=torch.float64),), "float64 x of shape (4, 8)")]


def _simplified_softmax_dim0(x):
    scores = x @ x.transpose(-2, -1)
    weights = torch.softmax(scores, dim=-2)
    return weights @ x, weights


def _simplified_no_softmax(x):
    scores = x @ x.transpose(-2, -1)
    return scores @ x, scores


register(Check(
    id="ch3.simplified_attention", function="simplified_attention",
    reference=ref.simplified_self_attention, cases=_simplified_cases,
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


def _sdpa_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        q, k, v = _randn(gen, 5, 8), _randn(gen, 5, 8), _randn(gen, 5, 8)
        return [Case((q, k, v), "q, k, v of shape (5, 8), no mask"),
                Case((q, k, v, ref.causal_mask(5)), "q, k, v of shape (5, 8) with a causal mask")]
    B, H, T, d = 2, 3, 6, 16
    q, k, v = _randn(gen, B, H, T, d), _randn(gen, B, H, T, d), _randn(gen, B, H, T, 4)
    q4, k7 = _randn(gen, 4, 16), _randn(gen, 7, 16)
    v7 = _randn(gen, 7, 5)
    pad = torch.rand(7, generator=gen) > 0.3
    pad[0] = True
    return [
        Case((q, k, v, ref.causal_mask(T)), "4-d q, k (2, 3, 6, 16) and v (2, 3, 6, 4), causal mask"),
        Case((q4, k7, v7, pad.expand(4, 7)), "4 queries, 7 keys, a padding mask"),
        Case((q.double(), k.double(), v.double()), "float64 inputs: the output keeps the dtype"),
        Case((q, k, v, ref.causal_mask(T), 0.5, False), "dropout=0.5 with training=False",
             hint="dropout active in eval(): with training=False the weights must not be dropped"),
    ]


register(Check(
    id="ch3.scaled_dot_product_attention", function="scaled_dot_product_attention",
    reference=ref.scaled_dot_product_attention, cases=_sdpa_cases,
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
    id="ch3.causal_mask", function="causal_mask",
    reference=lambda T: ref.causal_mask(T), cases=_mask_cases,
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
        return [Case((_randn(gen, 2, 3, 8), 2), "x (2, 3, 8), 2 heads")]
    return [Case((_randn(gen, 1, 5, 12), 3), "x (1, 5, 12), 3 heads"),
            Case((_randn(gen, 2, 4, 6), 1), "one head"),
            Case((_randn(gen, 3, 2, 8, dtype=torch.float64), 4), "float64 x (3, 2, 8), 4 heads")]


def _merge_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        return [Case((_randn(gen, 2, 2, 3, 4),), "x (2, 2, 3, 4): 2 heads of 4 channels")]
    return [Case((_randn(gen, 1, 3, 5, 4),), "x (1, 3, 5, 4)"),
            Case((_randn(gen, 2, 4, 3, 2, dtype=torch.float64),), "float64 x (2, 4, 3, 2)")]


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
    id="ch3.split_heads", function="split_heads", reference=ref.split_heads, cases=_split_cases,
    mistakes=(Mistake(_split_no_transpose, _HEADS_HINT),
              Mistake(_split_interleaved, "head h must get the contiguous channels h*head_dim .. "
                      "(h+1)*head_dim - 1, not every n_heads-th channel")),
    concepts=CH3_CONCEPTS, rtol=0, atol=0,
))
register(Check(
    id="ch3.merge_heads", function="merge_heads", reference=ref.merge_heads, cases=_merge_cases,
    mistakes=(Mistake(_merge_no_transpose, _HEADS_HINT),
              Mistake(_merge_interleaved, "the head channels were interleaved: head 0's channels come first, "
                      "then head 1's, ...")),
    concepts=CH3_CONCEPTS, rtol=0, atol=0,
))


def reference_multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads):
    """Causal multi-head attention with the given (d, d) weights (``y = x @ W``), through
    ``llmcourse.attention.MultiHeadAttention`` (the lesson path)."""
    from ..model import GPTConfig

    config = GPTConfig(emb_dim=x.size(-1), n_heads=n_heads, drop_rate=0.0, qkv_bias=False)
    layer = ref.MultiHeadAttention(config, fast=False).to(x.dtype).eval()
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
        weights = tuple(_randn(gen, d, d, dtype=dtype) / math.sqrt(d) for _ in range(4))
        return (_randn(gen, B, T, d, dtype=dtype),) + weights + (H,)

    if kind == "visible":
        return [Case(case(2, 5, 8, 2), "x (2, 5, 8), 2 heads")]
    return [Case(case(1, 7, 12, 3), "x (1, 7, 12), 3 heads"),
            Case(case(2, 4, 6, 1), "one head"),
            Case(case(2, 3, 16, 4, torch.float64), "float64, 4 heads")]


register(Check(
    id="ch3.multi_head_attention", function="multi_head_attention",
    reference=reference_multi_head_attention, cases=_mha_cases,
    mistakes=(
        Mistake(lambda *a: _mha_variant(*a, causal=False), "no causal mask: a token sees the future"),
        Mistake(lambda *a: _mha_variant(*a, scale=False), "missing 1/sqrt(d_k), with d_k the head dimension"),
        Mistake(lambda *a: _mha_variant(*a, merge=_merge_no_transpose), _HEADS_HINT),
        Mistake(lambda *a: _mha_variant(*a, split=_split_no_transpose), _HEADS_HINT),
        Mistake(lambda *a: _mha_variant(*a, project=False), "the output projection W_o was not applied"),
    ),
    concepts=CH3_CONCEPTS, rtol=1e-4, atol=1e-5,
))


def _quiz_cases(gen: torch.Generator, kind: str) -> list[Case]:
    return [Case((), "your answer")]


def register_quiz(*check_ids: str, choices: tuple[str, ...] = ("a", "b", "c", "d")) -> None:
    """Concept questions: ``def q1(): return "c"`` in the notebook. Their keys are not here
    but in the hidden test cells of ``solutions/`` (see ``Check``)."""
    for check_id in check_ids:
        register(Check(id=check_id, function=check_id.split(".")[1], reference=lambda: None,
                       cases=_quiz_cases, choices=choices))


register_quiz("ch3.q1", "ch3.q2")
from . import checks_ch4  # noqa: E402,F401  (registers the ch4 checks)
from . import checks_ch1  # noqa: E402,F401  (registers the ch1 checks)
from . import checks_ch2  # noqa: E402,F401  (registers the ch2 checks)
from . import checks_ch5  # noqa: E402,F401  (registers the ch5 checks)
