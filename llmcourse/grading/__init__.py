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
              answer: str | None = None) -> CheckResult:
    """Call ``fn`` on the cases of ``check_id`` and judge every output (no printing, no raising).
    ``answer``: a concept question's key, given only by its hidden test cell."""
    from .checks import CheckResult, clone_args, judge, make_cases  # torch: imported on first use
    from .registry import get_check

    check = get_check(check_id)
    seed = secrets.randbits(63) if seed is None else seed
    result = CheckResult(check_id, kind, passed=True)
    if not callable(fn):
        result.passed, result.reason = False, f"expected a function, got {type(fn).__name__}"
        return result
    for case in make_cases(check, kind, seed):
        try:
            got = fn(*clone_args(case.args))
        except NotImplementedError:
            result.passed, result.reason = False, f"{check.function_name} is not written yet (NotImplementedError)"
            return result
        except Exception as e:  # the student's error, reported as such
            result.cases.append(_error_case(case.label, e))
            result.passed = False
            continue
        outcome = judge(check, case, got, kind, answer)
        result.cases.append(outcome)
        result.passed &= outcome.passed
    return result


def _error_case(label: str, error: BaseException):
    from .checks import CaseResult

    return CaseResult(label, False, f"raised {type(error).__name__}: {error}")


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
