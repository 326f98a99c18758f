"""Trusted grading: a score never comes from the student's kernel.

For one submission (``grade_submission``, run in a worker process):

1. read it as an untrusted file (``intake``) into a scratch folder and validate it against
   the assignment in the gradebook (JSON, nbformat, nbgrader metadata); a malformed one is
   rejected with a reason;
2. restore test and given cells from the trusted source with nbgrader's preprocessors
   (checksums, ``OverwriteCells`` with ``add_missing_cells``);
3. run the answer runner in a sandbox (``scoring``; started before step 1, so that its
   start overlaps steps 1-2): the answer and given cells, then the named functions on
   inputs generated here with a fresh seed and sent after the student code ran; compare
   its outputs with ``llmcourse`` here and score every grade cell;
4. execute the restored notebook, hidden tests removed, in another sandbox, beside step 3,
   only for the outputs the feedback shows (``notebook_run``: outputs copied into the
   trusted notebook).

For a class (``grade_assignment``): workers (``pool``) do the above, one job each, so a
crash or a hang costs one student; the parent alone writes the gradebook (``gradebook``),
the autograded notebooks, ``grades.csv`` and ``report.json`` (``results``, rewritten after
every student) and the feedback HTML (``feedback``), each file atomically.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

from ..files import atomic_write_bytes
from .feedback import annotate, write_feedback
from .gradebook import build_gradebook, cached_gradebook, final_scores, load_assignment, save_grades
from .intake import (
    MAX_NOTEBOOK_BYTES,
    check_metadata,
    find_submissions,
    printable,
    read_submission,
    read_submitted_notebook,
    restore,
    runner_cells,
    without_hidden_tests,
)
from .nbconfig import course_config, find_course
from .notebook_run import execute_for_feedback
from .pool import run_jobs
from .records import Assignment, Rejected, Report
from .release import METADATA_KEY, assignments
from .results import write_csv, write_report_json
from .sandbox import Limits, bwrap_problem, require_sandbox, sandbox_problem, scratch_folder
from .scoring import AnswerRunner, note_sandbox, score_cells
from .scratch import remove_stale
from .untrusted import UntrustedFile, read_untrusted, untrusted_path

# ---------------------------------------------------------------- one submission

def grade_submission(data: bytes, name: str, student: str, assignment: Assignment, limits: Limits,
                     execute: bool = True, runner: AnswerRunner | None = None) -> tuple[Report, str | None]:
    """Grade one notebook file's bytes (``name``: its file name, for messages); returns the
    report and the autograded notebook (JSON): the trusted restored notebook, with the outputs
    of the feedback run and the grader's results. ``runner``: an answer runner the caller
    started earlier (``llmcourse check`` starts it before its own imports); else one is
    started here, before the notebook is read, so that the two overlap.

    Runs student code only in sandboxes, in a scratch folder; never raises for anything in
    the submission.
    """
    started = time.monotonic()
    report = Report(student, assignment.name, assignment.notebook)
    with contextlib.ExitStack() as stack:
        runner = runner or stack.enter_context(AnswerRunner(limits))
        try:
            nb = read_submission(data, name)
            report.notes += check_metadata(nb, assignment)
            nb = restore(nb, assignment, student)
        except Rejected as e:
            report.reject(assignment, str(e))
            report.seconds = time.monotonic() - started
            return report, None
        calls = list(dict.fromkeys(c for cell in assignment.grade_cells for c in cell.calls))
        cells = runner_cells(nb)
        if execute:  # the feedback run, in its own sandbox, beside the answer runner
            scratch = Path(stack.enter_context(scratch_folder("grade")))
            pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="feedback-run"))
            feedback = pool.submit(execute_for_feedback, nb, without_hidden_tests(nb), scratch, limits)
        results = runner.run(cells, calls, report)
        score_cells(assignment, results, report)
        if execute:  # its notes after the runner's, so a report reads the same on every run
            error, result = feedback.result()
            note_sandbox(report, result)
            if error:
                report.notes.append(f"running the notebook for feedback: {error}")
    annotate(nb, report)
    report.seconds = time.monotonic() - started
    return report, nbformat.writes(nb)


# ---------------------------------------------------------------- a class

def _grade_job(job) -> tuple[Report, str | None]:
    """One student, in a worker: read the submitted file, grade it; never raises."""
    submitted, student, assignment, limits = job
    try:
        data = read_submitted_notebook(submitted, student, assignment.name, assignment.notebook)
        return grade_submission(data, f"{assignment.notebook}.ipynb", student, assignment, limits)
    except Rejected as e:
        return failed(student, assignment, str(e)), None
    except Exception as e:  # noqa: BLE001 -- a grader bug must not stop the class
        return failed(student, assignment, f"internal grading error: {type(e).__name__}: {e}"), None


def failed(student: str, assignment: Assignment, reason: str) -> Report:
    """The report of a submission that could not be graded (0 points, with the reason)."""
    return Report(student, assignment.name, assignment.notebook).reject(assignment, reason)


def job_timeout(limits: Limits) -> float:
    """How long one student's grading may take in a worker: its two sandboxed runs, plus
    nbgrader's own work and a loaded machine's slack."""
    return 2 * limits.wall_s + 120


def grade_assignment(assignment: str, submitted: str | Path, out: str | Path, jobs: int | None = None,
                     root: str | Path | None = None, limits: Limits = Limits(), notebook: str | None = None,
                     log=print) -> list[Report]:
    """``llmcourse grade``: grade every ``submitted/<student>/<assignment>/`` in one go.

    ``root`` is the course folder (default: ``find_course()``: ``$LLMCOURSE_COURSE`` or the
    current directory's course). Writes into ``out``: ``gradebook.db``, ``autograded/``,
    ``feedback/``, ``grades.csv`` and ``report.json``. Safe to re-run. Refuses (``SandboxUnavailable``) before grading
    anyone when the sandbox cannot be used, unless ``limits.allow_unsandboxed``. One
    student's submission, however hostile, costs no other student a grade: a refused id or
    file, a crash, a hang or a failed feedback page is that student's 0 or note, and the
    result files are written after every student.
    """
    sandboxed = require_sandbox(limits)
    root, submitted, out = find_course(root), Path(submitted).resolve(), Path(out).resolve()
    source_dir = root / "solutions" / assignment
    if not source_dir.is_dir():
        raise FileNotFoundError(f"no assignment {assignment!r}: {source_dir} does not exist")
    if not submitted.is_dir():
        raise FileNotFoundError(f"submitted folder {submitted} does not exist")
    remove_stale()
    notebook = notebook or _only_notebook(source_dir)
    config = course_config(root, out, submitted=submitted)
    # A new class's gradebook is the source's, from the cache when built before (nbgrader's
    # generate_assignment takes 4-6 s); an existing one is updated by nbgrader, grades kept.
    fresh = not (out / "gradebook.db").exists()
    db_url = (cached_gradebook if fresh else build_gradebook)(root, "solutions", assignment, out)
    trusted = load_assignment(db_url, assignment, notebook)
    found = find_submissions(submitted, assignment)
    work = [(submitted, s.student, trusted, limits) for s in found if s.problem is None]
    valid = {job[1] for job in work}  # in the gradebook; a refused id never is
    jobs = max(1, jobs or os.cpu_count() or 1)
    log(f"grading {len(work)} submissions of {assignment} with {jobs} job(s)"
        + ("" if sandboxed else f" -- NOT {'' if bwrap_problem() else 'FULLY '}SANDBOXED ({sandbox_problem()}): "
                                  "results marked"))
    reports: list[Report] = []

    def record(report: Report, executed: str | None) -> None:
        """The parent alone writes the gradebook and files, one student at a time."""
        if report.student in valid:
            try:
                save_grades(trusted, report)
            except Exception as e:  # noqa: BLE001 -- the gradebook refused this one: say so, go on
                report.notes.append(f"the gradebook could not record this submission: {type(e).__name__}: {e}")
                log(f"  {printable(report.student)}: GRADEBOOK ERROR {printable(str(e))}")
        if executed is not None:
            atomic_write_bytes(out / "autograded" / report.student / assignment / f"{notebook}.ipynb",
                               executed.encode())
        log(f"  {printable(report.student)}: {report.score:g} / {report.max_score:g}"
            + (f" (rejected: {printable(report.reason)})" if report.status == "rejected" else "")
            + ("" if report.sandboxed or not report.sandbox_note else " [NOT SANDBOXED]"))
        reports.append(report)
        write_csv(trusted, reports, {}, out / "grades.csv")
        write_report_json(reports, out / "report.json")

    for s in found:
        if s.problem is not None:
            record(failed(printable(s.student, 100), trusted, f"not a valid student id: {s.problem}"), None)
    if jobs == 1:  # in this process: the sandbox's own time limits bound the student code
        for job in work:
            record(*_grade_job(job))
    else:
        for index, ok, result in run_jobs(_grade_job, work, jobs, job_timeout(limits)):
            if ok:
                record(*result)
            else:  # the worker died or hung: this student only
                record(failed(work[index][1], trusted, f"internal grading error: {result}"), None)
    graded = [r for r in reports if r.student in valid]
    totals = final_scores(trusted, [r.student for r in graded])
    write_feedback(config, trusted, graded, out, log)
    write_csv(trusted, reports, totals, out / "grades.csv")
    write_report_json(reports, out / "report.json")
    return reports


def _only_notebook(folder: Path, how: str = "name one with --notebook") -> str:
    """The name of the one notebook of an assignment's folder; with several, an error saying ``how`` to choose."""
    notebooks = sorted(p.stem for p in folder.glob("*.ipynb"))
    if len(notebooks) != 1:
        raise ValueError(f"{folder} holds {len(notebooks)} notebooks ({', '.join(notebooks)}); {how}")
    return notebooks[0]


# ---------------------------------------------------------------- a student's own check

def check_notebook(path: str | Path, root: str | Path | None = None, limits: Limits = Limits(),
                   execute: bool = False, with_solutions: bool = False, assignment: str | None = None,
                   runner: AnswerRunner | None = None) -> Report:
    """``llmcourse check``: the trusted pipeline on one notebook at any path, without a class gradebook.

    The assignment is ``assignment`` (``--assignment``), else the one the notebook's metadata
    names, else its folder's or file's name (``check_assignment``). What it is graded against
    comes from the course, never from the file checked (``check_source``): the release, as
    ``llmcourse release`` makes it from solutions/ (visible checks only, so a student who has
    the whole repository cannot try concept answers against the keys until one passes; in a
    course without solutions/, exercises/); an instructor asks for ``solutions/`` itself
    (hidden checks and keys) with ``with_solutions``.
    Its gradebook comes from the cache when the course did not change (``cached_gradebook``).
    ``runner``: an answer runner started with ``limits`` before this (see ``grade_submission``).
    ``root`` is the course folder (default: ``$LLMCOURSE_COURSE``, else the course the notebook
    sits in, else the current directory's).
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no notebook {path}")
    root = find_course(root, path.parent, Path.cwd())
    try:
        data = read_untrusted(*untrusted_path(path), MAX_NOTEBOOK_BYTES)
    except UntrustedFile as e:
        raise ValueError(f"cannot check this notebook: {e}") from None
    source, release = check_source(root, with_solutions)
    name = check_assignment(path, data, assignments(root, source), assignment)
    folder = root / source / name
    if source == "exercises" and folder in path.parents:
        raise ValueError(f"{path} is the course's release of {name}, which a check grades against: check a copy "
                         f"of it (e.g. cp {path} ~/{path.name})")
    notebook = path.stem if (folder / path.name).is_file() else _only_notebook(folder, "name your copy like one")
    with scratch_folder("check") as tmp:
        db_url = cached_gradebook(root, source, name, Path(tmp), release=release)
        trusted = load_assignment(db_url, name, notebook)
        if not with_solutions:  # the release's hidden test cells hold no checks: they are not scored here
            trusted = dataclasses.replace(trusted, grade_cells=tuple(c for c in trusted.grade_cells if c.calls))
        report, _ = grade_submission(data, path.name, "you", trusted, limits, execute=execute, runner=runner)
    if not with_solutions:
        report.notes.append("visible checks only: the hidden checks (other shapes, edge cases, the concept "
                            "answers) are graded when you submit")
    return report


def check_source(root: Path, with_solutions: bool) -> tuple[str, bool]:
    """Where ``llmcourse check`` takes the trusted assignment from: (a folder of the course,
    whether it is that folder's release). ``solutions/`` itself with ``with_solutions``; else
    the release regenerated from ``solutions/``, so the copy in ``exercises/`` that the book
    has students edit in place is never trusted; ``exercises/`` only in a course without
    ``solutions/`` (a student's copy of the course)."""
    if (root / "solutions").is_dir():
        return "solutions", not with_solutions
    if with_solutions:
        raise FileNotFoundError(f"--with-solutions needs the course's solutions/; {root} has none")
    return "exercises", False


def check_assignment(path: Path, data: bytes, choices: list[str], given: str | None = None) -> str:
    """Which of the course's assignments (``choices``) a notebook is checked against: ``given``
    (``--assignment``), else the one its metadata names (``named_assignment``: untrusted, so it
    only picks one of ``choices``), else its folder's or its file's name. An unknown name, or a
    folder and file naming two assignments, is an error listing the choices."""
    listed = ", ".join(choices)
    for where, name in (("--assignment", given), ("the notebook's metadata", named_assignment(data))):
        if name is not None:
            if name not in choices:
                raise ValueError(f"{where} names assignment {printable(repr(name), 100)}, which this course does "
                                 f"not have; expected one of {listed}")
            return name
    found = sorted({n for n in (path.parent.name, path.stem) if n in choices})
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"{path.name} in {path.parent.name}/ could be assignment {' or '.join(found)}: "
                         f"say which with --assignment")
    raise ValueError(f"cannot tell which assignment {path.name} is (neither its metadata nor its folder or file name says): "
                     f"say which with --assignment, one of {listed}")


def named_assignment(data: bytes) -> object:
    """What a notebook file's metadata names as its assignment (``llmcourse release`` writes
    ``metadata.llmcourse.assignment``), or None. The file is the student's: anything may be
    there, so the value is returned as found, for ``check_assignment`` to accept or refuse."""
    try:
        nb = json.loads(data)
    except (ValueError, RecursionError):  # not JSON: grading says so
        return None
    meta = nb.get("metadata") if isinstance(nb, dict) else None
    course = meta.get(METADATA_KEY) if isinstance(meta, dict) else None
    return course.get("assignment") if isinstance(course, dict) else None


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
