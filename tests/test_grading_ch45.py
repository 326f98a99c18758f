"""Grading of the ch4 and ch5 assignments: full marks for the source, zero for the release,
partial credit with the right hint for each typical mistake, nothing for cheats.

Each chapter's fixtures (``tests/grading_fixtures_ch45.py``) are graded in one
``grade_assignment`` call, as ``llmcourse grade chN --jobs 2`` does.
"""
from __future__ import annotations

import csv
import functools
import json
import sys
from pathlib import Path

import pytest

from llmcourse.grading.grade import grade_assignment
from llmcourse.grading.release import release
from llmcourse.grading.sandbox import Limits

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures_ch45 import (
    CHAPTERS,
    answer_keys,
    assert_graded_as,
    full_points,
    release_path,
    write_submissions,
)

SUBS = {chapter: {s.name: s for s in CHAPTERS[chapter]} for chapter in ("ch4", "ch5")}
LIMITS = Limits(wall_s=180, cell_s=20, output_bytes=256 * 1024)
pytestmark = pytest.mark.xdist_group("grading")


def grade_class(chapter: str, tmp: Path):
    """(output folder, {student: report}) for the chapter's fixtures, graded in one call."""
    write_submissions(chapter, tmp / "submitted", list(SUBS[chapter].values()))
    reports = grade_assignment(chapter, tmp / "submitted", tmp / "out", jobs=2, limits=LIMITS, log=lambda *a: None)
    return tmp / "out", {r.student: r for r in reports}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """chapter -> what ``grade_class`` gives; each class is graded once, on first use."""
    return functools.cache(lambda chapter: grade_class(chapter, tmp_path_factory.mktemp(chapter)))


@pytest.mark.slow
@pytest.mark.parametrize("chapter, name", [(c, n) for c in SUBS for n in SUBS[c]])
def test_scores_and_hints(graded, chapter, name):
    assert_graded_as(chapter, graded(chapter)[1][name], SUBS[chapter][name])


@pytest.mark.slow
@pytest.mark.parametrize("chapter", list(SUBS))
def test_csv_and_feedback(graded, chapter):
    out, _ = graded(chapter)
    rows = {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert sorted(rows) == sorted(SUBS[chapter])
    full = full_points(chapter)
    for name, sub in SUBS[chapter].items():
        assert float(rows[name]["score"]) == sum(sub.points(chapter).values()), name
        assert float(rows[name]["max_score"]) == sum(full.values())
    for page in (out / "feedback").rglob("*.html"):
        text = page.read_text()
        assert "BEGIN HIDDEN TESTS" not in text and "kind=&quot;hidden" not in text, page


@pytest.mark.parametrize("chapter", list(SUBS))
def test_release_has_no_hidden_tests_or_answers(chapter):
    nb = json.loads(release_path(chapter).read_text())
    code = "\n".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                     for c in nb["cells"] if c["cell_type"] == "code")
    assert "HIDDEN TESTS" not in code and "BEGIN SOLUTION" not in code and 'kind="hidden"' not in code
    for qid, answer in answer_keys(chapter).items():
        assert f'return "{answer}"' not in code, qid
    assert "answer=" not in code


@pytest.mark.slow
@pytest.mark.parametrize("chapter", list(SUBS))
def test_exercises_up_to_date(tmp_path, chapter):
    release(chapter, release_dir=tmp_path, log=lambda *a: None)
    assert (tmp_path / chapter / f"{chapter}.ipynb").read_bytes() == release_path(chapter).read_bytes(), \
        f"exercises/{chapter} is out of date: run `llmcourse release {chapter}`"
