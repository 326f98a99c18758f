"""Graded exercises: declarative checks, instant feedback in a notebook, trusted class grading.

* ``check(check_id, fn)``: what a notebook's test cells call. It compares ``fn`` with
  ``llmcourse`` on fresh random inputs in the student's own kernel and prints a report.
  This is feedback only: a student's kernel cannot be trusted, so no score comes from it.
* ``grade.grade_assignment`` / ``grade.check_notebook``: the trusted pipeline (see
  ``README.md``), behind ``llmcourse grade`` and ``llmcourse check``.
"""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .checks import CheckResult

__all__ = ["check", "run_check"]

HIDDEN_NOTE = ("  (these were the visible cases; grading also runs hidden ones: other shapes, dtypes and edge "
               "cases, so make the function general, not just right on these inputs)")


def run_check(check_id: str, fn: Callable, kind: str = "visible", seed: int | None = None,
              answer: str | None = None, follow_calls: bool = True) -> CheckResult:
    """Call ``fn`` on the cases of ``check_id`` and judge every output (no printing, no raising).
    ``answer``: a concept question's key, given only by its hidden test cell. When it fails
    and ``fn`` calls another graded function of the notebook (``follow_calls``), that one is
    checked too, and a failure there is named as the likely cause."""
    from .checks import CheckResult, Raised, changed_inputs, clone_args, judge_cases, make_cases  # torch: on first use
    from .registry import get_check

    check = get_check(check_id)
    seed = secrets.randbits(63) if seed is None else seed
    result = CheckResult(check_id, kind, passed=True)
    if not callable(fn):
        result.passed, result.reason = False, f"expected a function, got {type(fn).__name__}"
        return result
    cases, outputs, changed = make_cases(check, kind, seed), [], []
    for case in cases:
        args = clone_args(case.args)
        try:
            outputs.append(fn(*args))
        except NotImplementedError:
            result.passed, result.reason = False, f"{check.function_name} is not written yet (NotImplementedError)"
            return result
        except Exception as e:  # the student's error, reported as such, with the student's line
            outputs.append(Raised(_describe_raised(e)))
        if check.keeps_inputs:  # the task says the inputs stay as they were
            changed.append(changed_inputs(case.args, args))
    result.cases = judge_cases(check, cases, outputs, kind, answer, changed)
    result.passed = all(case.passed for case in result.cases)
    if not result.passed and follow_calls:
        result.notes += _failing_helpers(check_id, fn)
    return result


def _describe_raised(error: BaseException) -> str:
    """``IndexError: ... (in f, line 4: `...`)``: the error and the innermost line of the
    notebook's code it came through (not torch's, Python's or this package's)."""
    import os
    import traceback

    library = (os.path.dirname(os.path.dirname(__file__)), os.path.dirname(os.__file__))
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(library) and "site-packages" not in f.filename]
    where = ""
    if frames:
        line = (frames[-1].line or "").strip()[:120]
        where = f" (in {frames[-1].name}, line {frames[-1].lineno}" + (f": `{line}`)" if line else ")")
    return f"{type(error).__name__}: {error}"[:500] + where


def _failing_helpers(check_id: str, fn: Callable) -> list[str]:
    """Notes for the notebook's other graded functions ``fn`` calls that fail their own
    visible check (found by the names its code reads, in the notebook's globals)."""
    from .checks import depends_note
    from .registry import checks_of_chapter

    code, namespace = getattr(fn, "__code__", None), getattr(fn, "__globals__", {})
    if code is None:
        return []
    notes = []
    for other in checks_of_chapter(check_id.split(".")[0]):
        helper = namespace.get(other.function_name)
        if (other.id != check_id and not other.choices and other.function_name in code.co_names
                and callable(helper) and helper is not fn
                and not run_check(other.id, helper, follow_calls=False).passed):
            notes.append(depends_note(getattr(fn, "__name__", "function"), other.function_name))
    return notes


def check(check_id: str, fn: Callable, kind: str = "visible", answer: str | None = None) -> None:
    """Test cell helper: check ``fn`` against the reference, print the report, raise if wrong.

    >>> check("ch3.causal_mask", causal_mask)   # doctest: +SKIP
    >>> check("ch3.q1", q1, kind="hidden", answer="c")   # a concept question's hidden test  # doctest: +SKIP
    """
    result = run_check(check_id, fn, kind, answer=answer)
    print(result.message)
    if not result.passed:  # the report is printed above, once; the error only marks the cell failed
        raise AssertionError(f"{check_id}: the check failed (the report above says where)")
    if kind == "visible":
        print(HIDDEN_NOTE)
