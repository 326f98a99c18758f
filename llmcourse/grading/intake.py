"""Submissions are untrusted files: finding them, reading them, and putting the trusted cells back.

A class is nbgrader's layout, ``submitted/<student>/<assignment>/<notebook>.ipynb``. Every
name in it comes from students: a student id is accepted only if it is a plain name
(``valid_student_id``), and a notebook only if it is a regular file inside its student's
folder (``untrusted.read_untrusted``: no symlink anywhere on the way, no FIFO, device or
hard link, at most ``MAX_NOTEBOOK_BYTES``). What is refused is graded 0 with the reason.
A roster (``read_roster``), the instructor's list of ids, is held to the same rule. The
time a submission was handed in (``read_submission_time``) is read from the same folder,
as warily.
"""
from __future__ import annotations

import copy
import csv
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from .deadlines import parse_time
from .records import Assignment, Rejected
from .untrusted import MissingFile, UntrustedFile, read_untrusted, untrusted_mtime

MAX_NOTEBOOK_BYTES = 32 * 2**20  # a notebook with plots is a few MB; more is refused, not read
MAX_ID_LENGTH = 100
MAX_TIMESTAMP_BYTES = 200  # nbgrader writes one line of about 32 characters
TIMESTAMP_FILE = "timestamp.txt"  # nbgrader's exchange writes it beside the submitted notebooks
ID_PUNCTUATION = "_.-@"


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe to show in a terminal or a log: control characters (escape codes, new
    lines) replaced by ``?``, cut at ``limit`` characters."""
    cleaned = "".join("?" if unicodedata.category(ch).startswith("C") else ch for ch in text[:limit])
    return cleaned + ("..." if len(text) > limit else "")


def student_id_problem(name: str) -> str | None:
    """Why ``name`` cannot be a student id, or None. An allowlist: letters and digits, then
    also ``_ . - @``; so no glob characters (nbgrader matches ids as globs), no ``/``, no
    control characters, no leading dot, dash or ``=`` (a formula in a spreadsheet)."""
    if not name:
        return "an empty student id"
    if len(name) > MAX_ID_LENGTH:
        return f"a student id longer than {MAX_ID_LENGTH} characters"
    if not name[0].isalnum():
        return "a student id must start with a letter or a digit"
    bad = sorted({ch for ch in name if not (ch.isalnum() or ch in ID_PUNCTUATION)})
    if bad:
        return (f"a student id may hold only letters, digits and {' '.join(ID_PUNCTUATION)}; "
                f"this one has {' '.join(repr(ch) for ch in bad)[:100]}")
    return None


@dataclass(frozen=True)
class Submission:
    """One student's folder in ``submitted/``: ``problem`` says why it cannot be graded."""

    student: str
    problem: str | None = None


def find_submissions(submitted: Path, assignment: str) -> list[Submission]:
    """Every entry of ``submitted/`` that holds (or claims to hold) ``assignment``, sorted by
    name; refused ids are listed too, with the reason, so nobody disappears silently."""
    found = []
    for entry in sorted(Path(submitted).iterdir(), key=lambda p: p.name):
        if entry.is_symlink():
            found.append(Submission(entry.name, "the student folder is a symlink"))
            continue
        if not entry.is_dir():
            continue
        if not (entry / assignment).exists() and not (entry / assignment).is_symlink():
            continue  # this student did not hand in this assignment
        found.append(Submission(entry.name, student_id_problem(entry.name)))
    return found


def read_roster(path: Path) -> list[str]:
    """The student ids of a roster, a CSV file with a ``student`` or ``id`` column (the
    instructor's, e.g. exported from the LMS); a ``ValueError`` names a missing column or the
    line of an id that could not be a student's (``student_id_problem``)."""
    with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet's export starts with a BOM
        reader = csv.DictReader(f)
        try:
            rows = list(reader)
        except csv.Error as e:
            raise ValueError(f"roster {path}, line {reader.line_num}: not CSV ({e})") from None
    columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
    column = columns.get("student", columns.get("id"))
    if column is None:
        raise ValueError(f"roster {path}: no 'student' or 'id' column (its columns: "
                         f"{', '.join(map(repr, reader.fieldnames or [])) or 'none'})")
    ids = []
    for line, row in enumerate(rows, start=2):  # after the header; blank lines are not rows
        student = (row.get(column) or "").strip()
        if not student:
            continue
        problem = student_id_problem(student)
        if problem:
            raise ValueError(f"roster {path}: {printable(repr(student), 100)} (row {line - 1}) is not a valid "
                             f"student id: {problem}")
        ids.append(student)
    return ids


def read_submitted_notebook(submitted: Path, student: str, assignment: str, notebook: str) -> bytes:
    """The bytes of ``submitted/student/assignment/notebook.ipynb``, or ``Rejected`` saying why."""
    try:
        return read_untrusted(submitted, [student, assignment, f"{notebook}.ipynb"], MAX_NOTEBOOK_BYTES)
    except MissingFile as e:
        others = other_notebooks(Path(submitted) / student / assignment)
        if others:
            raise Rejected(f"found {', '.join(others)}, expected {notebook}.ipynb") from None
        raise Rejected(f"the submitted file was refused: {e}") from None
    except UntrustedFile as e:
        raise Rejected(f"the submitted file was refused: {e}") from None


def read_submission_time(submitted: Path, student: str, assignment: str, notebook: str) -> tuple[str, str]:
    """When ``student`` handed ``assignment`` in: ``(time, note)``, the time ISO 8601 in UTC
    ("" when none can be known) and a note saying where it came from when not from nbgrader's
    ``timestamp.txt`` in the submission's folder (as ``nbgrader collect``/``zip_collect``
    leave it; read with nbgrader's parser, ``deadlines.parse_time``). Without one, or when it
    cannot be read (a symlink, too large, not a time), the notebook file's modification time.

    Both are the student's or the collector's files: read as any submitted file is
    (``read_untrusted``, at most ``MAX_TIMESTAMP_BYTES``), and never raises for them."""
    folder = [student, assignment]
    try:
        text = read_untrusted(submitted, [*folder, TIMESTAMP_FILE], MAX_TIMESTAMP_BYTES).decode("utf-8")
        return parse_time(text).isoformat(), ""
    except MissingFile:
        why = f"no {TIMESTAMP_FILE}"
    except (UntrustedFile, UnicodeDecodeError, ValueError) as e:  # a refused file, not text, not a time
        why = f"{TIMESTAMP_FILE} unreadable: {printable(str(e), 150)}"
    try:
        mtime = untrusted_mtime(submitted, [*folder, f"{notebook}.ipynb"])
    except UntrustedFile as e:
        return "", f"{why}, and the notebook's time cannot be read: {printable(str(e), 150)}"
    return datetime.fromtimestamp(mtime, timezone.utc).isoformat(), f"{why}; used the file's time"


def other_notebooks(folder: Path, limit: int = 5) -> list[str]:
    """The names (made printable) of the notebooks in a student's assignment folder, at most
    ``limit``: a notebook handed in under another name is said, not silently ignored. Only
    names are read, never a file, and nothing is followed."""
    if folder.is_symlink() or not folder.is_dir():
        return []
    names = sorted(e.name for e in folder.iterdir() if e.name.endswith(".ipynb") and not e.name.startswith("."))
    more = [f"and {len(names) - limit} more"] if len(names) > limit else []
    return [printable(n, 100) for n in names[:limit]] + more


def read_submission(data: bytes, name: str) -> nbformat.NotebookNode:
    """Parse and validate the notebook file's bytes, or raise ``Rejected`` saying why."""
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # NotJSONError is a ValueError
        raise Rejected(f"{name} is not a readable notebook (invalid JSON?): {str(e)[:200]}") from None
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        raise Rejected(f"{name} is not a valid notebook: {e.message[:200]}") from None
    return nb


def check_metadata(nb, assignment: Assignment) -> list[str]:
    """Compare the cells' nbgrader metadata with the source; raise ``Rejected`` when a graded
    cell was added, renamed or had its metadata changed. Returns notes for the report."""
    from nbgrader.utils import compute_checksum

    notes, seen = [], set()
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        if not meta:
            continue  # a cell the student added: scoring.without_unrunnable_added_cells notes it
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
        if trusted and compute_checksum(cell) not in trusted:
            notes.append(f"cell {grade_id!r} was edited; the grader restored it from the source")
    for cell in assignment.grade_cells:
        if cell.name not in seen:
            notes.append(f"test cell {cell.name!r} was missing; the grader put it back")
    return notes


def restore(nb, assignment: Assignment, student: str):
    """Put the trusted source back with nbgrader's own preprocessors (as ``autograde`` does)."""
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearOutput,
        DeduplicateIds,
        OverwriteCells,
        OverwriteKernelspec,
    )

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
    """The cells the answer runner executes, in order: answer cells, given (locked) code
    cells, and code cells the student added (a helper used by an answer is the student's
    code; nbgrader runs those cells too). Test cells are the grader's, never run from here."""
    cells = []
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code":
            continue
        if not meta:
            if cell.source.strip():
                cells.append({"id": f"cell {index + 1}", "source": cell.source, "solution": True,
                              "added": True})
            continue
        if meta.get("grade") and not meta.get("solution"):
            continue
        if meta.get("solution") or meta.get("locked"):
            cells.append({"id": meta.get("grade_id", f"cell{index}"), "source": cell.source,
                          "solution": bool(meta.get("solution"))})
    return cells


def without_hidden_tests(nb) -> nbformat.NotebookNode:
    """The notebook the feedback run executes: hidden tests (and the answer keys in them)
    removed, as code running there can read the notebook's file and print it into the
    feedback. Nothing is lost: hidden checks are scored by the answer runner, not there."""
    from nbgrader.preprocessors import ClearHiddenTests

    return ClearHiddenTests().preprocess(copy.deepcopy(nb), {})[0]
