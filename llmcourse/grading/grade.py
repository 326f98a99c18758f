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

For a class (``grade_assignment``): workers (``pool``, or a Dask cluster's: ``cluster``) do
the above, one job each, so a crash or a hang costs one student; the parent alone writes the gradebook (``gradebook``),
the autograded notebooks, ``grades.csv``, ``report.json`` and the LMS exports (``results``,
rewritten after every student, always of the whole class) and the feedback HTML
(``feedback``), each file atomically. A re-run grades only the submissions that changed since
they were graded; when each was handed in, and so its late penalty, is read on every run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
from tqdm import tqdm  # a plain bar on the stream given (a notebook widget would ignore it)

from ..files import make_folders
from .feedback import annotate, write_feedback
from .gradebook import (
    build_gradebook,
    cached_gradebook,
    final_points,
    gradebook_key,
    gradebook_roster,
    load_assignment,
    save_grades,
    save_lateness,
)
from .intake import (
    MAX_NOTEBOOK_BYTES,
    Submission,
    check_metadata,
    find_submissions,
    printable,
    read_roster,
    read_submission,
    read_submission_time,
    read_submitted_notebook,
    restore,
    runner_cells,
    without_hidden_tests,
)
from .nbconfig import canvas_columns, course_config, course_deadline, find_course, private_results
from .notebook_run import execute_for_feedback
from .pool import run_jobs
from .records import Assignment, Rejected, Report
from .release import METADATA_KEY, assignments
from .results import GROUP_READABLE, PRIVATE, format_questions, read_report_json, write_output, write_results
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
    """One student, in a worker of this machine: read the submitted file, grade it; never raises."""
    submitted, student, assignment, limits = job
    return _graded(lambda: read_submitted_notebook(submitted, student, assignment.name, assignment.notebook),
                   student, assignment, limits)


def _graded(read, student: str, assignment: Assignment, limits: Limits) -> tuple[Report, str | None]:
    """Grade the notebook file ``read()`` returns; never raises (a file that cannot be read, or
    a grader bug, is that student's 0 with the reason)."""
    try:
        return grade_submission(read(), f"{assignment.notebook}.ipynb", student, assignment, limits)
    except Rejected as e:
        return failed(student, assignment, str(e)), None
    except Exception as e:  # noqa: BLE001 -- a grader bug must not stop the class
        return failed(student, assignment, f"internal grading error: {type(e).__name__}: {e}"), None


def _sent_job(job, gradebook: bytes) -> tuple:
    """What a cluster's worker is sent for a job of ``_grade_job``'s: the submitted file's
    bytes (or the error reading it gave, which the worker reports as a local worker would)
    and the assignment's source gradebook, as the worker's machine need not see this one's
    files."""
    submitted, student, assignment, limits = job
    try:
        data = read_submitted_notebook(submitted, student, assignment.name, assignment.notebook)
    except Exception as e:  # noqa: BLE001 -- raised again on the worker, where _graded reports it
        data = e
    return data, student, assignment, gradebook, limits


def _grade_sent(job) -> tuple[Report, str | None]:
    """One student, on a cluster's worker (``_sent_job``): the gradebook is written to a
    scratch copy, which nbgrader restores the submission's cells from; never raises."""
    data, student, assignment, gradebook, limits = job

    def read() -> bytes:
        if isinstance(data, Exception):
            raise data
        return data

    with scratch_folder("gradebook") as tmp:
        copy = Path(tmp) / "gradebook.db"
        copy.write_bytes(gradebook)
        return _graded(read, student, dataclasses.replace(assignment, db_url=f"sqlite:///{copy}"), limits)


def source_gradebook(root: Path, assignment: str) -> bytes:
    """The bytes of the assignment's gradebook as built from its source (no student in it):
    what a cluster's workers restore submissions from."""
    with scratch_folder("gradebook") as tmp:
        cached_gradebook(root, "solutions", assignment, Path(tmp))
        return (Path(tmp) / "gradebook.db").read_bytes()


def grading_results(work: list, jobs: int, scheduler: str | None, root: Path, limits: Limits):
    """Yield ``(index, ok, result or error text)`` for each job of ``work`` as it is graded:
    on the cluster of ``scheduler`` (``cluster.run_on_cluster``), in ``jobs`` worker processes
    here (``pool.run_jobs``), or with one job in this process, where only the sandbox's own time
    limits bound the student code."""
    if scheduler is not None:
        from .cluster import run_on_cluster  # imports Dask only when a cluster is asked for

        gradebook = source_gradebook(root, work[0][2].name) if work else b""
        yield from run_on_cluster(_grade_sent, work, scheduler, job_timeout(limits),
                                  send=lambda job: _sent_job(job, gradebook))
    elif jobs == 1:
        for index, job in enumerate(work):
            yield index, True, _grade_job(job)
    else:
        yield from run_jobs(_grade_job, work, jobs, job_timeout(limits))


def worker_result(result, student: str, assignment: Assignment) -> tuple[Report, str | None]:
    """A worker's ``(report, autograded notebook)`` for ``student``, checked before the parent
    records it (a worker's reply crosses a process or a network): anything else is that
    student's internal grading error."""
    if (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Report)
            and result[0].student == student and isinstance(result[1], (str, type(None)))):
        return result
    return failed(student, assignment, f"internal grading error: the worker returned {type(result).__name__}, "
                                       f"not {student}'s report"), None


def failed(student: str, assignment: Assignment, reason: str, status: str = "rejected") -> Report:
    """The report of a submission that could not be graded (0 points, with the reason); with
    ``status`` "missing" or "pending", of a student with no submission, or none graded yet."""
    return Report(student, assignment.name, assignment.notebook).reject(assignment, reason, status)


def job_timeout(limits: Limits) -> float:
    """How long one student's grading may take in a worker: its two sandboxed runs, plus
    nbgrader's own work and a loaded machine's slack."""
    return 2 * limits.wall_s + 120


def graded_key(submitted: Path, student: str, assignment: Assignment, source: str) -> str:
    """The sha256 of what a student's grade depends on: the bytes of the submitted file and the
    assignment's source (``source``: its gradebook key). Kept in the report (``graded_key``); a
    re-run grades the student again only when it changed. "" when the file cannot be read
    (it is graded, and refused, again: that costs nothing). The parent reads the file here and
    the worker again: if it changed in between, the key is the old file's, so the next run
    regrades."""
    try:
        data = read_submitted_notebook(submitted, student, assignment.name, assignment.notebook)
    except (Rejected, OSError):  # an unreadable file is the worker's to report, for this student only
        return ""
    return hashlib.sha256(source.encode() + b"\0" + data).hexdigest()


def check_named_students(found: list[Submission], students: list[str] | None, submitted: Path, assignment: str) -> None:
    """Check that every student named with ``--student`` has handed ``assignment`` in (a
    one-line error naming the first who has not)."""
    handed_in = {s.student for s in found if s.problem is None}
    for student in students or ():
        if student not in handed_in:
            raise ValueError(f"--student {printable(student, 100)}: no submission of {assignment} in {submitted} "
                             f"(expected {submitted}/{printable(student, 100)}/{assignment}/)")


def to_grade(submitted: Path, found: list[Submission], assignment: Assignment, source: str,
             reports: dict[str, Report], students: list[str] | None, regrade: bool) -> dict[str, str]:
    """The students this run grades, each with the ``graded_key`` of what is graded: those
    named (``students``), else with ``regrade`` everyone, else those whose key is not their
    report's (a new or changed file, a changed source, a file that cannot be read)."""
    keys = {s.student: graded_key(submitted, s.student, assignment, source) for s in found
            if s.problem is None and (students is None or s.student in students)}
    if students is not None or regrade:
        return keys
    return {s: key for s, key in keys.items() if not (key and s in reports and reports[s].graded_key == key)}


def ungraded_rows(assignment: Assignment, found: list[Submission], roster: set[str],
                  known: set[str]) -> dict[str, Report]:
    """The rows of the students with no report (``known``: those with one, or graded now), so
    the result files list the whole class: ``pending`` for a submission not graded yet (only
    other students were named), ``missing`` for a student of the roster with none."""
    rows = {s.student: failed(s.student, assignment, "handed in, not graded yet", "pending")
            for s in found if s.problem is None and s.student not in known}
    rows.update({student: failed(student, assignment, "no submission", "missing")
                 for student in sorted(roster - known - set(rows))})
    return rows


def stamp(report: Report, times: dict[str, tuple[str, str]]) -> Report:
    """Give ``report`` the time its submission was handed in and where that came from, as
    read on this run (``times``: ``intake.read_submission_time`` of each student handing in
    now), so a ``timestamp.txt`` put right since grading counts without grading again; a
    report with no submission in this run keeps its own."""
    if report.student in times:
        report.submitted_at, report.submitted_note = times[report.student]
    return report


def grade_assignment(assignment: str, submitted: str | Path, out: str | Path, jobs: int | None = None,
                     root: str | Path | None = None, limits: Limits = Limits(), notebook: str | None = None,
                     log=print, students: list[str] | None = None, regrade: bool = False,
                     roster: str | Path | None = None, private: bool = False, progress=None,
                     scheduler: str | None = None, due: str | None = None,
                     late_policy: str | None = None) -> list[Report]:
    """``llmcourse grade``: grade the submissions ``submitted/<student>/<assignment>/``.

    ``root`` is the course folder (default: ``find_course()``: ``$LLMCOURSE_COURSE`` or the
    current directory's course). Writes into ``out``: ``gradebook.db``, ``autograded/``,
    ``feedback/``, ``grades.csv``, ``report.json``, ``canvas.csv`` (Canvas's gradebook import)
    and ``questions.csv`` (points per student and grade cell). Safe to re-run: by default only new or
    changed submissions are graded (``graded_key``; a changed source regrades everyone);
    ``regrade`` grades everyone again, ``students`` only those (again, even if unchanged).
    ``grades.csv`` and ``report.json`` describe the whole class whoever is graded: earlier
    runs' students keep their rows, a roster student (the gradebook's students, to which
    ``roster``, a CSV file with a ``student`` or ``id`` column, adds its ids) with no
    submission is ``missing``, one handed in but never graded ``pending``. Results are
    readable by the instructor's group (files 0640, folders made 0750) unless ``private`` or
    the course's configuration (``private_results``) says the instructor's alone.
    ``progress``: a stream (the CLI's stderr) for a progress bar. Returns every report of
    the class.

    Each submission's time (nbgrader's ``timestamp.txt``, else the file's) is held against the
    assignment's due date with the course's late policy (``c.LLMCourse.due_dates`` and
    ``late_policy``; ``due`` and ``late_policy`` replace them for this run): the penalty is
    taken off the total in the results and in the gradebook, the cells keep their points. A
    setting that cannot be read is an error before anything is graded.

    ``scheduler`` (``tcp://HOST:PORT`` or ``local:N``, ``cluster.parse_scheduler``): each
    submission is graded by a worker of that Dask cluster instead of ``jobs`` processes here
    (giving both is an error); everything else, the writing of every file included, is done
    here as without it, so the results are the same.

    Refuses (``SandboxUnavailable``) before grading anyone when the sandbox cannot be used,
    unless ``limits.allow_unsandboxed``. One student's submission, however hostile, costs no
    other student a grade: a refused id or file, a crash, a hang or a failed feedback page is
    that student's 0 or note, and the result files are written after every student.
    """
    if scheduler is not None:
        from .cluster import check_scheduler  # imports Dask only when a cluster is asked for

        if jobs is not None:
            raise ValueError("--jobs and --scheduler: give one (with --scheduler, the cluster's workers "
                             "grade in parallel)")
        check_scheduler(scheduler)
    sandboxed = require_sandbox(limits)
    root, submitted, out = find_course(root), Path(submitted).resolve(), Path(out).resolve()
    source_dir = root / "solutions" / assignment
    if not source_dir.is_dir():
        raise FileNotFoundError(f"no assignment {assignment!r}: {source_dir} does not exist")
    if not submitted.is_dir():
        raise FileNotFoundError(f"submitted folder {submitted} does not exist")
    deadline, canvas = course_deadline(root, assignment, due, late_policy), canvas_columns(root, assignment)
    found = find_submissions(submitted, assignment)
    check_named_students(found, students, submitted, assignment)
    listed = read_roster(Path(roster)) if roster else []
    remove_stale()
    notebook = notebook or _only_notebook(source_dir)
    times = {s.student: read_submission_time(submitted, s.student, assignment, notebook)
             for s in found if s.problem is None}
    permissions = PRIVATE if private or private_results(root) else GROUP_READABLE
    make_folders(out, permissions.folder)
    config = course_config(root, out, submitted=submitted)
    # A new class's gradebook is the source's, from the cache when built before (nbgrader's
    # generate_assignment takes 4-6 s); an existing one is updated by nbgrader, grades kept.
    fresh = not (out / "gradebook.db").exists()
    db_url = (cached_gradebook if fresh else build_gradebook)(root, "solutions", assignment, out)
    trusted = load_assignment(db_url, assignment, notebook)
    source = gradebook_key(root, "solutions", assignment, release=False)
    reports = {r.student: r for r in read_report_json(out / "report.json", assignment)
               if r.status not in ("missing", "pending")}  # those two are worked out again
    keys = to_grade(submitted, found, trusted, source, reports, students, regrade)
    work = [(submitted, student, trusted, limits) for student in keys]
    reports.update(ungraded_rows(trusted, found, set(gradebook_roster(trusted, listed)), set(reports) | set(keys)))
    for report in reports.values():
        stamp(report, times)
    final = final_points(trusted, sorted(reports))
    jobs = max(1, jobs or os.cpu_count() or 1)
    unchanged = sum(s.problem is None for s in found) - len(work) if students is None else 0
    log(f"grading {len(work)} submissions of {assignment} "
        + (f"on the Dask cluster {scheduler}" if scheduler else f"with {jobs} job(s)")
        + (f" ({unchanged} unchanged since they were graded: --regrade grades them again)" if unchanged else "")
        + ("" if sandboxed else f" -- NOT {'' if bwrap_problem() else 'FULLY '}SANDBOXED ({sandbox_problem()}): "
                                  "results marked"))
    bar = tqdm(total=len(work), desc=f"grading {assignment}", unit="student", file=progress,
               disable=progress is None, dynamic_ncols=True)
    graded: list[Report] = []

    def say(line: str) -> None:
        """A log line that does not tear the progress bar."""
        with tqdm.external_write_mode(file=progress):
            log(line)

    def record(report: Report, executed: str | None) -> None:
        """The parent alone writes the gradebook and files, one student at a time."""
        stamp(report, times)
        if report.student in keys:
            report.graded_key = keys[report.student]
            try:
                save_grades(trusted, report)
                final.update(final_points(trusted, [report.student]))
            except Exception as e:  # noqa: BLE001 -- the gradebook refused this one: say so, go on
                report.notes.append(f"the gradebook could not record this submission: {type(e).__name__}: {e}")
                say(f"  {printable(report.student)}: GRADEBOOK ERROR {printable(str(e))}")
            graded.append(report)
            bar.set_postfix(failed=sum(r.status != "graded" for r in graded), left=len(work) - len(graded),
                            refresh=False)
            bar.update(1)
        if executed is not None:
            write_output(out / "autograded" / report.student / assignment / f"{notebook}.ipynb", executed.encode(),
                         permissions)
        say(f"  {printable(report.student)}: {report.score:g} / {report.max_score:g}"
            + (f" (rejected: {printable(report.reason)})" if report.status == "rejected" else "")
            + ("" if report.sandboxed or not report.sandbox_note else " [NOT SANDBOXED]"))
        reports[report.student] = report
        write_results(trusted, list(reports.values()), final, out, permissions, deadline, canvas)

    for s in found:
        if s.problem is not None:
            record(failed(printable(s.student, 100), trusted, f"not a valid student id: {s.problem}"), None)
    for index, ok, result in grading_results(work, jobs, scheduler, root, limits):
        student = work[index][1]
        if ok:
            record(*worker_result(result, student, trusted))
        else:  # the worker died or hung: this student only
            record(failed(student, trusted, f"internal grading error: {result}"), None)
    bar.close()
    try:  # before the feedback, which shows the gradebook's penalty
        save_lateness(trusted, deadline, {r.student: r.submitted_at for r in reports.values()})
    except Exception as e:  # noqa: BLE001 -- the results files have the penalties all the same
        log(f"the gradebook could not record the due date and late penalties: {type(e).__name__}: {e}")
    write_feedback(config, trusted, graded, out, permissions, log)
    stats = write_results(trusted, list(reports.values()), final, out, permissions, deadline, canvas)
    log(format_questions(stats))
    return sorted(reports.values(), key=lambda r: r.student)


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
