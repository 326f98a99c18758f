"""nbgrader settings shared by ``nbgrader_config.py`` and the grading commands.

Imports no torch, so ``nbgrader_config.py`` stays fast.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from traitlets.config import Config

from .deadlines import Deadline, parse_late_policy, parse_time
from .records import CanvasColumns

COURSE_ENV = "LLMCOURSE_COURSE"  # the course folder, when it is not given and not found from here
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
CANVAS_ID_COLUMNS = ("SIS Login ID", "SIS User ID", "ID")


def is_course(folder: Path) -> bool:
    """A course folder has the course's ``nbgrader_config.py`` and its assignments in
    ``solutions/`` (the instructor's) or ``exercises/`` (a student's copy)."""
    return (folder / "nbgrader_config.py").is_file() and any((folder / s).is_dir() for s in ("solutions", "exercises"))


def find_course(course: str | os.PathLike | None = None, *starts: str | os.PathLike) -> Path:
    """The course folder: ``course`` if given, else ``$LLMCOURSE_COURSE``, else the first
    folder that is a course from each of ``starts`` upwards, in order (default: the
    current directory). The package itself holds no course, so an installed ``llmcourse``
    grades any course."""
    given = course if course is not None else os.environ.get(COURSE_ENV) or None
    if given is not None:
        folder = Path(given).expanduser().resolve()
        if not is_course(folder):
            raise FileNotFoundError(
                f"{folder} is not a course folder: expected nbgrader_config.py and solutions/ or exercises/ in it"
                + (f" (from ${COURSE_ENV})" if course is None else ""))
        return folder
    places = [Path(start).resolve() for start in starts or (Path.cwd(),)]
    for here in places:
        for folder in (here, *here.parents):
            if is_course(folder):
                return folder
    raise FileNotFoundError(
        f"no course folder in {' or '.join(map(str, places))} or above (one with nbgrader_config.py and solutions/ "
        f"or exercises/); pass --course DIR or set ${COURSE_ENV}")


def ensure_tools_on_path() -> None:
    """nbgrader runs ``alembic`` as a subprocess: put this interpreter's bin/ first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def course_config(root: Path, grading_dir: Path, source: str = "solutions",
                  release: str | Path = "exercises", submitted: Path | None = None) -> Config:
    """The nbgrader configuration of the course.

    ``root`` holds ``source`` and ``release``; the gradebook and the submitted/autograded/
    feedback folders live in ``grading_dir``, the instructor's, outside the repository.
    nbgrader joins each folder with ``root``, so absolute paths are used for the others.
    """
    grading_dir = Path(grading_dir).resolve()
    c = Config()
    c.CourseDirectory.root = str(Path(root).resolve())
    c.CourseDirectory.source_directory = source
    c.CourseDirectory.release_directory = str(release)
    c.CourseDirectory.submitted_directory = str(Path(submitted).resolve() if submitted else grading_dir / "submitted")
    c.CourseDirectory.autograded_directory = str(grading_dir / "autograded")
    c.CourseDirectory.feedback_directory = str(grading_dir / "feedback")
    c.CourseDirectory.db_url = f"sqlite:///{grading_dir / 'gradebook.db'}"
    c.ClearSolutions.code_stub = {"python": CODE_STUB}
    c.OverwriteCells.add_missing_cells = True
    # Feedback pages are opened in a browser: the exporter makes everything from the notebook
    # inert and adds the grader's results itself (llmcourse.grading.feedback).
    c.GenerateFeedback.exporter_class = "llmcourse.grading.feedback.FeedbackExporter"
    c.GenerateFeedback.preprocessors = [
        "nbgrader.preprocessors.GetGrades",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
        "llmcourse.grading.feedback.BlankHiddenTracebacks",
        "nbgrader.preprocessors.ClearHiddenTests",
    ]
    return c


def course_settings(root: Path) -> dict:
    """llmcourse's own settings in the course's ``nbgrader_config.py``, the ``c.LLMCourse``
    section beside nbgrader's (which nbgrader ignores)."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(Path(root))).load_config()
    return dict(config.LLMCourse)


def private_results(root: Path) -> bool:
    """Whether the course's ``nbgrader_config.py`` keeps grading's results to the instructor
    alone (``c.LLMCourse.private_results = True``: files 0600, folders 0700); by default
    they are readable by the instructor's group, where teaching assistants are."""
    return bool(course_settings(root).get("private_results", False))


def course_deadline(root: Path, assignment: str, due: str | None = None, late_policy: str | None = None) -> Deadline:
    """The due date of ``assignment`` and the late policy, from the course's configuration::

        c.LLMCourse.due_dates = {"ch3": "2026-12-10 23:59 UTC"}   # no entry: no due date
        c.LLMCourse.late_policy = "penalty_per_day:10"            # or "none" (default), "zero"

    ``due`` and ``late_policy`` (``llmcourse grade --due/--late-policy``) replace them for
    one run. A value that cannot be read is a one-line ``ValueError`` naming the setting and
    what it expects, raised before anything is graded."""
    settings = course_settings(root)
    if due is None:
        due_dates = settings.get("due_dates", {})
        if not isinstance(due_dates, dict):
            raise ValueError(f"{_setting(root, 'due_dates')} = {repr(due_dates)[:80]}: expected a dict of "
                             f"assignment -> due date, e.g. {{'ch3': '2026-12-10 23:59 UTC'}}")
        due, due_where = due_dates.get(assignment), _setting(root, f"due_dates[{assignment!r}]")
    else:
        due_where = "--due"
    if late_policy is None:
        late_policy, policy_where = settings.get("late_policy", "none"), _setting(root, "late_policy")
    else:
        policy_where = "--late-policy"
    return Deadline(None if due is None else _parsed(parse_time, due, due_where),
                    _parsed(parse_late_policy, late_policy, policy_where))


def canvas_columns(root: Path, assignment: str) -> CanvasColumns:
    """How ``canvas.csv`` names students and ``assignment`` (``records.CanvasColumns``), from
    the course's configuration::

        c.LLMCourse.canvas_id_column = "SIS Login ID"               # or "SIS User ID", "ID"
        c.LLMCourse.canvas_assignments = {"ch3": "Attention (12345)"}  # Canvas's name (id)

    An unknown id column is a one-line ``ValueError``."""
    settings = course_settings(root)
    id_column = settings.get("canvas_id_column", CanvasColumns.id_column)
    if id_column not in CANVAS_ID_COLUMNS:
        raise ValueError(f"{_setting(root, 'canvas_id_column')} = {repr(id_column)[:80]}: expected one of "
                         f"{', '.join(map(repr, CANVAS_ID_COLUMNS))} (the Canvas column that holds the course's "
                         f"student ids)")
    names = settings.get("canvas_assignments", {})
    if not isinstance(names, dict) or not isinstance(names.get(assignment, ""), str):
        raise ValueError(f"{_setting(root, 'canvas_assignments')} = {repr(names)[:80]}: expected a dict of "
                         f"assignment -> its Canvas column, e.g. {{'ch3': 'Attention (12345)'}}")
    return CanvasColumns(id_column, names.get(assignment, ""))


def _setting(root: Path, name: str) -> str:
    """A setting of the course's ``nbgrader_config.py`` as an error message names it."""
    return f"{Path(root) / 'nbgrader_config.py'}: c.LLMCourse.{name}"


def _parsed(parse, value, where: str):
    """``parse(str(value))``, or a one-line ``ValueError`` naming the setting (``where``), the
    value and what ``parse`` expected."""
    try:
        return parse(str(value))
    except ValueError as e:
        raise ValueError(f"{where} = {repr(value)[:80]}: {e}") from None
