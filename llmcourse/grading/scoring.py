"""Scoring one submission: run its answers in the answer runner, judge them here, score the cells.

The runner is started first (``AnswerRunner``), before anything is known of the submission,
so that its sandbox and its torch import overlap the grader's own reading of the notebook;
its cells follow when the notebook is restored. The inputs are drawn here with a fresh seed
and sent to the runner only after the student code ran; the outputs come back through
``wire.read_outputs`` and are compared with ``llmcourse`` in this process, which no student
code ever ran in. A runner's outputs count only when it exited cleanly.
"""
from __future__ import annotations

import contextlib
import secrets
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .records import Assignment, CellReport, CheckCall, Report
from .sandbox import Limits, Stdin, run_isolated, scratch_folder
from .wire import WireError, decode_output, encode_inputs, encode_spec, read_outputs, text

HERE = Path(__file__).resolve().parent


def note_sandbox(report: Report, result) -> None:
    """A report is sandboxed only if every run of its code was."""
    first = not report.sandbox_note
    report.sandboxed = result.sandboxed if first else report.sandboxed and result.sandboxed
    if first or not result.sandboxed:
        report.sandbox_note = result.note


def _did_not_finish(result, why: str) -> str:
    why = result.reason or why
    tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
    return f"the answer code did not finish: {why}" + (f" ({text(tail[0])[:200]})" if tail[0] else "")


def without_unrunnable_added_cells(cells: list[dict], policy: dict, report: Report) -> list[dict]:
    """The runner's cells less those the student added that graded code could not run (a
    plot: matplotlib is the feedback run's, not the grader's). Skipped, not charged: an
    added cell is no answer, so its imports must not fail the answers. A name only it
    defines is then undefined for an answer that uses it, which its call reports. Each
    added cell gets one note saying which of the two it was."""
    from .scan import cell_findings

    kept = []
    for cell in cells:
        found = cell_findings(cell["source"], policy) if cell.get("added") else []
        if found:
            report.notes.append(f"{cell['id']} was added to the notebook but not run by the grader: it "
                                f"{found[0].removeprefix('uses ')} (its output still shows in the feedback; keep "
                                f"code your answers need out of it)")
            continue
        if cell.get("added"):
            report.notes.append(f"{cell['id']} was added to the notebook: the grader runs it, in its place, "
                                f"with the answer cells (under the same rules)")
        kept.append(cell)
    return kept


class AnswerRunner:
    """The answer runner of one submission, in its sandbox, from the moment it is made:
    bubblewrap, the interpreter and torch start while the grader reads and restores the
    notebook; ``run`` then sends the cells and, once they ran, the inputs, and judges the
    outputs. Leaving the ``with`` block stops a runner that was never given its cells and
    removes its scratch folder."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._spec, self._inputs = Future(), Future()
        self._stack = contextlib.ExitStack()
        self.workdir = Path(self._stack.enter_context(scratch_folder("runner")))
        pool = self._stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="answer-runner"))
        self._stack.callback(self._stop)  # runs first: the pool's shutdown then waits for the run
        self._done = pool.submit(run_isolated, [sys.executable, "-I", str(HERE / "answer_runner.py")], self.workdir,
                                 limits, stdin=[Stdin(self._spec), Stdin(self._inputs, after="ready")])

    def __enter__(self) -> AnswerRunner:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _stop(self) -> None:
        for part in (self._spec, self._inputs):
            if not part.done():
                part.set_exception(RuntimeError("grading gave up on this run"))

    def run(self, cells: list[dict], calls: list[CheckCall], report: Report) -> dict:
        """Run ``cells`` and judge every check call; returns {CheckCall: CheckResult}. Once only."""
        from .checks import CheckResult, Raised, changed_inputs, judge_cases, make_cases
        from .policy import runner_policy
        from .registry import get_check
        from .scan import delegation_reasons, references

        checks = {c: get_check(c.check_id) for c in calls}
        policy = runner_policy(list(dict.fromkeys(checks.values())))
        cells = without_unrunnable_added_cells(cells, policy, report)
        cases, wire = {}, []
        for n, call in enumerate(calls):
            check = checks[call]
            cases[call] = make_cases(check, call.kind, secrets.randbits(63))  # fresh, unknown to the student
            wire += [(f"c{n}.{i}", check.function_name, case.args) for i, case in enumerate(cases[call])]
        keep = frozenset(check.function_name for check in checks.values() if check.keeps_inputs)
        self._inputs.set_result(encode_inputs(wire, keep))  # released by the sandbox only once "ready" exists
        self._spec.set_result(encode_spec({"cells": cells, "policy": policy, "cell_timeout": self.limits.cell_s,
                                           "ready_file": "ready"}))
        result = self._done.result()
        note_sandbox(report, result)
        try:
            if not result.clean:  # no outputs of a killed run
                raise WireError(f"exited with status {result.returncode}")
            cell_errors, outputs, tensors = read_outputs(self.workdir)
        except WireError as e:
            reason = _did_not_finish(result, str(e))
            return {call: CheckResult(call.check_id, call.kind, False, reason=reason) for call in calls}
        for cell in cell_errors:
            if cell["error"]:
                report.notes.append(f"answer cell {cell['id']!r} raised: {cell['error']}")
        delegation = delegation_reasons(cells, policy)
        results = {}
        for n, call in enumerate(calls):
            check = checks[call]
            res = CheckResult(call.check_id, call.kind, True)
            why = delegation.get(check.function_name, []) + delegation.get("*", [])
            if why:
                res.passed, res.reason = False, "; ".join(dict.fromkeys(why))
                results[call] = res
                continue
            got, changed = [], []
            for i, case in enumerate(cases[call]):
                out = outputs.get(f"c{n}.{i}", {"error": "no output"})
                if isinstance(out.get("raised"), str) and "refused" not in out:  # the student's own error
                    got.append(Raised(text(out["raised"])))
                elif "error" in out or "output" not in out:  # not defined, refused, timed out: the whole check
                    res.passed, res.reason = False, text(out.get("error", "no output"))
                    break
                else:
                    got.append(decode_output(out["output"], tensors))
                if check.keeps_inputs:  # a call that returned always sends its arguments back: none counts as changed
                    after = decode_output(out.get("inputs_after"), tensors) if "output" in out else case.args
                    changed.append(changed_inputs(case.args, after) if isinstance(after, tuple)
                                   and len(after) == len(case.args) else list(range(len(case.args))))
            if not res.reason:
                res.cases = judge_cases(check, cases[call], got, call.kind, call.answer, changed)
                res.passed = all(case.passed for case in res.cases)
            if call.kind == "hidden":  # say which hidden check failed and why, never its inputs' values
                for i, (case, outcome) in enumerate(zip(cases[call], res.cases)):
                    outcome.label = f"hidden case {i + 1}: {case.label}"
            results[call] = res
        note_failing_helpers(results, checks, references(cells))
        return results


def note_failing_helpers(results: dict, checks: dict, refs: dict[str, set[str]]) -> None:
    """A failed check whose function calls another graded function of the notebook that
    fails its own check says so: that one is the likely cause, to fix first."""
    from .checks import depends_note

    failing = {checks[call].function_name for call, res in results.items() if not res.passed}
    for call, res in results.items():
        name = checks[call].function_name
        if not res.passed:
            res.notes += [depends_note(name, helper) for helper in sorted(refs.get(name, set()) & failing)
                          if helper != name]


def score_cells(assignment: Assignment, results: dict, report: Report) -> None:
    """Each grade cell: its points shared equally by the exercises it checks (``split_heads``
    and ``merge_heads`` one share each), a share earned when every call of that exercise in
    the cell passed. A cell of several exercises says which earned what."""
    for cell in assignment.grade_cells:
        passed: dict[str, bool] = {}
        for call in cell.calls:
            passed[call.check_id] = passed.get(call.check_id, True) and results[call].passed
        share = cell.max_score / len(passed) if passed else 0.0
        messages = [results[c].message for c in cell.calls] or ["this cell has no checks"]
        if len(passed) > 1:
            messages.append("points: " + ", ".join(f"{check_id.split('.', 1)[1]} {share if ok else 0:g}/{share:g}"
                                                     for check_id, ok in passed.items()))
        report.cells.append(CellReport(cell.name, share * sum(passed.values()), cell.max_score, cell.hidden,
                                       messages))
