"""The ch1 assignment through the trusted grader: full marks for the source, zero for the
release, a hint for each typical mistake, zero for each kind of cheat. The submissions are
generated in ``grading_fixtures_ch12.py`` and graded as one class in one call."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import grading_fixtures_ch12 as fx  # noqa: E402

CHAPTER = "ch1"
pytestmark = pytest.mark.xdist_group("grading")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return fx.grade_class(CHAPTER, tmp_path_factory.mktemp(CHAPTER))


@pytest.mark.slow
@pytest.mark.parametrize("fixture", fx.FIXTURES[CHAPTER], ids=lambda f: f.name)
def test_scores_and_reasons(graded, fixture):
    fx.assert_graded_as(CHAPTER, graded[1][fixture.name], fixture)


@pytest.mark.slow
def test_feedback_hides_hidden_tests_and_answer_key(graded):
    fx.assert_feedback_hides_hidden_tests(CHAPTER, graded[0])


def test_release_has_no_hidden_tests_or_answers():
    fx.assert_release_clean(CHAPTER)


@pytest.mark.slow
def test_exercises_up_to_date(tmp_path):
    fx.assert_release_up_to_date(CHAPTER, tmp_path)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_mistake_shows_on_visible_cases(seed):
    fx.assert_mistakes_show_on_visible_cases(CHAPTER, seed)
