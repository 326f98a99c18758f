"""Trusted grading: a score never comes from the student's kernel.

For one submission (``grade_submission``, run in a worker process):

1. copy it into a scratch folder and validate it against the assignment in the gradebook
   (JSON, nbformat, nbgrader metadata); a malformed one is rejected with a reason;
2. restore test and given cells from the trusted source with nbgrader's preprocessors
   (checksums, ``OverwriteCells`` with ``add_missing_cells``);
3. execute the restored notebook, hidden tests removed, in a limited child process
   (``sandbox.run_isolated``), only for the outputs the feedback shows;
4. run the answer runner in another child: the answer and given cells, then the named
   functions on inputs generated here with a fresh seed and sent after the student code
   ran; statically scan the answer cells for delegation;
5. compare the runner's outputs with ``llmcourse`` here and score every grade cell.

For a class (``grade_assignment``): a process pool does the above; the parent alone writes
the gradebook (``nbgrader.api.Gradebook``), the autograded notebooks, the feedback HTML
(nbgrader's ``GenerateFeedback``, hidden tests removed) and a CSV, each file atomically.
"""
from __future__ import annotations

import ast
import copy
import csv
import io
import json
import multiprocessing
import os
import secrets
import shutil
import struct
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from ..weights import atomic_write_bytes
from .feedback import HIDDEN_BEGIN, rejection_html, trusted_output
from .nbconfig import REPO_ROOT, course_config, ensure_tools_on_path
from .sandbox import Limits, require_sandbox, run_isolated
from .scan import defined_functions, scan_cell

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------- the assignment, as trusted

@dataclass(frozen=True)
class CheckCall:
    """``check("ch3.causal_mask", causal_mask, cases="hidden")`` in a trusted test cell
    (``answer="c"``: a concept question's key, only ever in a hidden test)."""

    check_id: str
    kind: str  # "visible" or "hidden"
    answer: str | None = None


@dataclass(frozen=True)
class GradeCell:
    name: str
    max_score: float
    hidden: bool  # holds hidden tests
    calls: tuple[CheckCall, ...]


@dataclass(frozen=True)
class Assignment:
    """One notebook of an assignment as the gradebook knows it (from the instructor's source)."""

    name: str
    notebook: str
    db_url: str
    grade_cells: tuple[GradeCell, ...]
    solution_cells: frozenset[str]
    cell_meta: dict  # grade_id -> the nbgrader metadata that must not change
    checksums: dict  # grade_id -> nbgrader checksum of the trusted source of a locked cell

    @property
    def max_score(self) -> float:
        return sum(c.max_score for c in self.grade_cells)


def parse_check_calls(source: str) -> tuple[CheckCall, ...]:
    """The ``check(...)`` calls of a test cell, in order (nbgrader markers are comments)."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "check"
                and node.args and isinstance(node.args[0], ast.Constant)):
            keywords = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            calls.append(CheckCall(node.args[0].value, keywords.get("cases", "visible"), keywords.get("answer")))
    return tuple(calls)


def load_assignment(db_url: str, assignment: str, notebook: str) -> Assignment:
    """Read the grade cells, their check calls and the cells' metadata from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        nb = gb.find_notebook(notebook, assignment)
        sources = {c.name: c for c in nb.source_cells}
        grade_cells, meta = [], {}
        for cell in nb.grade_cells:
            source = sources[cell.name].source
            grade_cells.append(GradeCell(cell.name, float(cell.max_score), HIDDEN_BEGIN in source,
                                         parse_check_calls(source) if cell.cell_type == "code" else ()))
            meta[cell.name] = {"grade": True, "points": float(cell.max_score)}
        solutions = frozenset(c.name for c in nb.solution_cells)
        for name in solutions:
            meta.setdefault(name, {"grade": False})["solution"] = True
        checksums = {name: src.checksum for name, src in sources.items() if src.locked and src.checksum}
        for name, src in sources.items():
            meta.setdefault(name, {"grade": False})
            meta[name].setdefault("solution", False)
            meta[name]["locked"] = bool(src.locked)
    check_calls(grade_cells, f"{assignment}/{notebook}")
    return Assignment(assignment, notebook, db_url, tuple(grade_cells), solutions, meta, checksums)


def check_calls(grade_cells: list[GradeCell], where: str) -> None:
    """The instructor's source, checked before anyone is graded: known check ids, and every
    concept question's hidden test giving its key."""
    from .checks import get_check

    for cell in grade_cells:
        for call in cell.calls:
            check = get_check(call.check_id)
            if check.choices and call.kind == "hidden" and call.answer not in check.choices:
                raise ValueError(f"{where}, cell {cell.name!r}: the hidden test of {call.check_id} must give "
                                 f"its key, answer= one of {', '.join(map(repr, check.choices))}; "
                                 f"got {call.answer!r}")


def build_gradebook(root: Path, source: str, assignment: str, grading_dir: Path) -> str:
    """Create or update ``grading_dir/gradebook.db`` from ``root/source/assignment`` with
    nbgrader's ``generate_assignment`` (into a throw-away release folder); returns its URL."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    ensure_tools_on_path()
    grading_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llmcourse-release-") as release:
        config = course_config(root, grading_dir, source=source, release=release)
        api = NbGraderAPI(CourseDirectory(config=config), config=config)
        result = api.generate_assignment(assignment, force=True, create=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{result.get('error', '')}"
                           f"\n{result.get('log', '')}")
    return config.CourseDirectory.db_url


# ---------------------------------------------------------------- one submission

@dataclass
class CellReport:
    grade_id: str
    score: float
    max_score: float
    hidden: bool
    messages: list[str] = field(default_factory=list)


@dataclass
class Report:
    """What grading found for one submission; every field is plain data (JSON)."""

    student: str
    assignment: str
    notebook: str
    status: str = "graded"  # or "rejected"
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    cells: list[CellReport] = field(default_factory=list)
    sandboxed: bool = False  # every run of its code was inside the sandbox
    sandbox_note: str = ""
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(c.score for c in self.cells)

    @property
    def max_score(self) -> float:
        return sum(c.max_score for c in self.cells)


class Rejected(Exception):
    """A submission that cannot be graded at all (the reason is for the student)."""


def read_submission(path: Path) -> nbformat.NotebookNode:
    """Parse and validate the notebook file, or raise ``Rejected`` saying why."""
    try:
        nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    except (UnicodeDecodeError, ValueError) as e:  # NotJSONError is a ValueError
        raise Rejected(f"{path.name} is not a readable notebook (invalid JSON?): {str(e)[:200]}") from None
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        raise Rejected(f"{path.name} is not a valid notebook: {e.message[:200]}") from None
    return nb


def check_metadata(nb, assignment: Assignment) -> list[str]:
    """Compare the cells' nbgrader metadata with the source; raise ``Rejected`` when a graded
    cell was added, renamed or had its metadata changed. Returns notes for the report."""
    from nbgrader.utils import compute_checksum

    notes, seen = [], set()
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        if not meta:
            if cell.cell_type == "code" and cell.source.strip():
                notes.append(f"cell {index + 1} is not part of the assignment: the grader does not run it")
            continue
        grade_id = meta.get("grade_id")
        if grade_id not in assignment.cell_meta:
            raise Rejected(f"cell {index + 1} has grade_id {grade_id!r}, which is not part of the assignment "
                           f"(an added, copied or renamed graded cell)")
        if grade_id in seen:
            raise Rejected(f"cell {index + 1}: grade_id {grade_id!r} appears twice")
        seen.add(grade_id)
        for key, expected in assignment.cell_meta[grade_id].items():
            got = meta.get(key, False if key != "points" else None)
            if key == "points" and not assignment.cell_meta[grade_id].get("grade"):
                continue
            if (float(got) if key == "points" and got is not None else got) != expected:
                raise Rejected(f"the nbgrader metadata of cell {grade_id!r} was changed ({key}: "
                               f"{expected!r} in the assignment, {got!r} in the submission)")
        trusted = assignment.checksums.get(grade_id)
        if trusted and compute_checksum(cell) != trusted:
            notes.append(f"cell {grade_id!r} was edited; the grader restored it from the source")
    for cell in assignment.grade_cells:
        if cell.name not in seen:
            notes.append(f"test cell {cell.name!r} was missing; the grader put it back")
    return notes


def restore(nb, assignment: Assignment, student: str):
    """Put the trusted source back with nbgrader's own preprocessors (as ``autograde`` does)."""
    from nbgrader.preprocessors import (CheckCellMetadata, ClearOutput, DeduplicateIds,
                                        OverwriteCells, OverwriteKernelspec)

    resources = {"nbgrader": {"db_url": assignment.db_url, "assignment": assignment.name,
                              "notebook": assignment.notebook, "student": student}}
    for preprocessor in (ClearOutput(), DeduplicateIds(), OverwriteKernelspec(),
                         OverwriteCells(add_missing_cells=True), CheckCellMetadata()):
        try:
            nb, resources = preprocessor.preprocess(nb, resources)
        except Exception as e:  # nbgrader's own refusal of a tampered notebook
            raise Rejected(f"nbgrader {type(preprocessor).__name__}: {str(e)[:300]}") from None
    return nb


def runner_cells(nb) -> list[dict]:
    """The cells the answer runner executes: answer cells and given (locked) code cells, in order."""
    cells = []
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or not meta or (meta.get("grade") and not meta.get("solution")):
            continue
        if meta.get("solution") or meta.get("locked"):
            cells.append({"id": meta.get("grade_id", f"cell{index}"), "source": cell.source,
                          "solution": bool(meta.get("solution"))})
    return cells


def delegation_reasons(cells: list[dict], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Function name -> why its answer cell delegates the work ("*" for every function)."""
    reasons: dict[str, list[str]] = {}
    for cell in cells:
        if not cell["solution"]:
            continue
        found = scan_cell(cell["source"], forbidden)
        if found:
            for name in defined_functions(cell["source"]) or {"*"}:
                reasons.setdefault(name, []).extend(f"answer cell {cell['id']!r} {r}" for r in found)
    return reasons


def _encode_inputs(calls: list[tuple[str, str, tuple]]) -> bytes:
    """Header + safetensors blob, as ``answer_runner.read_inputs`` expects."""
    import torch
    from safetensors.torch import save

    tensors, header = {}, {"calls": []}
    for key, function, args in calls:
        encoded = []
        for i, arg in enumerate(args):
            if isinstance(arg, torch.Tensor):
                tensors[f"{key}.a{i}"] = arg.contiguous().clone()  # safetensors refuses shared storage
                encoded.append({"tensor": f"{key}.a{i}"})
            else:
                encoded.append({"value": arg})
        header["calls"].append({"key": key, "function": function, "args": encoded})
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + save(tensors)


def _decode_output(encoded: dict, tensors: dict):
    if "tensor" in encoded:
        return tensors[encoded["tensor"]]
    if "tuple" in encoded:
        return tuple(_decode_output(e, tensors) for e in encoded["tuple"])
    if "unsupported" in encoded:
        return f"<an object of type {encoded['unsupported']}>"
    return encoded["value"]


def run_answers(cells: list[dict], calls: list[CheckCall], scratch: Path, limits: Limits, report: Report):
    """Run the answer runner on ``cells`` and judge every check call. Returns {CheckCall: CheckResult}."""
    from safetensors.torch import load_file

    from .checks import CheckResult, get_check, judge, make_cases

    checks = {c: get_check(c.check_id) for c in calls}
    forbidden = tuple(sorted({f for check in checks.values() for f in check.forbidden}))
    workdir = scratch / "runner"
    workdir.mkdir()
    spec = {"cells": cells, "forbidden": list(forbidden), "cell_timeout": limits.cell_s, "ready_file": "ready"}
    (workdir / "spec.json").write_text(json.dumps(spec))
    cases, wire = {}, []
    for n, call in enumerate(calls):
        check = checks[call]
        cases[call] = make_cases(check, call.kind, secrets.randbits(63))  # fresh, unknown to the student
        wire += [(f"c{n}.{i}", check.function, case.args) for i, case in enumerate(cases[call])]
    result = run_isolated([sys.executable, "-I", str(HERE / "answer_runner.py"), "spec.json"], workdir, limits,
                          stdin=_encode_inputs(wire), stdin_after="ready")
    _note_sandbox(report, result)
    outputs, tensors = None, {}
    try:
        outputs = json.loads((workdir / "outputs.json").read_text())
        tensors = load_file(workdir / "outputs.safetensors")
    except Exception:  # noqa: BLE001 -- missing or garbled: the run failed
        outputs = None
    if outputs is None:
        why = result.reason or "it ended without writing its outputs (os._exit, or it crashed)"
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        reason = f"the answer code did not finish: {why}" + (f" ({tail[0][:200]})" if tail[0] else "")
        return {call: CheckResult(call.check_id, call.kind, False, reason=reason) for call in calls}
    for cell in outputs["cells"]:
        if cell["error"]:
            report.notes.append(f"answer cell {cell['id']!r} raised: {cell['error']}")
    delegation = delegation_reasons(cells, forbidden)
    results = {}
    for n, call in enumerate(calls):
        check = checks[call]
        res = CheckResult(call.check_id, call.kind, True)
        why = delegation.get(check.function, []) + delegation.get("*", [])
        if why:
            res.passed, res.reason = False, "; ".join(dict.fromkeys(why))
            results[call] = res
            continue
        for i, case in enumerate(cases[call]):
            out = outputs["calls"].get(f"c{n}.{i}", {"error": "no output"})
            if "error" in out:
                res.passed, res.reason = False, out["error"]
                break
            outcome = judge(check, case, _decode_output(out["output"], tensors), call.kind, call.answer)
            if call.kind == "hidden":  # say which hidden check failed and why, never its inputs' values
                outcome.label = f"hidden case {i + 1}: {case.label}"
            res.cases.append(outcome)
            res.passed &= outcome.passed
        results[call] = res
    return results


def _note_sandbox(report: Report, result) -> None:
    """A report is sandboxed only if every run of its code was."""
    first = not report.sandbox_note
    report.sandboxed = result.sandboxed if first else report.sandboxed and result.sandboxed
    if first or not result.sandboxed:
        report.sandbox_note = result.note


def without_hidden_tests(nb) -> nbformat.NotebookNode:
    """The notebook the feedback run executes: hidden tests (and the answer keys in them)
    removed, as code running there can read the notebook's file and print it into the
    feedback. Nothing is lost: hidden checks are scored by the answer runner, not there."""
    from nbgrader.preprocessors import ClearHiddenTests

    return ClearHiddenTests().preprocess(copy.deepcopy(nb), {})[0]


def execute_for_feedback(nb, scratch: Path, limits: Limits,
                         report: Report | None = None) -> tuple[nbformat.NotebookNode, str]:
    """Execute the restored notebook in a limited child process; returns it and any error."""
    workdir = scratch / "execute"
    workdir.mkdir()
    nbformat.write(nb, workdir / "restored.ipynb")
    result = run_isolated([sys.executable, "-I", str(HERE / "execute_notebook.py"), "restored.ipynb",
                           "executed.ipynb", str(limits.cell_s), str(limits.output_bytes)], workdir, limits)
    if report is not None:
        _note_sandbox(report, result)
    try:
        executed = nbformat.read(workdir / "executed.ipynb", as_version=4)
        error = json.loads((workdir / "execution.json").read_text())["error"] or ""
    except Exception:  # noqa: BLE001
        executed, error = copy.deepcopy(nb), f"executing the notebook failed: {result.reason or 'no output'}"
    return executed, error


def score_cells(assignment: Assignment, results: dict, report: Report) -> None:
    for cell in assignment.grade_cells:
        checks = [results[c] for c in cell.calls]
        passed = bool(checks) and all(r.passed for r in checks)
        messages = [r.message for r in checks] or ["this cell has no checks"]
        report.cells.append(CellReport(cell.name, cell.max_score if passed else 0.0, cell.max_score,
                                       cell.hidden, messages))


def annotate(executed, report: Report) -> None:
    """Add the trusted result to every test cell of the executed notebook (the feedback)."""
    by_id = {c.grade_id: c for c in report.cells}
    for cell in executed.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.cell_type != "code" or grade_id not in by_id:
            continue
        result = by_id[grade_id]
        text = (f"Grader: {result.score:g} / {result.max_score:g} points\n" + "\n".join(result.messages))
        cell.outputs.append(trusted_output(text))
    if report.notes:
        executed.cells.insert(0, nbformat.v4.new_markdown_cell(
            "**Grader notes**\n\n" + "\n".join(f"* {n}" for n in report.notes)))


def grade_submission(path: str | Path, student: str, assignment: Assignment, limits: Limits,
                     execute: bool = True) -> tuple[Report, str | None]:
    """Grade one notebook file; returns the report and the annotated executed notebook (JSON).

    Runs student code only in child processes, in a scratch copy; never raises for anything
    in the submission.
    """
    started = time.monotonic()
    report = Report(student, assignment.name, assignment.notebook)
    with tempfile.TemporaryDirectory(prefix="llmcourse-grade-") as tmp:
        scratch = Path(tmp)
        try:
            local = scratch / Path(path).name
            shutil.copyfile(path, local)
            nb = read_submission(local)
            report.notes += check_metadata(nb, assignment)
            nb = restore(nb, assignment, student)
        except Rejected as e:
            report.status, report.reason = "rejected", str(e)
            report.cells = [CellReport(c.name, 0.0, c.max_score, c.hidden, [f"not graded: {e}"])
                            for c in assignment.grade_cells]
            report.seconds = time.monotonic() - started
            return report, None
        calls = list(dict.fromkeys(c for cell in assignment.grade_cells for c in cell.calls))
        results = run_answers(runner_cells(nb), calls, scratch, limits, report)
        score_cells(assignment, results, report)
        executed = nb
        if execute:
            executed, error = execute_for_feedback(without_hidden_tests(nb), scratch, limits, report)
            if error:
                report.notes.append(f"running the notebook for feedback: {error}")
        annotate(executed, report)
        report.seconds = time.monotonic() - started
        return report, nbformat.writes(executed)


# ---------------------------------------------------------------- a class

def find_submissions(submitted: Path, assignment: str, notebook: str) -> list[tuple[str, Path]]:
    """``submitted/<student>/<assignment>/<notebook>.ipynb``, sorted by student."""
    found = []
    for student_dir in sorted(p for p in Path(submitted).iterdir() if p.is_dir()):
        path = student_dir / assignment / f"{notebook}.ipynb"
        if path.is_file():
            found.append((student_dir.name, path))
    return found


def _grade_job(job):
    path, student, assignment, limits = job
    try:
        return grade_submission(path, student, assignment, limits)
    except Exception as e:  # noqa: BLE001 -- a grader bug must not stop the class
        report = Report(student, assignment.name, assignment.notebook, status="rejected",
                        reason=f"internal grading error: {type(e).__name__}: {e}")
        report.cells = [CellReport(c.name, 0.0, c.max_score, c.hidden, [report.reason])
                        for c in assignment.grade_cells]
        return report, None


def save_grades(assignment: Assignment, report: Report) -> None:
    """Write one submission's automatic scores into the gradebook (parent only, serially).

    Re-running updates the same rows: no duplicates, manual scores untouched.
    """
    from nbgrader.api import Gradebook, MissingEntry
    from sqlalchemy.exc import SAWarning

    with Gradebook(assignment.db_url) as gb, warnings.catch_warnings():
        # nbgrader's add_submission trips SQLAlchemy's autoflush warning (its own autograde
        # prints it too); the rows are written all the same (the tests read them back).
        warnings.simplefilter("ignore", SAWarning)
        gb.update_or_create_student(report.student)
        try:
            gb.find_submission(assignment.name, report.student)
        except MissingEntry:
            gb.add_submission(assignment.name, report.student)
        for cell in report.cells:
            grade = gb.find_grade(cell.grade_id, assignment.notebook, assignment.name, report.student)
            grade.auto_score = cell.score
            grade.needs_manual_grade = False
        gb.db.commit()


def final_scores(assignment: Assignment, students: list[str]) -> dict[str, float]:
    """Each student's total from the gradebook (manual scores override automatic ones)."""
    from nbgrader.api import Gradebook

    with Gradebook(assignment.db_url) as gb:
        return {s: float(gb.find_submission(assignment.name, s).score) for s in students}


def write_feedback(config, assignment: Assignment, reports: list[Report], out: Path) -> None:
    """nbgrader's feedback HTML for graded submissions, a short page for rejected ones.

    nbgrader writes into a temporary folder; each page is then moved into place atomically.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    with tempfile.TemporaryDirectory(prefix="llmcourse-feedback-") as tmp:
        config = copy.deepcopy(config)
        config.CourseDirectory.feedback_directory = tmp
        api = NbGraderAPI(CourseDirectory(config=config), config=config)
        for report in reports:
            target = out / "feedback" / report.student / assignment.name / f"{assignment.notebook}.html"
            if report.status == "rejected":
                atomic_write_bytes(target, rejection_html(report.student, assignment.name, report.reason).encode())
                continue
            result = api.generate_feedback(assignment.name, report.student, force=True)
            page = Path(tmp) / report.student / assignment.name / f"{assignment.notebook}.html"
            if not result["success"] or not page.exists():
                raise RuntimeError(f"feedback for {report.student} failed:\n{result.get('error', '')}")
            atomic_write_bytes(target, page.read_bytes())


def sandbox_column(report: Report) -> str:
    """``sandboxed``, ``NOT SANDBOXED`` or, when none of its code ran, ``no code run``."""
    if not report.sandbox_note:
        return "no code run"
    return "sandboxed" if report.sandboxed else "NOT SANDBOXED"


def write_csv(assignment: Assignment, reports: list[Report], totals: dict[str, float], path: Path) -> None:
    """One row per student: the points of every grade cell, the total, and how grading ended."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    cells = [c.name for c in assignment.grade_cells]
    writer.writerow(["student", "assignment", *cells, "score", "max_score", "status", "reason", "sandbox"])
    for report in sorted(reports, key=lambda r: r.student):
        points = {c.grade_id: c.score for c in report.cells}
        writer.writerow([report.student, assignment.name, *(f"{points.get(c, 0.0):g}" for c in cells),
                         f"{totals[report.student]:g}", f"{assignment.max_score:g}", report.status, report.reason,
                         sandbox_column(report)])
    atomic_write_bytes(path, buffer.getvalue().encode())


def grade_assignment(assignment: str, submitted: str | Path, out: str | Path, jobs: int | None = None,
                     root: str | Path = REPO_ROOT, limits: Limits = Limits(), notebook: str | None = None,
                     log=print) -> list[Report]:
    """``llmcourse grade``: grade every ``submitted/<student>/<assignment>/`` in one go.

    Writes into ``out``: ``gradebook.db``, ``autograded/``, ``feedback/``, ``grades.csv``
    and ``report.json``. Safe to re-run. Refuses (``SandboxUnavailable``) before grading
    anyone when the sandbox cannot be used, unless ``limits.allow_unsandboxed``.
    """
    sandboxed = require_sandbox(limits)
    root, submitted, out = Path(root).resolve(), Path(submitted).resolve(), Path(out).resolve()
    source_dir = root / "solutions" / assignment
    if not source_dir.is_dir():
        raise FileNotFoundError(f"no assignment {assignment!r}: {source_dir} does not exist")
    if not submitted.is_dir():
        raise FileNotFoundError(f"submitted folder {submitted} does not exist")
    notebook = notebook or _only_notebook(source_dir)
    config = course_config(root, out, submitted=submitted)
    db_url = build_gradebook(root, "solutions", assignment, out)
    trusted = load_assignment(db_url, assignment, notebook)
    jobs = jobs or os.cpu_count() or 1
    work = [(path, student, trusted, limits) for student, path in find_submissions(submitted, assignment, notebook)]
    log(f"grading {len(work)} submissions of {assignment} with {jobs} job(s)"
        + ("" if sandboxed else " -- NOT SANDBOXED (bubblewrap unavailable): process limits only"))
    if jobs == 1:
        results = map(_grade_job, work)
    else:
        # "spawn", not Linux's default fork: a fork of a parent that has already run
        # torch (its OpenMP threads) can leave a worker deadlocked on a lock.
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_grade_job, work)
    reports = []
    for report, executed in results:  # the parent alone writes the gradebook and files, in order
        save_grades(trusted, report)
        if executed is not None:
            atomic_write_bytes(out / "autograded" / report.student / assignment / f"{notebook}.ipynb",
                               executed.encode())
        log(f"  {report.student}: {report.score:g} / {report.max_score:g}"
            + (f" (rejected: {report.reason})" if report.status == "rejected" else "")
            + ("" if report.sandboxed or not report.sandbox_note else " [NOT SANDBOXED]"))
        reports.append(report)
    if jobs != 1:
        pool.shutdown()
    totals = final_scores(trusted, [r.student for r in reports])
    write_feedback(config, trusted, reports, out)
    write_csv(trusted, reports, totals, out / "grades.csv")
    atomic_write_bytes(out / "report.json", json.dumps([asdict(r) for r in reports], indent=1).encode())
    return reports


def _only_notebook(folder: Path) -> str:
    notebooks = sorted(p.stem for p in folder.glob("*.ipynb"))
    if len(notebooks) != 1:
        raise ValueError(f"{folder} holds {len(notebooks)} notebooks; name one with --notebook")
    return notebooks[0]


# ---------------------------------------------------------------- a student's own check

def check_notebook(path: str | Path, root: str | Path = REPO_ROOT, limits: Limits = Limits(),
                   execute: bool = False) -> Report:
    """``llmcourse check``: the trusted pipeline on one notebook, without a class gradebook.

    The trusted source is the instructor's ``solutions/`` when present (hidden checks
    included), otherwise the release in ``exercises/`` (visible checks only).
    """
    path, root = Path(path).resolve(), Path(root).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no notebook {path}")
    assignment = path.parent.name
    source = next((s for s in ("solutions", "exercises") if (root / s / assignment / path.name).is_file()), None)
    if source is None:
        raise FileNotFoundError(f"{path.name} is not a notebook of a course assignment: expected "
                                f"{root}/exercises/{assignment}/{path.name}")
    with tempfile.TemporaryDirectory(prefix="llmcourse-check-") as tmp:
        db_url = build_gradebook(root, source, assignment, Path(tmp))
        trusted = load_assignment(db_url, assignment, path.stem)
        report, _ = grade_submission(path, "you", trusted, limits, execute=execute)
    if source == "exercises":
        report.notes.append("hidden checks are not available here (no instructor source): visible checks only")
    return report


def format_report(report: Report) -> str:
    """The text ``llmcourse check`` prints: points per cell, then what each check said."""
    lines = [f"{report.assignment}/{report.notebook}: {report.score:g} / {report.max_score:g} points"
             + ("" if report.status == "graded" else f" (REJECTED: {report.reason})")]
    lines += [f"note: {n}" for n in report.notes]
    for cell in report.cells:
        lines.append(f"[{cell.score:g}/{cell.max_score:g}] {cell.grade_id}" + (" (hidden tests)" if cell.hidden else ""))
        lines += ["    " + m.replace("\n", "\n    ") for m in cell.messages]
    lines.append(f"({report.sandbox_note or 'no code was run'})")
    return "\n".join(lines)
