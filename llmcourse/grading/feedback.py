"""Feedback for students: nbgrader's HTML, hidden tests removed, trusted results shown.

nbgrader's default feedback shows hidden tests and their tracebacks (nbgrader issue #917).
The course's feedback runs ``BlankHiddenTracebacks`` and then ``ClearHiddenTests``: a cell
that held hidden tests keeps only the grader's trusted message (which hidden check failed
and why), never its code or its traceback.
"""
from __future__ import annotations

import copy
import html
import tempfile
from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor

from ..weights import atomic_write_bytes
from .records import Assignment, Report

TRUSTED_KEY = "llmcourse_trusted"
HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"


def trusted_output(text: str) -> nbformat.NotebookNode:
    """A display output carrying the trusted grader's message (kept in every feedback)."""
    return nbformat.v4.new_output(
        "display_data", data={"text/plain": text, "text/html": f"<pre>{html.escape(text)}</pre>"},
        metadata={TRUSTED_KEY: True})


def is_trusted(output) -> bool:
    return bool(output.get("metadata", {}).get(TRUSTED_KEY))


class BlankHiddenTracebacks(NbGraderPreprocessor):
    """In cells holding hidden tests, drop every output but the trusted grader's message."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and HIDDEN_BEGIN in cell.source:
            cell.outputs = [out for out in cell.outputs if is_trusted(out)]
        return cell, resources


def rejection_html(student: str, assignment: str, reason: str,
                   heading: str = "This submission could not be graded (score 0):") -> str:
    """The feedback page of a submission that could not be graded at all (or, with another
    ``heading``, whose page could not be made)."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(assignment)} feedback"
            f"</title></head><body><h1>{html.escape(assignment)}: {html.escape(student)}</h1>"
            f"<p><strong>{html.escape(heading)}</strong></p>"
            f"<pre>{html.escape(reason)}</pre></body></html>\n")


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


def write_feedback(config, assignment: Assignment, reports: list[Report], out: Path, log=print) -> None:
    """nbgrader's feedback HTML for graded submissions, a short page for rejected ones.

    nbgrader writes into a temporary folder; each page is then moved into place atomically.
    A page that cannot be made costs only that student: they get a page saying so.
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
            if not result["success"] or not page.is_file():
                report.notes.append(f"feedback failed: {str(result.get('error', ''))[-300:]}")
                log(f"  feedback for {report.student} failed")
                atomic_write_bytes(target, rejection_html(
                    report.student, assignment.name, f"graded: {report.score:g} / {report.max_score:g} points",
                    heading="The feedback page could not be made; your scores are in the gradebook.").encode())
                continue
            atomic_write_bytes(target, page.read_bytes())
