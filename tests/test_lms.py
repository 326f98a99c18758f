"""The workflow of a real course, part 3 (issue 15): when each submission was handed in, a
due date and a late policy, and exports an LMS imports.

One small class is graded once (``graded``: three submissions run, an invalid folder name and
a roster student with none), with real nbgrader gradebooks and real sandboxed grading, and
every result is checked on it; a second run into a copy changes only the due date and one
timestamp, and grades nothing again. The parsing, the penalty, the reading of
``timestamp.txt`` and the configuration are checked without grading.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from llmcourse.cli import main
from llmcourse.grading.deadlines import Deadline, Lateness, LatePolicy, parse_late_policy, parse_time
from llmcourse.grading.grade import grade_assignment
from llmcourse.grading.intake import read_submission_time
from llmcourse.grading.nbconfig import canvas_columns, course_deadline
from llmcourse.grading.records import Assignment, CanvasColumns, CellReport, GradeCell, Report
from llmcourse.grading.results import canvas_csv, questions_csv
from llmcourse.grading.sandbox import Limits, find_bwrap

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures import BY_NAME, FULL, notebook_text  # noqa: E402

pytestmark = pytest.mark.xdist_group("grading")
needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")
LIMITS = Limits(wall_s=120, cell_s=8, output_bytes=256 * 1024)
DUE = "2026-12-10 23:59 UTC"
POLICY = "penalty_per_day:10"  # 1.5 of the 15 points per started day
FILE_TIME = datetime(2026, 12, 10, 12, 0, tzinfo=timezone.utc)  # badstamp's notebook, before the due date
CANVAS_HEADER = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def hand_in(submitted: Path, student: str, fixture: str, timestamp: str | None = None) -> Path:
    """``submitted/<student>/ch3/ch3.ipynb`` from a grading fixture, with nbgrader's
    ``timestamp.txt`` beside it when given; returns the submission's folder."""
    folder = submitted / student / "ch3"
    folder.mkdir(parents=True)
    (folder / "ch3.ipynb").write_text(notebook_text(BY_NAME[fixture]))
    if timestamp is not None:
        (folder / "timestamp.txt").write_text(timestamp)
    return folder


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open(newline="")))


def read_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(data.decode().splitlines()))


def rows(out: Path) -> dict[str, dict]:
    return {r["student"]: r for r in csv.DictReader((out / "grades.csv").open(newline=""))}


def students(out: Path) -> dict[str, dict]:
    return {s["student"]: s for s in json.loads((out / "report.json").read_text())["students"]}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class, graded once: ``ontime`` (full marks, nbgrader's own timestamp format, a day
    early), ``late`` (the flipped mask, 10/15, handed in 26 hours late in another zone: two
    started days, 3 points off), ``badstamp`` (full marks; its timestamp.txt a symlink, so the
    notebook's time, before the due date, counts), a folder ``=1+1`` (no valid id: refused
    unrun) and ``absent`` (on the roster, no submission)."""
    tmp = tmp_path_factory.mktemp("lms")
    submitted, out = tmp / "submitted", tmp / "out"
    ontime = hand_in(submitted, "ontime", "solution", "2026-12-09 10:00:00.000000 UTC")
    hand_in(submitted, "late", "mask_flipped", "2026-12-12T02:59:00+01:00")
    bad = hand_in(submitted, "badstamp", "solution")
    (bad / "timestamp.txt").symlink_to(ontime / "timestamp.txt")
    os.utime(bad / "ch3.ipynb", (FILE_TIME.timestamp(), FILE_TIME.timestamp()))
    hand_in(submitted, "=1+1", "solution")
    roster = tmp / "roster.csv"
    roster.write_text("id\nontime\nlate\nbadstamp\nabsent\n")
    lines: list[str] = []
    reports = grade_assignment("ch3", submitted, out, jobs=1, limits=LIMITS, log=lines.append, roster=roster,
                               due=DUE, late_policy=POLICY)
    return {"tmp": tmp, "submitted": submitted, "out": out, "roster": roster, "lines": lines,
            "reports": {r.student: r for r in reports}}


# ---------------------------------------------------------------- one graded class

@pytest.mark.slow
@needs_bwrap
def test_the_time_handed_in_decides_lateness_and_the_penalty_is_beside_the_points(graded):
    table, saved = rows(graded["out"]), students(graded["out"])
    assert set(table) == {"ontime", "late", "badstamp", "'=1+1", "absent"}, table.keys()
    expected = {  # submitted_at, late, hours_late, late_penalty, score, final_score
        "ontime": ("2026-12-09T10:00:00+00:00", "no", "0", "0", "15", "15"),
        "late": ("2026-12-12T01:59:00+00:00", "yes", "26", "3", "10", "7"),
        "badstamp": (FILE_TIME.isoformat(), "no", "0", "0", "15", "15"),
        "absent": ("", "", "", "0", "0", "0"),
    }
    for student, want in expected.items():
        row = table[student]
        got = tuple(row[c] for c in ("submitted_at", "late", "hours_late", "late_penalty", "score", "final_score"))
        assert got == want, (student, got, want)
    late = table["late"]  # the cells keep the points the checks gave
    assert [late[c] for c in ("test_causal_mask", "test_multi_head_attention", "test_q1")] == ["0", "0", "1"], late
    assert sum(float(late[c]) for c in FULL) == float(late["score"])
    assert table["badstamp"]["status"] == "graded", table["badstamp"]
    note = saved["badstamp"]["submitted_note"]
    assert note.startswith("timestamp.txt unreadable: ") and "symlink" in note, note
    assert note.endswith("; used the file's time"), note
    assert saved["ontime"]["submitted_note"] == "" and saved["absent"]["submitted_at"] == ""
    assert (saved["late"]["late"], saved["late"]["late_penalty"], saved["late"]["final_total"]) == (True, 3, 7)
    assert saved["late"]["hours_late"] == pytest.approx(26), saved["late"]
    assert saved["ontime"]["late"] is False and saved["absent"]["late"] is None
    report = json.loads((graded["out"] / "report.json").read_text())
    assert (report["due"], report["late_policy"]) == ("2026-12-10T23:59:00+00:00", POLICY)


@pytest.mark.slow
@needs_bwrap
def test_nbgrader_export_reads_the_same_totals_from_the_gradebook(graded):
    out, export = graded["out"], graded["tmp"] / "nbgrader-export.csv"
    done = subprocess.run([sys.executable, "-m", "nbgrader", "export", "--db", f"sqlite:///{out / 'gradebook.db'}",
                           "--to", str(export)], cwd=graded["tmp"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    exported = {r["student_id"]: r for r in csv.DictReader(export.open(newline=""))}
    table = rows(out)
    assert set(exported) == {"ontime", "late", "badstamp", "absent"}, exported.keys()
    for student, row in exported.items():
        assert float(row["score"]) == float(table[student]["final_score"]), (student, row, table[student])
        assert float(row["late_submission_penalty"]) == float(table[student]["late_penalty"]), (student, row)
        assert row["duedate"] == "2026-12-10 23:59:00", row
    assert exported["late"]["timestamp"] == "2026-12-12 01:59:00" and exported["absent"]["timestamp"] == ""


@pytest.mark.slow
@needs_bwrap
def test_the_canvas_import_has_points_possible_and_a_row_per_student(graded):
    out = graded["out"]
    header, points, *body = read_csv(out / "canvas.csv")
    assert header == [*CANVAS_HEADER, "ch3"], header
    assert points == ["    Points Possible", "", "", "", "", "15"], points
    # the course's id in SIS Login ID; the total after the late penalty; the refused folder left out
    assert body == [["absent", "", "", "absent", "", "0"], ["badstamp", "", "", "badstamp", "", "15"],
                    ["late", "", "", "late", "", "7"], ["ontime", "", "", "ontime", "", "15"]], body
    for name in ("canvas.csv", "questions.csv"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o640, name


@pytest.mark.slow
@needs_bwrap
def test_the_per_question_export_has_a_row_per_student_and_grade_cell(graded):
    header, *body = read_csv(graded["out"] / "questions.csv")
    assert header == ["student", "assignment", "grade_id", "points", "max_points", "status", "failure"]
    assert len(body) == 5 * len(FULL), len(body)
    cells = {(r[0], r[2]): r for r in body}
    assert cells[("ontime", "test_heads")] == ["ontime", "ch3", "test_heads", "2", "2", "graded", ""]
    mask = cells[("late", "test_causal_mask")]
    assert mask[3:6] == ["0", "1", "graded"] and "a token sees the future" in mask[6], mask
    refused = cells[("'=1+1", "test_q1")]  # a formula-looking folder name, shown as text
    assert refused[5] == "rejected" and refused[6].startswith("not graded: not a valid student id"), refused
    assert cells[("absent", "test_q1")][5:] == ["missing", "not graded: no submission"]
    raw = (graded["out"] / "questions.csv").read_text()
    assert "\n=" not in raw and ",=" not in raw


@pytest.mark.slow
@needs_bwrap
def test_a_rerun_takes_a_new_due_date_and_a_mended_timestamp_without_grading_again(graded, tmp_path):
    from nbgrader.api import Gradebook

    submitted, out = tmp_path / "submitted", tmp_path / "out"
    shutil.copytree(graded["submitted"], submitted, symlinks=True)
    shutil.copytree(graded["out"], out)
    stamp = submitted / "badstamp" / "ch3" / "timestamp.txt"
    stamp.unlink()
    stamp.write_text("2026-12-11 23:59:00 UTC\n")  # the collector's file, put right
    lines: list[str] = []
    grade_assignment("ch3", submitted, out, jobs=1, limits=LIMITS, log=lines.append, due="2026-12-11 23:00 UTC",
                     late_policy=POLICY)
    assert lines[0].startswith("grading 0 submissions of ch3"), lines[0]
    table = rows(out)
    for student, want in {"ontime": ("no", "0", "15"), "late": ("yes", "1.5", "8.5"),
                          "badstamp": ("yes", "1.5", "13.5")}.items():
        got = tuple(table[student][c] for c in ("late", "late_penalty", "final_score"))
        assert got == want, (student, got, want)
    assert table["badstamp"]["submitted_at"] == "2026-12-11T23:59:00+00:00"
    assert students(out)["badstamp"]["submitted_note"] == ""
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        assert gb.find_submission_notebook("ch3", "ch3", "late").late_submission_penalty == 1.5
        assert gb.find_submission_notebook("ch3", "ch3", "ontime").late_submission_penalty is None
        assert gb.find_assignment("ch3").duedate == datetime(2026, 12, 11, 23, 0)


# ---------------------------------------------------------------- without grading

def test_times_are_read_as_nbgrader_reads_them():
    utc = timezone.utc
    assert parse_time("2026-11-30 14:05:11.123456 UTC") == datetime(2026, 11, 30, 14, 5, 11, 123456, tzinfo=utc)
    assert parse_time("2026-11-30 15:05 Europe/Berlin") == datetime(2026, 11, 30, 14, 5, tzinfo=utc)
    assert parse_time("2026-11-30T09:05:00-05:00") == datetime(2026, 11, 30, 14, 5, tzinfo=utc)
    assert parse_time("2026-11-30T14:05:00Z") == parse_time(" 2026-11-30 14:05\n")  # no zone: UTC
    for text, why in [("next friday", "expected a date and time"), ("14:05", "expected a date and time"),
                      ("2026-11-30 14:05 Nowhere/Land", "unknown time zone 'Nowhere/Land'"),
                      ("2026-11-30 14:05 /etc/localtime", "unknown time zone"),  # never a path
                      ("2026-11-30 14:05 +0100", "unknown time zone"),  # nbgrader would read 100 seconds
                      ("2026-13-45 14:05", "expected a date and time")]:
        with pytest.raises(ValueError, match=why):
            parse_time(text)


def test_a_late_policy_takes_a_share_of_the_maximum_per_started_day_never_more_than_the_score():
    day = 24 * 3600
    policy = parse_late_policy("penalty_per_day:10")
    assert policy == LatePolicy("penalty_per_day", 10) and str(policy) == "penalty_per_day:10"
    assert [policy.penalty(s, 12, 20) for s in (-5, 0, 1, day, day + 1, 3 * day)] == [0, 0, 2, 2, 4, 6]
    assert policy.penalty(30 * day, 12, 20) == 12  # capped at the score
    assert parse_late_policy("zero").penalty(1, 12, 20) == 12 and parse_late_policy("zero").penalty(0, 12, 20) == 0
    assert parse_late_policy("none").penalty(30 * day, 12, 20) == 0
    for bad in ("half", "penalty_per_day", "penalty_per_day:0", "penalty_per_day:150", "penalty_per_day:x",
                "zero:5"):
        with pytest.raises(ValueError, match="expected 'none'"):
            parse_late_policy(bad)
    deadline = Deadline(parse_time("2026-12-10 23:59 UTC"), policy)
    assert deadline.lateness("2026-12-11T05:59:00+00:00", 12, 20) == Lateness(True, 6.0, 2.0)
    assert deadline.lateness("2026-12-10T23:59:00+00:00", 12, 20) == Lateness(False, 0.0, 0.0)  # on the minute
    assert deadline.lateness("", 12, 20) == Lateness() and Deadline().lateness("2030-01-01T00:00:00+00:00", 1, 1) \
        == Lateness()


def test_timestamp_txt_is_an_untrusted_file(tmp_path):
    folder = tmp_path / "ada" / "ch3"
    folder.mkdir(parents=True)
    notebook, stamp = folder / "ch3.ipynb", folder / "timestamp.txt"
    notebook.write_text("{}")
    os.utime(notebook, (FILE_TIME.timestamp(), FILE_TIME.timestamp()))

    def read() -> tuple[str, str]:
        return read_submission_time(tmp_path, "ada", "ch3", "ch3")

    assert read() == (FILE_TIME.isoformat(), "no timestamp.txt; used the file's time")
    stamp.write_text("2026-12-09 10:00:00.5 UTC\n")
    assert read() == ("2026-12-09T10:00:00.500000+00:00", "")
    for content, why in [("yesterday", "expected a date and time"), ("", "expected a date and time"),
                         ("2026-12-09 10:00 " + "x" * 300, "too large"), (b"\xff\xfe2026", "can't decode")]:
        stamp.unlink()
        stamp.write_bytes(content if isinstance(content, bytes) else content.encode())
        at, note = read()
        assert at == FILE_TIME.isoformat() and note.startswith("timestamp.txt unreadable: ") and why in note, note
        assert note.endswith("; used the file's time"), note
    stamp.unlink()
    stamp.symlink_to(tmp_path / "elsewhere.txt")
    (tmp_path / "elsewhere.txt").write_text("2026-12-01 00:00 UTC")
    assert "symlink" in read()[1] and read()[0] == FILE_TIME.isoformat()
    stamp.unlink()
    os.mkfifo(stamp)  # a reader would block forever
    assert "not a regular file" in read()[1]
    notebook.unlink()
    notebook.symlink_to(tmp_path / "elsewhere.txt")  # nor is the file's time followed anywhere
    at, note = read()
    assert at == "" and "the notebook's time cannot be read" in note, note


def write_config(course: Path, *lines: str) -> Path:
    (course / "solutions" / "ch3").mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text("\n".join(["c = get_config()", *lines, ""]))
    return course


def test_the_course_config_gives_due_dates_a_late_policy_and_canvas_names(tmp_path):
    course = write_config(tmp_path)
    assert course_deadline(course, "ch3") == Deadline()
    assert canvas_columns(course, "ch3") == CanvasColumns("SIS Login ID", "")
    write_config(course, "c.LLMCourse.due_dates = {'ch3': '2026-12-10 23:59 Europe/Berlin'}",
                 "c.LLMCourse.late_policy = 'zero'", "c.LLMCourse.canvas_id_column = 'SIS User ID'",
                 "c.LLMCourse.canvas_assignments = {'ch3': 'Attention (12345)'}")
    assert course_deadline(course, "ch3") == Deadline(datetime(2026, 12, 10, 22, 59, tzinfo=timezone.utc),
                                                      LatePolicy("zero"))
    assert course_deadline(course, "ch4") == Deadline(None, LatePolicy("zero"))
    assert course_deadline(course, "ch3", due="2026-12-24 12:00", late_policy="none") == \
        Deadline(datetime(2026, 12, 24, 12, 0, tzinfo=timezone.utc), LatePolicy())
    assert canvas_columns(course, "ch3") == CanvasColumns("SIS User ID", "Attention (12345)")


@pytest.mark.parametrize("setting, flag, expected", [
    ("c.LLMCourse.due_dates = {'ch3': 'next friday'}", (),
     "c.LLMCourse.due_dates['ch3'] = 'next friday': expected a date and time such as"),
    ("c.LLMCourse.due_dates = '2026-12-10'", (), "c.LLMCourse.due_dates = '2026-12-10': expected a dict"),
    ("c.LLMCourse.late_policy = 'half'", (), "c.LLMCourse.late_policy = 'half': expected 'none'"),
    ("c.LLMCourse.canvas_id_column = 'email'", (), "c.LLMCourse.canvas_id_column = 'email': expected one of"),
    ("", ("--due", "soon"), "--due = 'soon': expected a date and time"),
    ("", ("--late-policy", "penalty_per_day:200"), "--late-policy = 'penalty_per_day:200': expected 'none'"),
])
def test_a_bad_setting_is_one_line_before_anything_is_graded(tmp_path, capsys, setting, flag, expected):
    course = write_config(tmp_path / "course", setting)
    submitted = tmp_path / "submitted"
    hand_in(submitted, "ada", "solution")
    assert main(["grade", "ch3", "--submitted", str(submitted), "--out", str(tmp_path / "out"), "--course",
                 str(course), "--allow-unsandboxed", *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmcourse grade: error: ") and expected in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_exports_show_what_a_student_wrote_as_text():
    cells = (GradeCell("test_mask", 1.0, False, ()),)
    assignment = Assignment("ch3", "ch3", "", cells, frozenset(), {}, {})
    said = ["ch3.causal_mask (visible): FAILED\n  FAIL T=3\n       =HYPERLINK(\"http://x\",\"see\")"]
    reports = [Report("ada", "ch3", "ch3", cells=[CellReport("test_mask", 0.0, 1.0, False, said)]),
               Report("bob", "ch3", "ch3", status="pending")]
    points = {"ada": {"test_mask": 0.0}, "bob": {"test_mask": 0.0}}
    questions = read_rows(questions_csv(assignment, reports, points))
    assert questions[1][6] == "'=HYPERLINK(\"http://x\",\"see\")", questions[1]
    canvas = read_rows(canvas_csv(assignment, reports, points, {"ada": Lateness(), "bob": Lateness()},
                                  CanvasColumns("ID", "@SUM(1) (7)")))
    assert canvas[0] == [*CANVAS_HEADER, "'@SUM(1) (7)"] and canvas[2:] == [["ada", "ada", "", "", "", "0"]], canvas
