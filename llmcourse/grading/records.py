"""What grading knows and finds, as plain data: the trusted assignment and each submission's report.

Every other grading module passes these around; none of them holds behaviour beyond a sum.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CheckCall:
    """``check("ch3.causal_mask", causal_mask, kind="hidden")`` in a trusted test cell
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
    status: str = "graded"  # or "rejected"; in a class, also "missing" (no submission) or "pending"
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    cells: list[CellReport] = field(default_factory=list)
    sandboxed: bool = False  # every run of its code was inside the sandbox
    sandbox_note: str = ""
    seconds: float = 0.0
    graded_key: str = ""  # in a class: sha256 of the file graded and the source (grade.graded_key)
    submitted_at: str = ""  # in a class: when it was handed in, ISO 8601 UTC ("" unknown; intake.read_submission_time)
    submitted_note: str = ""  # where that time came from, when not from nbgrader's timestamp.txt

    @property
    def score(self) -> float:
        return sum(c.score for c in self.cells)

    @property
    def max_score(self) -> float:
        return sum(c.max_score for c in self.cells)

    def reject(self, assignment: Assignment, reason: str, status: str = "rejected") -> Report:
        """Mark the whole submission ungraded: 0 for every cell, with ``reason`` (said to the student)."""
        self.status, self.reason = status, reason
        self.cells = [CellReport(c.name, 0.0, c.max_score, c.hidden, [f"not graded: {reason}"])
                      for c in assignment.grade_cells]
        return self


@dataclass(frozen=True)
class CanvasColumns:
    """How the Canvas gradebook import (``results.canvas_csv``) names a student and the
    assignment: the Canvas column that holds the course's student ids (``SIS Login ID``, ``SIS
    User ID`` or Canvas's numeric ``ID``), and the assignment's column ("" for the assignment's
    own name, which Canvas makes a new assignment of; ``Name (12345)`` for an existing one)."""

    id_column: str = "SIS Login ID"
    assignment_column: str = ""


class Rejected(Exception):
    """A submission that cannot be graded at all (the reason is for the student)."""
