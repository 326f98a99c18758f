"""The class's result files: ``grades.csv``, ``report.json`` and the LMS exports
(``canvas.csv``, ``questions.csv``), and who may read what grading writes.

Written by the grading parent only, each file atomically (readers see the old file or the
new one). They are written again after every student, so a crash part-way leaves the
results of everyone graded so far, and all four always agree. All describe the whole class,
whoever was graded in this run: ``report.json`` keeps every report, which the next run reads
back (``read_report_json``) to grade only what changed. Points are the gradebook's
(``final``): a manual score overrides the grader's in a cell, and the total is their sum.
A late penalty (``deadlines``) is worked out again on every write, from when each submission
was handed in: it is taken off the total (``final_score``), never off a cell.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from ..files import atomic_write_bytes
from .deadlines import Deadline, Lateness
from .intake import printable, student_id_problem
from .records import Assignment, CanvasColumns, CellReport, Report

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CANVAS_STUDENT_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")


@dataclasses.dataclass(frozen=True)
class Permissions:
    """The modes of the files and folders grading writes for the instructor."""

    file: int
    folder: int


GROUP_READABLE = Permissions(0o640, 0o750)  # teaching assistants in the instructor's group read the results
PRIVATE = Permissions(0o600, 0o700)


def write_output(path: Path, data: bytes, permissions: Permissions) -> None:
    """Write one of grading's outputs atomically, with ``permissions`` (the folders it makes too)."""
    atomic_write_bytes(path, data, permissions.file, permissions.folder)


def csv_cell(value: str) -> str:
    """A text cell a spreadsheet shows as text: one that starts like a formula
    (``=HYPERLINK(...)``, ``+``, ``-``, ``@``, a tab or carriage return) gets a leading ``'``."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def sandbox_column(report: Report) -> str:
    """``sandboxed``, ``NOT SANDBOXED`` or, when none of its code ran, ``no code run``."""
    if not report.sandbox_note:
        return "no code run"
    return "sandboxed" if report.sandboxed else "NOT SANDBOXED"


def cell_points(assignment: Assignment, report: Report, final: dict[str, dict[str, float]]) -> dict[str, float]:
    """A student's points per grade cell: the gradebook's (``final``, where a manual score
    overrides the grader's), else the report's own (a student the gradebook does not have)."""
    given = final.get(report.student) or {c.grade_id: c.score for c in report.cells}
    return {c.name: given.get(c.name, 0.0) for c in assignment.grade_cells}


def write_results(assignment: Assignment, reports: list[Report], final: dict[str, dict[str, float]], out: Path,
                  permissions: Permissions, deadline: Deadline = Deadline(),
                  canvas: CanvasColumns = CanvasColumns()) -> list[dict]:
    """Write ``out/grades.csv``, ``out/report.json``, ``out/canvas.csv`` and
    ``out/questions.csv`` of the whole class, late penalties worked out against ``deadline``;
    returns the statistics per grade cell written in the report (``question_stats``)."""
    reports = sorted(reports, key=lambda r: r.student)
    points = {r.student: cell_points(assignment, r, final) for r in reports}
    late = {r.student: deadline.lateness(r.submitted_at, sum(points[r.student].values()), assignment.max_score)
            for r in reports}
    stats = question_stats(assignment, reports, points)
    write_output(out / "grades.csv", grades_csv(assignment, reports, points, late), permissions)
    write_output(out / "report.json", report_json(assignment, reports, points, late, stats, deadline), permissions)
    write_output(out / "canvas.csv", canvas_csv(assignment, reports, points, late, canvas), permissions)
    write_output(out / "questions.csv", questions_csv(assignment, reports, points), permissions)
    return stats


def csv_bytes(rows: list[list[str]]) -> bytes:
    """``rows`` as a CSV file's bytes (Unix line ends), as every result file here is written."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


def final_score(points: dict[str, float], lateness: Lateness) -> float:
    """A student's total after the late penalty: what the gradebook of the LMS gets."""
    return sum(points.values()) - lateness.penalty


def late_columns(lateness: Lateness) -> list[str]:
    """``late`` (yes, no, or "" with no due date or no time known) and ``hours_late``."""
    if lateness.late is None:
        return ["", ""]
    return ["yes" if lateness.late else "no", f"{round(lateness.hours_late, 2):g}"]


def grades_csv(assignment: Assignment, reports: list[Report], points: dict[str, dict[str, float]],
               late: dict[str, Lateness]) -> bytes:
    """One row per student: the points of every grade cell, their total, the late penalty and
    the total after it, how grading ended, and when the submission was handed in."""
    cells = [c.name for c in assignment.grade_cells]
    rows = [["student", "assignment", *cells, "score", "max_score", "late_penalty", "final_score", "status",
             "reason", "sandbox", "submitted_at", "late", "hours_late"]]
    for report in reports:
        mine, lateness = points[report.student], late[report.student]
        rows.append([csv_cell(report.student), assignment.name, *(f"{mine[c]:g}" for c in cells),
                     f"{sum(mine.values()):g}", f"{assignment.max_score:g}", f"{lateness.penalty:g}",
                     f"{final_score(mine, lateness):g}", report.status, csv_cell(report.reason),
                     sandbox_column(report), report.submitted_at, *late_columns(lateness)])
    return csv_bytes(rows)


def report_json(assignment: Assignment, reports: list[Report], points: dict[str, dict[str, float]],
                late: dict[str, Lateness], stats: list[dict], deadline: Deadline) -> bytes:
    """Every report, whole (``dataclasses.asdict``), with the gradebook's points, total and
    maximum beside it, how late it was and the total after the late penalty; the due date,
    the late policy, and the class's statistics per grade cell (``question_stats``)."""
    students = [{**asdict(r), "points": points[r.student], "total": sum(points[r.student].values()),
                 "max_score": assignment.max_score, "late": late[r.student].late,
                 "hours_late": late[r.student].hours_late, "late_penalty": late[r.student].penalty,
                 "final_total": final_score(points[r.student], late[r.student])} for r in reports]
    return json.dumps({"assignment": assignment.name, "notebook": assignment.notebook,
                       "max_score": assignment.max_score,
                       "due": deadline.due.isoformat() if deadline.due else None,
                       "late_policy": str(deadline.policy), "students": students,
                       "questions": stats}, indent=1).encode()


def canvas_csv(assignment: Assignment, reports: list[Report], points: dict[str, dict[str, float]],
               late: dict[str, Lateness], canvas: CanvasColumns) -> bytes:
    """The class's scores as Canvas's gradebook import reads them: the five student columns
    (Canvas finds a student by ``ID``, then ``SIS User ID``, then ``SIS Login ID``; the
    course's id goes into ``canvas.id_column``), one column for the assignment, a ``Points
    Possible`` row, then each student's total after the late penalty (0 for one with no
    submission, as in ``grades.csv``). A submission not graded yet (``pending``) has no row,
    so Canvas keeps what it has; nor has a folder whose name could be no student's (refused
    as a student id)."""
    rows = [[*CANVAS_STUDENT_COLUMNS, csv_cell(canvas.assignment_column or assignment.name)],
            ["    Points Possible", *[""] * (len(CANVAS_STUDENT_COLUMNS) - 1), f"{assignment.max_score:g}"]]
    where = CANVAS_STUDENT_COLUMNS.index(canvas.id_column)
    for report in reports:
        if report.status == "pending" or student_id_problem(report.student):
            continue
        row = [csv_cell(report.student), "", "", "", ""]
        row[where] = csv_cell(report.student)
        rows.append([*row, f"{final_score(points[report.student], late[report.student]):g}"])
    return csv_bytes(rows)


def questions_csv(assignment: Assignment, reports: list[Report], points: dict[str, dict[str, float]]) -> bytes:
    """One row per student and grade cell, for an LMS or a spreadsheet that takes scores per
    question: the gradebook's points, the maximum, how grading ended, and below full marks
    why (``failure_line``, which may quote the submission)."""
    rows = [["student", "assignment", "grade_id", "points", "max_points", "status", "failure"]]
    for report in reports:
        for cell in assignment.grade_cells:
            got = points[report.student][cell.name]
            failure = failure_line(report, cell.name) if got < cell.max_score else ""
            rows.append([csv_cell(report.student), assignment.name, cell.name, f"{got:g}",
                         f"{cell.max_score:g}", report.status, csv_cell(failure)])
    return csv_bytes(rows)


def question_stats(assignment: Assignment, reports: list[Report], points: dict[str, dict[str, float]]) -> list[dict]:
    """Per grade cell, over the graded submissions: the mean score, the share with full marks,
    and the most frequent failure (``failure_line`` of each student below full marks) with
    how many students it was said to, so an instructor sees which exercise the class
    struggled with, and why."""
    graded = [r for r in reports if r.status == "graded"]
    stats = []
    for cell in assignment.grade_cells:
        scores = [points[r.student][cell.name] for r in graded]
        failures = Counter(failure_line(r, cell.name) for r in graded if points[r.student][cell.name] < cell.max_score)
        failures.pop("", None)
        stats.append({"grade_id": cell.name, "max_score": cell.max_score, "graded": len(graded),
                      "mean": sum(scores) / len(scores) if scores else None,
                      "full_marks": sum(s >= cell.max_score for s in scores) / len(scores) if scores else None,
                      "failure": failures.most_common(1)[0][0] if failures else "",
                      "failure_count": failures.most_common(1)[0][1] if failures else 0})
    return stats


def failure_line(report: Report, grade_id: str) -> str:
    """One line saying why a cell of a report failed, in words that students with the same
    mistake share: its first "likely cause:" (a mistake's hint) or "note:" (e.g. a graded
    function it calls fails), else the evidence under its first failing case, else its first
    line that is not a passing case. A message's first line only names the check
    ("ch3.causal_mask (visible): FAILED"); "" when nothing was said."""
    messages = next((c.messages for c in report.cells if c.grade_id == grade_id), [])
    lines = [line.strip() for m in messages for line in m.splitlines()[1:] if line.strip()]
    evidence = [after for line, after in zip(lines, lines[1:]) if line.startswith("FAIL")]
    for candidates in ([line for line in lines if line.startswith(("likely cause:", "note:"))], evidence,
                       [line for line in lines if not line.startswith("ok ")],
                       [m.strip().splitlines()[0] for m in messages if m.strip()]):
        if candidates:
            return candidates[0]
    return ""


def format_questions(stats: list[dict]) -> str:
    """The short table ``llmcourse grade`` ends with: per grade cell, the mean, the share with
    full marks and the most frequent failure (made printable: it may quote a submission)."""
    width = max([len("grade cell"), *(len(s["grade_id"]) for s in stats)])
    lines = [f"{'grade cell':<{width}}  {'mean':>9}  {'full':>4}  most frequent failure (students)"]
    for s in stats:
        mean = "-" if s["mean"] is None else f"{s['mean']:.2g}/{s['max_score']:g}"
        full = "-" if s["full_marks"] is None else f"{s['full_marks']:.0%}"
        failure = f"{printable(s['failure'], 90)} ({s['failure_count']})" if s["failure"] else ""
        lines.append(f"{s['grade_id']:<{width}}  {mean:>9}  {full:>4}  {failure}".rstrip())
    return "\n".join(lines)


def read_report_json(path: Path, assignment: str) -> list[Report]:
    """The reports an earlier run wrote to ``path`` for ``assignment``: none when there is no
    such file, or it holds another assignment's, or it cannot be read as ours (then everyone
    is graded again; the file is rewritten whole)."""
    try:
        saved = json.loads(path.read_bytes())
        if saved["assignment"] != assignment:
            return []
        return [report_from(entry) for entry in saved["students"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def report_from(entry: dict) -> Report:
    """A ``Report`` back from its entry in ``report.json`` (the points and totals beside it are
    the gradebook's, read again on every run)."""
    known = {f.name for f in dataclasses.fields(Report)}
    fields = {k: v for k, v in entry.items() if k in known}
    fields["cells"] = [CellReport(**c) for c in fields.get("cells", [])]
    return Report(**fields)
