"""Feedback for students: nbgrader's HTML, hidden tests removed, trusted results shown.

nbgrader's default feedback shows hidden tests and their tracebacks (nbgrader issue #917).
The course's feedback runs ``BlankHiddenTracebacks`` and then ``ClearHiddenTests``: a cell
that held hidden tests keeps only the grader's trusted message (which hidden check failed
and why), never its code or its traceback.
"""
from __future__ import annotations

import html

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor

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


def rejection_html(student: str, assignment: str, reason: str) -> str:
    """The feedback page of a submission that could not be graded at all."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(assignment)} feedback"
            f"</title></head><body><h1>{html.escape(assignment)}: {html.escape(student)}</h1>"
            f"<p><strong>This submission could not be graded (score 0):</strong></p>"
            f"<pre>{html.escape(reason)}</pre></body></html>\n")
