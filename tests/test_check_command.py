"""``llmcourse check``: a notebook at any path, the assignment it answers, and the cached gradebook.

The trusted assignment always comes from the course (the release regenerated from solutions/,
or solutions/ itself), never from the file checked; its gradebook is cached in the package's
cache folder, keyed by what it is built from. Tests that build a gradebook (seconds each) or
run the sandbox are marked slow; they share one cache folder unless they count builds.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmcourse.grading import gradebook
from llmcourse.grading.grade import check_assignment, check_notebook
from llmcourse.grading.gradebook import build_gradebook, build_release_gradebook, cached_gradebook, load_assignment
from llmcourse.grading.release import METADATA_KEY
from llmcourse.grading.sandbox import Limits

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures import BY_NAME, ROOT, notebook_text, release_path  # noqa: E402

pytestmark = pytest.mark.xdist_group("grading")
CHAPTERS = ["ch1", "ch2", "ch3", "ch4", "ch5"]
LIMITS = Limits(wall_s=120, cell_s=8, output_bytes=256 * 1024)


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory):
    """One cache folder for the module (never the user's): a test that counts builds sets its own."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMCOURSE_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture
def builds(tmp_path, monkeypatch) -> list[str]:
    """A fresh cache folder, and the list of ``build_gradebook`` calls (their sources) from now on."""
    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path / "own-cache"))
    calls, real = [], gradebook.build_gradebook

    def counted(root, source, *args, **kwargs):
        calls.append(source)
        return real(root, source, *args, **kwargs)

    monkeypatch.setattr(gradebook, "build_gradebook", counted)
    return calls


def answered(metadata: dict | None = None) -> dict:
    """The ch3 release answered as a student would: every answer cell holds the solution's
    code (its markers dropped); the release's notebook metadata (which names its assignment),
    or ``metadata``."""
    nb = json.loads(release_path("ch3").read_text())
    solutions = {c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"])
                 for c in json.loads(notebook_text(BY_NAME["solution"]))["cells"]
                 if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    for cell in nb["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in solutions:
            cell["source"] = "\n".join(line for line in solutions[grade_id].splitlines()
                                       if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)
    if metadata is not None:
        nb["metadata"] = metadata
    return nb


def write(path: Path, nb: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


def course_copy(tmp: Path, *folders: str) -> Path:
    """A course folder with this course's nbgrader_config.py and ``folders`` (e.g. ``solutions/ch3``)."""
    root = tmp / "course"
    root.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", root)
    for folder in folders:
        shutil.copytree(ROOT / folder, root / folder)
    return root


def same(a, b) -> bool:
    """Two trusted assignments are the same but for where their gradebook file is."""
    return dataclasses.replace(a, db_url="") == dataclasses.replace(b, db_url="")


def scores(report) -> dict[str, float]:
    return {c.grade_id: c.score for c in report.cells}


def test_every_release_names_its_assignment():
    for chapter in CHAPTERS:
        metadata = json.loads(release_path(chapter).read_text())["metadata"]
        assert metadata[METADATA_KEY] == {"assignment": chapter}, chapter


def test_which_assignment_a_notebook_answers():
    def named(value) -> bytes:
        return json.dumps({"metadata": {METADATA_KEY: {"assignment": value}}}).encode()

    assert check_assignment(Path("/w/ch4/ch4.ipynb"), named("ch3"), CHAPTERS, given="ch5") == "ch5"
    assert check_assignment(Path("/w/ch4/ch4.ipynb"), named("ch3"), CHAPTERS) == "ch3"
    assert check_assignment(Path("/w/ch2/answers.ipynb"), b"{}", CHAPTERS) == "ch2"
    assert check_assignment(Path("/w/ch1.ipynb"), b"not json", CHAPTERS) == "ch1"
    assert check_assignment(Path("/w/ch3/x.ipynb"), b"[" * 100_000, CHAPTERS) == "ch3"  # too deep: no metadata
    choices = "expected one of ch1, ch2, ch3, ch4, ch5"
    with pytest.raises(ValueError, match=f"metadata names assignment 'ch9', which this course does not have; {choices}"):
        check_assignment(Path("/w/ch3/ch3.ipynb"), named("ch9"), CHAPTERS)
    with pytest.raises(ValueError, match=r"metadata names assignment \['ch3'\]"):
        check_assignment(Path("/w/ch3/ch3.ipynb"), named(["ch3"]), CHAPTERS)
    with pytest.raises(ValueError, match="--assignment names assignment 'ch3.ipynb'"):
        check_assignment(Path("/w/ch3/ch3.ipynb"), b"{}", CHAPTERS, given="ch3.ipynb")
    with pytest.raises(ValueError, match="could be assignment ch2 or ch3"):
        check_assignment(Path("/w/ch2/ch3.ipynb"), b"{}", CHAPTERS)
    with pytest.raises(ValueError, match=f"say which with --assignment, one of {', '.join(CHAPTERS)}"):
        check_assignment(Path("/w/work/answers.ipynb"), b"{}", CHAPTERS)


@pytest.mark.slow
def test_any_file_name_and_folder(tmp_path):
    """The release's metadata names the assignment, or --assignment does; the file's name and
    folder need not."""
    by_metadata = check_notebook(write(tmp_path / "my work" / "answers (v2).ipynb", answered()), ROOT, LIMITS)
    by_flag = check_notebook(write(tmp_path / "x.ipynb", answered(metadata={})), ROOT, LIMITS, assignment="ch3")
    for report in (by_metadata, by_flag):
        assert (report.assignment, report.notebook, report.status) == ("ch3", "ch3", "graded"), report.reason
        assert report.cells and all(c.grade_id.startswith("test_") for c in report.cells), scores(report)
        assert report.score == report.max_score == 10, [c.messages for c in report.cells]
    assert scores(by_metadata) == scores(by_flag)


@pytest.mark.slow
def test_cli_any_path_and_an_unknown_assignment(tmp_path, shared_cache):
    env = {**os.environ, "LLMCOURSE_CACHE_DIR": str(shared_cache)}

    def check(path: Path, *flags: str):
        return subprocess.run([sys.executable, "-m", "llmcourse.cli", "check", str(path), "--course", str(ROOT), *flags],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)

    result = check(write(tmp_path / "anything.ipynb", answered(metadata={})), "--assignment", "ch3")
    # the visible cells only (the release's hidden cells hold no checks): a right notebook has them all
    assert result.stdout.startswith("ch3/ch3: 10 / 10 points"), result.stdout + result.stderr
    assert result.returncode == 0 and "hidden_" not in result.stdout and "edited" not in result.stdout, result.stdout
    result = check(write(tmp_path / "ch3" / "ch3.ipynb", answered(metadata={METADATA_KEY: {"assignment": "ch9"}})))
    assert result.returncode == 2 and not result.stdout, result.stdout
    assert ("llmcourse check: error: the notebook's metadata names assignment 'ch9', which this course does not "
            "have; expected one of ch1, ch2, ch3, ch4, ch5") in result.stderr, result.stderr


@pytest.mark.slow
def test_the_cache_is_used_and_rebuilt_when_the_source_changes_or_is_damaged(tmp_path, builds):
    root = course_copy(tmp_path, "solutions/ch3")
    fresh = load_assignment(build_gradebook(root, "solutions", "ch3", tmp_path / "fresh"), "ch3", "ch3")
    del builds[:]

    def trusted(n: int):
        return load_assignment(cached_gradebook(root, "solutions", "ch3", tmp_path / str(n)), "ch3", "ch3")

    first, second = trusted(1), trusted(2)
    assert builds == ["solutions"], "built once, then taken from the cache"
    assert same(first, fresh) and same(second, fresh)
    assert first.db_url != second.db_url, "each check has its own copy of the gradebook"

    notebook = root / "solutions" / "ch3" / "ch3.ipynb"
    nb = json.loads(notebook.read_text())
    cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "test_causal_mask")
    cell["metadata"]["nbgrader"]["points"] = 3
    notebook.write_text(json.dumps(nb))
    changed = trusted(3)
    assert len(builds) == 2, "the source changed: rebuilt"
    assert {c.name: c.max_score for c in changed.grade_cells}["test_causal_mask"] == 3

    [entry] = (Path(os.environ["LLMCOURSE_CACHE_DIR"]) / "gradebooks").iterdir()  # the superseded one is gone
    entry.write_bytes(entry.read_bytes()[:-100])
    assert same(trusted(4), changed) and len(builds) == 3, "a damaged entry is rebuilt"
    entry.write_bytes(b"not a cache entry")
    assert same(trusted(5), changed) and len(builds) == 4
    assert same(trusted(6), changed) and len(builds) == 4


@pytest.mark.slow
def test_a_release_edited_in_place_is_not_what_it_is_checked_against(tmp_path, builds):
    """The book has students answer exercises/ch3/ch3.ipynb in place: an edited test cell there
    is restored from the release regenerated from solutions/, as the grader would."""
    root = course_copy(tmp_path, "solutions/ch3", "exercises/ch3")
    nb = answered()
    cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "test_causal_mask")
    cell["source"] = "# trust me\n"
    report = check_notebook(write(root / "exercises" / "ch3" / "ch3.ipynb", nb), root, LIMITS)
    assert "cell 'test_causal_mask' was edited; the grader restored it from the source" in report.notes
    assert scores(report)["test_causal_mask"] == 1
    assert len(builds) == 2 and builds[0] == "solutions", f"solutions/ -> a release -> its gradebook: {builds}"
    again = check_notebook(write(tmp_path / "copy.ipynb", answered()), root, LIMITS)
    assert len(builds) == 2, "the second check takes the gradebook from the cache"
    assert scores(again) == scores(report)


def test_a_course_without_solutions_never_checks_its_release_against_itself(tmp_path):
    root = course_copy(tmp_path, "exercises/ch3")
    with pytest.raises(ValueError, match="is the course's release of ch3, which a check grades against: check a copy"):
        check_notebook(root / "exercises" / "ch3" / "ch3.ipynb", root, LIMITS)
    with pytest.raises(FileNotFoundError, match="--with-solutions needs the course's solutions/"):
        check_notebook(write(tmp_path / "ch3.ipynb", answered()), root, LIMITS, with_solutions=True)


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_regenerated_release_is_the_release_in_exercises(tmp_path, chapter):
    """What a check grades against (the release regenerated from solutions/) is the assignment
    the release in exercises/ gives, for every chapter."""
    regenerated = load_assignment(build_release_gradebook(ROOT, "solutions", chapter, tmp_path / "a"), chapter, chapter)
    released = load_assignment(build_gradebook(ROOT, "exercises", chapter, tmp_path / "b"), chapter, chapter)
    assert same(regenerated, released)
