"""Grading of the ch4 assignment: full marks for the source, zero for the release, partial
credit with the right hint for each typical mistake, nothing for cheats.

All fixtures (``tests/grading_fixtures_ch45.py``) are graded in one ``grade_assignment``
call, as ``llmcourse grade ch4 --jobs 2`` does.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from llmcourse.grading.checks_ch4 import ANSWER_KEY_CH4
from llmcourse.grading.grade import grade_assignment
from llmcourse.grading.release import release
from llmcourse.grading.sandbox import Limits

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures_ch45 import (
    CHAPTERS,
    assert_graded_as,
    full_points,
    release_path,
    write_class,
)

CHAPTER = "ch4"
SUBS = {s.name: s for s in CHAPTERS[CHAPTER]}
LIMITS = Limits(wall_s=180, cell_s=20, output_bytes=256 * 1024)
pytestmark = pytest.mark.xdist_group("grading")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp(CHAPTER)
    write_class(CHAPTER, tmp / "submitted", list(SUBS.values()))
    reports = grade_assignment(CHAPTER, tmp / "submitted", tmp / "out", jobs=2, limits=LIMITS, log=lambda *a: None)
    return tmp / "out", {r.student: r for r in reports}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SUBS))
def test_scores_and_hints(graded, name):
    assert_graded_as(CHAPTER, graded[1][name], SUBS[name])


@pytest.mark.slow
def test_csv_and_feedback(graded):
    out, _ = graded
    rows = {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert sorted(rows) == sorted(SUBS)
    full = full_points(CHAPTER)
    for name, sub in SUBS.items():
        assert float(rows[name]["score"]) == sum(sub.points(CHAPTER).values()), name
        assert float(rows[name]["max_score"]) == sum(full.values())
    for page in (out / "feedback").rglob("*.html"):
        text = page.read_text()
        assert "BEGIN HIDDEN TESTS" not in text and "cases=&quot;hidden" not in text, page


def test_release_has_no_hidden_tests_or_answers():
    nb = json.loads(release_path(CHAPTER).read_text())
    code = "\n".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                     for c in nb["cells"] if c["cell_type"] == "code")
    assert "HIDDEN TESTS" not in code and "BEGIN SOLUTION" not in code and 'cases="hidden"' not in code
    for qid, answer in ANSWER_KEY_CH4.items():
        assert f'return "{answer}"' not in code, qid
    assert "ANSWER_KEY" not in release_path(CHAPTER).read_text()


@pytest.mark.slow
def test_exercises_up_to_date(tmp_path):
    release(CHAPTER, release_dir=tmp_path, log=lambda *a: None)
    assert (tmp_path / CHAPTER / f"{CHAPTER}.ipynb").read_bytes() == release_path(CHAPTER).read_bytes(), \
        f"exercises/{CHAPTER} is out of date: run `llmcourse release {CHAPTER}`"
