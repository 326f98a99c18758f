"""The ch1 and ch2 assignments through the trusted grader: full marks for the source, zero for
the release, a hint for each typical mistake, zero for each kind of cheat. The submissions are
generated in ``grading_fixtures_ch12.py``; each chapter's are graded as one class in one call."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import grading_fixtures_ch12 as fx  # noqa: E402

CHAPTERS = ("ch1", "ch2")
pytestmark = pytest.mark.xdist_group("grading")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """chapter -> what ``fx.grade_class`` gives; each class is graded once, on first use."""
    return functools.cache(lambda chapter: fx.grade_class(chapter, tmp_path_factory.mktemp(chapter)))


@pytest.mark.slow
@pytest.mark.parametrize("chapter, fixture", [(c, f) for c in CHAPTERS for f in fx.FIXTURES[c]],
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_scores_and_reasons(graded, chapter, fixture):
    fx.assert_graded_as(chapter, graded(chapter)[1][fixture.name], fixture)


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_feedback_hides_hidden_tests_and_answer_key(graded, chapter):
    fx.assert_feedback_hides_hidden_tests(chapter, graded(chapter)[0])


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_release_has_no_hidden_tests_or_answers(chapter):
    fx.assert_release_clean(chapter)


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_exercises_up_to_date(tmp_path, chapter):
    fx.assert_release_up_to_date(chapter, tmp_path)
