"""The class's result files: ``grades.csv``, ``report.json`` and the autograded notebooks.

Written by the grading parent only, each file atomically (readers see the old file or the
new one). ``grades.csv`` and ``report.json`` are written again after every student, so a
crash part-way leaves the results of everyone graded so far.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

from ..files import atomic_write_bytes
from .records import Assignment, Report

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A text cell a spreadsheet shows as text: one that starts like a formula
    (``=HYPERLINK(...)``, ``+``, ``-``, ``@``, a tab or carriage return) gets a leading ``'``."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def sandbox_column(report: Report) -> str:
    """``sandboxed``, ``NOT SANDBOXED`` or, when none of its code ran, ``no code run``."""
    if not report.sandbox_note:
        return "no code run"
    return "sandboxed" if report.sandboxed else "NOT SANDBOXED"


def write_csv(assignment: Assignment, reports: list[Report], totals: dict[str, float], path: Path) -> None:
    """One row per student: the points of every grade cell, the total, and how grading ended.
    ``totals``: the gradebook's (manual scores count); a student missing there gets the report's."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    cells = [c.name for c in assignment.grade_cells]
    writer.writerow(["student", "assignment", *cells, "score", "max_score", "status", "reason", "sandbox"])
    for report in sorted(reports, key=lambda r: r.student):
        points = {c.grade_id: c.score for c in report.cells}
        total = totals.get(report.student, report.score)
        writer.writerow([csv_cell(report.student), assignment.name, *(f"{points.get(c, 0.0):g}" for c in cells),
                         f"{total:g}", f"{assignment.max_score:g}", report.status, csv_cell(report.reason),
                         sandbox_column(report)])
    atomic_write_bytes(path, buffer.getvalue().encode())


def write_report_json(reports: list[Report], path: Path) -> None:
    """Every report, whole, for scripts (plain JSON: ``dataclasses.asdict``)."""
    atomic_write_bytes(path, json.dumps([asdict(r) for r in reports], indent=1).encode())
