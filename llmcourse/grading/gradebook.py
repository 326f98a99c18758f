"""The nbgrader gradebook: the trusted assignment read from it, and the scores written into it.

Only the grading parent calls these, one at a time (the gradebook has a single writer).
The instructor's source becomes the gradebook through nbgrader's ``generate_assignment``;
its test cells' ``check(...)`` calls say what each grade cell checks. ``llmcourse check``
takes a copy of a cached gradebook instead (``cached_gradebook``): building one takes seconds,
and it changes only when the course's notebooks, its configuration or this code do.
"""
from __future__ import annotations

import ast
import copy
import hashlib
import warnings
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import nbformat

from ..files import atomic_write_bytes, cache_dir
from .deadlines import Deadline
from .feedback import HIDDEN_BEGIN
from .nbconfig import course_config, ensure_tools_on_path
from .records import Assignment, CheckCall, GradeCell, Report
from .sandbox import scratch_folder


def parse_check_calls(source: str) -> tuple[CheckCall, ...]:
    """The ``check(...)`` calls of a test cell, in order (nbgrader markers are comments)."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "check"
                and node.args and isinstance(node.args[0], ast.Constant)):
            keywords = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            calls.append(CheckCall(node.args[0].value, keywords.get("kind", "visible"), keywords.get("answer")))
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
        for name, src in sources.items():
            meta.setdefault(name, {"grade": False})
            meta[name].setdefault("solution", False)
            meta[name]["locked"] = bool(src.locked)
        checksums = {name: accepted_checksums(src, meta[name]) for name, src in sources.items()
                     if src.locked and src.checksum}
    check_calls(grade_cells, f"{assignment}/{notebook}")
    return Assignment(assignment, notebook, db_url, tuple(grade_cells), solutions, meta, checksums)


def accepted_checksums(source_cell, meta: dict) -> frozenset[str]:
    """The checksums an unedited locked cell can have: the source's, and the release's,
    whose hidden tests nbgrader cleared (a student's copy has no hidden tests, so it must
    not be reported as edited for that)."""
    from nbgrader.preprocessors import ClearHiddenTests
    from nbgrader.utils import compute_checksum

    make = nbformat.v4.new_code_cell if source_cell.cell_type == "code" else nbformat.v4.new_markdown_cell
    cell = make(source_cell.source, metadata={"nbgrader": {"grade_id": source_cell.name, **meta}})
    released, _ = ClearHiddenTests().preprocess_cell(copy.deepcopy(cell), {}, 0)  # as the release has it
    return frozenset({source_cell.checksum, compute_checksum(cell), compute_checksum(released)})


def check_calls(grade_cells: list[GradeCell], where: str) -> None:
    """The instructor's source, checked before anyone is graded: known check ids, and every
    concept question's hidden test giving its key."""
    from .registry import get_check

    for cell in grade_cells:
        for call in cell.calls:
            check = get_check(call.check_id)
            if check.choices and call.kind == "hidden" and call.answer not in check.choices:
                raise ValueError(f"{where}, cell {cell.name!r}: the hidden test of {call.check_id} must give "
                                 f"its key, answer= one of {', '.join(map(repr, check.choices))}; "
                                 f"got {call.answer!r}")


def build_gradebook(root: Path, source: str, assignment: str, grading_dir: Path,
                    release_dir: Path | None = None) -> str:
    """Create or update ``grading_dir/gradebook.db`` from ``root/source/assignment`` with
    nbgrader's ``generate_assignment``, which writes the release into ``release_dir``
    (default: a throw-away folder); returns its URL."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    ensure_tools_on_path()
    grading_dir.mkdir(parents=True, exist_ok=True)
    with scratch_folder("release") as scratch:
        config = course_config(root, grading_dir, source=source, release=release_dir or scratch)
        api = NbGraderAPI(CourseDirectory(config=config), config=config)
        result = api.generate_assignment(assignment, force=True, create=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{result.get('error', '')}"
                           f"\n{result.get('log', '')}")
    return config.CourseDirectory.db_url


def build_release_gradebook(root: Path, source: str, assignment: str, grading_dir: Path) -> str:
    """The gradebook of the release nbgrader makes from ``root/source/assignment``, the notebooks
    ``llmcourse release`` writes to exercises/ (no hidden tests, no answers). The release is
    regenerated into a scratch folder, so the copy in exercises/, which a student edits in
    place, is never the source."""
    with scratch_folder("rerelease") as tmp:
        build_gradebook(root, source, assignment, Path(tmp) / "source", release_dir=Path(tmp) / "release")
        return build_gradebook(root, str(Path(tmp) / "release"), assignment, grading_dir)


CACHE_HEADER = b"llmcourse gradebook cache"


def cached_gradebook(root: Path, source: str, assignment: str, grading_dir: Path, release: bool = False) -> str:
    """``grading_dir/gradebook.db`` (where there is none yet), as ``build_gradebook`` would make it (with
    ``release``: ``build_release_gradebook``), copied from the cache when nothing it depends on
    changed (``gradebook_key``), else built and cached; returns its URL.

    The entry, ``<cache>/gradebooks/<assignment>-[release-of-]<source>-<key>.db``, holds the
    gradebook with its sha256: a damaged or unreadable one is rebuilt. nbgrader opens only the
    copy, never the entry, so concurrent checks share it safely.
    """
    label = f"{assignment}-{'release-of-' if release else ''}{source}"
    entry = cache_dir() / "gradebooks" / f"{label}-{gradebook_key(root, source, assignment, release)}.db"
    db = Path(grading_dir) / "gradebook.db"
    data = read_cache_entry(entry)
    if data is not None:
        atomic_write_bytes(db, data)  # a class's gradebook starts here: never half written
        return course_config(root, grading_dir).CourseDirectory.db_url
    build = build_release_gradebook if release else build_gradebook
    db_url = build(root, source, assignment, Path(grading_dir))
    write_cache_entry(entry, db.read_bytes(), superseded=f"{label}-{'?' * 64}.db")
    return db_url


def gradebook_key(root: Path, source: str, assignment: str, release: bool) -> str:
    """sha256 of everything the gradebook of ``root/source/assignment`` is made from: its
    notebooks (names and bytes), the course's ``nbgrader_config.py``, the code that builds it
    (this module and ``nbconfig``), nbgrader's version, and whether it is the release's."""
    here = Path(__file__)
    files = [here, here.with_name("nbconfig.py"), Path(root) / "nbgrader_config.py",
             *sorted((Path(root) / source / assignment).glob("*.ipynb"))]
    parts = [str(release).encode(), version("nbgrader").encode()]
    for file in files:
        parts += [file.name.encode(), file.read_bytes()]
    digest = hashlib.sha256()
    for part in parts:  # length-prefixed, so no two different inputs run together alike
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def read_cache_entry(entry: Path) -> bytes | None:
    """The gradebook a cache entry holds, or None when there is none or it is damaged (unreadable,
    not an entry, or its sha256 does not match)."""
    try:
        header, digest, data = entry.read_bytes().split(b"\n", 2)
    except (OSError, ValueError):
        return None
    if header != CACHE_HEADER or digest != hashlib.sha256(data).hexdigest().encode():
        return None
    return data


def write_cache_entry(entry: Path, data: bytes, superseded: str) -> None:
    """Store ``data`` with its sha256 in ``entry`` atomically, and remove the entries it replaces
    (the glob ``superseded`` beside it: the same assignment with another key). A cache that
    cannot be written is left alone: it only saves time."""
    try:
        atomic_write_bytes(entry, b"\n".join([CACHE_HEADER, hashlib.sha256(data).hexdigest().encode(), data]))
        for old in entry.parent.glob(superseded):
            if old != entry:
                old.unlink(missing_ok=True)
    except OSError:
        pass


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


def save_lateness(assignment: Assignment, deadline: Deadline, submitted_at: dict[str, str]) -> None:
    """Write the due date, each submission's time (``submitted_at``: student -> ISO 8601, as
    ``Report`` keeps it) and its late penalty on the gradebook's total into nbgrader's
    gradebook (``Assignment.duedate``, ``SubmittedAssignment.timestamp``,
    ``SubmittedNotebook.late_submission_penalty``), so that ``nbgrader export`` and
    formgrader give the totals ``grades.csv`` gives. Students with no submission in the
    gradebook are skipped. Done on every run: a manual score or a new due date changes the
    penalty."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(assignment.db_url) as gb:
        gb.find_assignment(assignment.name).duedate = _gradebook_time(deadline.due)
        for student, when in submitted_at.items():
            try:
                notebook = gb.find_submission_notebook(assignment.notebook, assignment.name, student)
            except MissingEntry:
                continue
            notebook.assignment.timestamp = _gradebook_time(datetime.fromisoformat(when) if when else None)
            penalty = deadline.lateness(when, notebook.score, assignment.max_score).penalty
            notebook.late_submission_penalty = penalty or None  # None when on time, as nbgrader's own
        gb.db.commit()


def _gradebook_time(moment: datetime | None) -> datetime | None:
    """A time as nbgrader's gradebook keeps it: naive, in UTC."""
    return None if moment is None else moment.astimezone(timezone.utc).replace(tzinfo=None)


def final_points(assignment: Assignment, students: list[str]) -> dict[str, dict[str, float]]:
    """The gradebook's score of every grade cell, per student (a manual score overrides the
    automatic one, as nbgrader counts it), for those of ``students`` with a submission there."""
    from nbgrader.api import Gradebook, MissingEntry

    points = {}
    with Gradebook(assignment.db_url) as gb:
        for student in students:
            try:
                notebook = gb.find_submission_notebook(assignment.notebook, assignment.name, student)
            except MissingEntry:
                continue
            points[student] = {g.name: float(g.score) for g in notebook.grades}
    return points


def gradebook_roster(assignment: Assignment, add: list[str] = ()) -> list[str]:
    """The students nbgrader's gradebook knows (its students table: the course's roster),
    after adding the ids ``add`` (as ``nbgrader db student import`` does), so later runs and
    formgrader know them too."""
    from nbgrader.api import Gradebook

    with Gradebook(assignment.db_url) as gb:
        for student in add:
            gb.update_or_create_student(student)
        return sorted(s.id for s in gb.students)
