"""The nbgrader gradebook: the trusted assignment read from it, and the scores written into it.

Only the grading parent calls these, one at a time (the gradebook has a single writer).
The instructor's source becomes the gradebook through nbgrader's ``generate_assignment``;
its test cells' ``check(...)`` calls say what each grade cell checks.
"""
from __future__ import annotations

import ast
import copy
import warnings
from pathlib import Path

import nbformat

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


def build_gradebook(root: Path, source: str, assignment: str, grading_dir: Path) -> str:
    """Create or update ``grading_dir/gradebook.db`` from ``root/source/assignment`` with
    nbgrader's ``generate_assignment`` (into a throw-away release folder); returns its URL."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    ensure_tools_on_path()
    grading_dir.mkdir(parents=True, exist_ok=True)
    with scratch_folder("release") as release:
        config = course_config(root, grading_dir, source=source, release=release)
        api = NbGraderAPI(CourseDirectory(config=config), config=config)
        result = api.generate_assignment(assignment, force=True, create=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{result.get('error', '')}"
                           f"\n{result.get('log', '')}")
    return config.CourseDirectory.db_url


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
