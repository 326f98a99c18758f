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

Adding an exercise: write the reference (or reuse ``llmcourse``'s), a
``draw_cases`` function and the mistakes, and ``register(Check(...))`` in the chapter's module
(``checks_ch1.py`` ... ``checks_ch5.py``); ``registry.py`` imports every chapter and
looks checks up. See ``README.md``.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .policy import Concept

Output = Any  # a tensor, a tuple of tensors, or a plain value (str, int, float)


@dataclass(frozen=True)
class Case:
    """One call of the student's function: its arguments and how a report describes them."""

    args: tuple
    label: str
    # ``hint`` is said when this case fails while the case labelled ``base`` (in the same
    # list) passes: ``base`` differs from this one only in what the hint is about (the same
    # inputs with training=False, the logits less 1000), so that difference is the cause.
    # When both fail, the plain evidence is all the student gets.
    hint: str | None = None
    base: str | None = None
    # The output's floating dtype must be the reference's (a case whose label says so, as
    # "the output keeps the dtype"); elsewhere any floating dtype with the right values passes.
    exact_dtype: bool = False
    # For an output that is random by design (dropout in training): a function of the
    # arguments and the output returning what is wrong (None when right), used instead of
    # comparing with the reference's output.
    judge: Callable[[tuple, Output], str | None] | None = None


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer: ``fn`` takes the same arguments as the reference."""

    fn: Callable[..., Output]
    hint: str


@dataclass(frozen=True)
class Check:
    """Everything needed to grade one exercise.

    ``draw_cases(gen, kind)`` returns the calls for ``kind`` "visible" or "hidden", drawing
    every random number from ``gen``. ``concepts`` are what the exercise asks to write by
    hand (``policy.Concept``): the answer runner refuses the torch kernels that compute
    them while the function runs, and the static scan names their built-ins (``scan.py``).
    ``choices`` make a concept question: visible cases only check that
    the answer is one of the choices; the hidden check compares it with the key, which
    the trusted hidden test cell passes (``check(..., kind="hidden", answer="c")``): the
    key is in no file a student has, not even this package.
    """

    id: str
    function_name: str
    reference: Callable[..., Output]
    draw_cases: Callable[[torch.Generator, str], list[Case]]
    mistakes: tuple[Mistake, ...] = ()
    rtol: float = 1e-5
    atol: float = 1e-6
    concepts: tuple[Concept, ...] = ()
    choices: tuple[str, ...] = ()
    keeps_inputs: bool = False  # the task says the inputs are left as they were: changing one fails


@dataclass(frozen=True)
class Raised:
    """A call of the student's function that raised instead of returning: the error, and
    the line of the student's code it came from when known."""

    message: str


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
    notes: list[str] = field(default_factory=list)  # e.g. that a function it calls fails its own check

    @property
    def message(self) -> str:
        if self.reason:
            lines = [f"{self.check_id} ({self.kind}): FAILED: {self.reason}"]
        else:
            lines = [f"{self.check_id} ({self.kind}): {'passed' if self.passed else 'FAILED'}"]
        for case in [] if self.reason else self.cases:
            mark = "ok  " if case.passed else "FAIL"
            lines.append(f"  {mark} {case.label}" + (f"\n       {case.message}" if case.message else ""))
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


REGISTRY: dict[str, Check] = {}


def register(check: Check) -> Check:
    if check.id in REGISTRY:
        raise ValueError(f"check {check.id!r} is registered twice")
    REGISTRY[check.id] = check
    return check


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
    diff = torch.where(got.double() == expected.double(), torch.zeros_like(diff), diff)  # equal infinities
    if torch.isnan(expected.double()).any():  # NaN in the reference: equal NaNs are no error
        both_nan = torch.isnan(expected.double()) & torch.isnan(got.double())
        diff = torch.where(both_nan, torch.zeros_like(diff), diff)
    if diff.numel() == 0:
        return 0.0, ()
    flat = int(torch.argmax(diff))
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    return float(diff.reshape(-1)[flat]), index


def compare(expected: Output, got: Output, rtol: float, atol: float, what: str = "output",
            exact_dtype: bool = False) -> str | None:
    """None when ``got`` matches ``expected``; otherwise one line saying what differs.

    Tensors must match in shape and in value within ``atol + rtol * |expected|`` (bool and
    integer tensors exactly, and in dtype); a floating result may have another floating
    dtype than the reference unless ``exact_dtype`` (a task that never names the dtype
    must not cost points for it). A Python float within the same tolerance (an int is
    accepted for it). Tuples are compared element by element.
    """
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{what}: expected a {_describe(expected)}, got {_describe(got)}"
        if got.shape != expected.shape:
            return f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        values_match = _values_close(expected, got, rtol, atol)
        both_float = expected.dtype.is_floating_point and got.dtype.is_floating_point
        if got.dtype != expected.dtype and (exact_dtype or not both_float):
            same = " (the values are right)" if values_match else ""
            return f"{what}: expected dtype {expected.dtype}, got {got.dtype}{same}"
        if not values_match:
            err, index = _max_error(expected, got)
            other = f"; your output is {got.dtype}, the reference {expected.dtype}" if got.dtype != expected.dtype else ""
            return (f"{what}: values differ; largest error {err:.3g} at index {list(index)} "
                    f"(expected {expected[index].item():.6g}, got {got[index].item():.6g}; "
                    f"tolerance atol={atol:g}, rtol={rtol:g}{other})")
        return None
    if isinstance(expected, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"{what}: expected a tuple of {len(expected)}, got {_describe(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            problem = compare(e, g, rtol, atol, f"{what}[{i}]", exact_dtype)
            if problem:
                explain = "  (output[i]: the i-th value your function returns, counting from 0)"
                return problem + explain if what == "output" else problem
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
        if kind == "visible":  # the key is in no file a student has: only the form can be checked here
            ok = isinstance(got, str) and got in check.choices
            return CaseResult(case.label, ok, f"answer {got!r} recorded; whether it is right is graded by the "
                              f"hidden test, not here" if ok else
                              f"expected one of {', '.join(map(repr, check.choices))}, got {_describe(got)}")
        if answer not in check.choices:
            raise ValueError(f"the hidden check of {check.id} needs answer= one of {check.choices}, got {answer!r}")
        ok = isinstance(got, str) and got == answer
        return CaseResult(case.label, ok, "" if ok else "not the right choice")
    if case.judge is not None:
        problem = case.judge(clone_args(case.args), got)
        return CaseResult(case.label, problem is None, problem or "")
    expected = check.reference(*clone_args(case.args))
    problem = compare(expected, got, check.rtol, check.atol, exact_dtype=case.exact_dtype)
    if problem is None:
        return CaseResult(case.label, True)
    hint = diagnose(check, case, got)
    return CaseResult(case.label, False, problem + (f"{LIKELY}{hint}" if hint else ""))


LIKELY = "\n       likely cause: "


def judge_cases(check: Check, cases: list[Case], outputs: list, kind: str, answer: str | None = None,
                changed: list[list[int]] | None = None) -> list[CaseResult]:
    """Judge each case's output (a ``Raised`` where the call raised), then add a failed
    case's own hint where no typical mistake was recognised and its ``base`` case passed:
    the one thing between the two is then what is wrong (also when this one raised). What a
    call raised is kept on one line: the feedback quotes that line as the submission's.
    ``changed``: for each call, the positions of the arguments it changed in place, which
    fails the case when the check ``keeps_inputs``."""
    results = [CaseResult(case.label, False, "raised " + " ".join(out.message.splitlines())) if isinstance(out, Raised)
               else judge(check, case, out, kind, answer) for case, out in zip(cases, outputs)]
    for result, positions in zip(results, changed or []) if check.keeps_inputs else ():
        if positions:
            names = _argument_names(check)
            said = ", ".join(names[i] if i < len(names) else f"argument {i + 1}" for i in positions)
            result.passed = False
            result.message = (f"your function changed its input {said} in place: the task asks to leave the "
                              f"inputs as they were (work on a copy, or build new values)"
                              + (f"\n       {result.message}" if result.message else ""))
    passed = {case.label for case, result in zip(cases, results) if result.passed}
    for case, result in zip(cases, results):
        if case.hint and not result.passed and case.base in passed and LIKELY not in result.message:
            result.message += LIKELY + case.hint
    return results


def _argument_names(check: Check) -> list[str]:
    """The reference's parameter names: what the task calls the arguments."""
    return list(inspect.signature(check.reference).parameters)


def changed_inputs(before: tuple, after: tuple) -> list[int]:
    """The positions of the arguments a call changed in place: ``after`` are the objects it
    was given, ``before`` untouched copies of them."""
    return [i for i, (b, a) in enumerate(zip(before, after)) if not _same_value(b, a)]


def _same_value(before: Any, after: Any) -> bool:
    if isinstance(before, torch.Tensor):
        return (isinstance(after, torch.Tensor) and after.shape == before.shape and after.dtype == before.dtype
                and bool(((after == before) | (after.isnan() & before.isnan())).all()))
    if isinstance(before, (list, tuple)):  # a list comes back from the answer runner as a tuple
        return (isinstance(after, (list, tuple)) and len(after) == len(before)
                and all(_same_value(b, a) for b, a in zip(before, after)))
    if isinstance(before, dict):
        return (isinstance(after, dict) and before.keys() == after.keys()
                and all(_same_value(before[k], after[k]) for k in before))
    return type(after) is type(before) and after == before


def depends_note(function_name: str, helper: str) -> str:
    """What a failed check says when the student's function calls another of the student's
    functions that fails its own check: the likely cause, to be fixed first."""
    return (f"your {function_name} calls your {helper}, which fails its own check: fix {helper} first "
            f"(its report says how), then check {function_name} again")


def dropout_problem(clean: torch.Tensor, got: torch.Tensor, p: float, what: str, where: str) -> str | None:
    """What is wrong with ``got`` as dropout with probability ``p`` applied to ``clean`` (the
    output without dropout), or None: each value is either zeroed or ``clean / (1 - p)``,
    about a share ``p`` of them zeroed (judged on thousands of values: within 5 points is
    more than 6 standard deviations). ``what`` the values are ("attention weights"),
    ``where`` dropout belongs ("to the weights, after the softmax")."""
    clean, got = clean.double(), got.double()
    if got.shape != clean.shape:
        return f"{what}: expected shape {tuple(clean.shape)}, got {tuple(got.shape)}"
    kept, alive = got != 0, clean.abs() > 1e-12
    zeroed = 1 - (kept & alive).sum().item() / max(alive.sum().item(), 1)
    if zeroed < p - 0.05:
        return (f"with training=True and dropout={p}, {zeroed:.1%} of the {what} are zero, expected about {p:.0%}: "
                f"apply dropout {where}, in training")
    if zeroed > p + 0.05:
        return f"{zeroed:.1%} of the {what} are zero with dropout={p}: expected about {p:.0%}"
    scaled = clean / (1 - p)
    if not torch.allclose(got[kept], scaled[kept], rtol=1e-4, atol=1e-6):
        unscaled = torch.allclose(got[kept], clean[kept], rtol=1e-4, atol=1e-6)
        return (f"the kept {what} are not the values without dropout times 1/(1-p)"
                + ("; they are unscaled: dropout must rescale what it keeps" if unscaled else
                   f" (dropout belongs {where})"))
    return None


def make_cases(check: Check, kind: str, seed: int) -> list[Case]:
    """The cases of ``kind`` for ``check``, drawn from a generator seeded with ``seed``."""
    if kind not in ("visible", "hidden"):
        raise ValueError(f"kind must be 'visible' or 'hidden', got {kind!r}")
    cases = check.draw_cases(torch.Generator().manual_seed(seed), kind)
    labels = [case.label for case in cases]
    for case in cases:
        if case.hint and case.base not in labels:
            raise ValueError(f"{check.id}: the case {case.label!r} has a hint but its base {case.base!r} is not "
                             f"one of its cases {labels}")
    return cases


# ---------------------------------------------------------------- random inputs

def randn(gen: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    """Standard normal values (times ``scale``), drawn in float64 and cast, so that a case
    has the same numbers whatever its dtype."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def randint(gen: torch.Generator, low: int, high: int) -> int:
    """One int from [low, high)."""
    return int(torch.randint(low, high, (1,), generator=gen))


# ---------------------------------------------------------------- concept questions

def _quiz_cases(gen: torch.Generator, kind: str) -> list[Case]:
    return [Case((), "your answer")]


def register_quiz(*check_ids: str, choices: tuple[str, ...] = ("a", "b", "c", "d")) -> None:
    """Concept questions: ``def q1(): return "c"`` in the notebook. Their keys are not here
    but in the hidden test cells of ``solutions/`` (see ``Check``)."""
    for check_id in check_ids:
        register(Check(id=check_id, function_name=check_id.split(".")[1], reference=lambda: None,
                       draw_cases=_quiz_cases, choices=choices))
