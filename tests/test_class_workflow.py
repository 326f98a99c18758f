"""The workflow of a real course (issue 15): one student at a time, only what changed, a
roster, totals that agree with manual grades, results the instructor's group can read,
statistics per question and a progress bar.

One small class is graded in several runs into the same folder, with real nbgrader
gradebooks and real sandboxed grading, as ``llmcourse grade`` does: each run is a step an
instructor takes. Only two submissions are ever run (``solution`` and ``mask_flipped``).
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import stat
import sys
from pathlib import Path

import pytest

from llmcourse.cli import main
from llmcourse.files import atomic_write_bytes
from llmcourse.grading.grade import grade_assignment
from llmcourse.grading.intake import read_roster
from llmcourse.grading.nbconfig import private_results
from llmcourse.grading.records import Assignment, CellReport, GradeCell, Report
from llmcourse.grading.results import format_questions, question_stats
from llmcourse.grading.sandbox import Limits, find_bwrap

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures import FULL, write_class  # noqa: E402

pytestmark = pytest.mark.xdist_group("grading")
needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")
LIMITS = Limits(wall_s=120, cell_s=8, output_bytes=256 * 1024)
WRONG_MASK = ("test_causal_mask", "hidden_causal_mask", "test_multi_head_attention", "hidden_multi_head_attention")


def rows(out: Path) -> dict[str, dict]:
    return {r["student"]: r for r in csv.DictReader((out / "grades.csv").open(newline=""))}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(submitted: Path, out: Path, **kw) -> tuple[dict, list[str]]:
    lines: list[str] = []
    reports = grade_assignment("ch3", submitted, out, jobs=1, limits=LIMITS, log=lines.append, **kw)
    return {r.student: r for r in reports}, lines


def graded_now(lines: list[str]) -> set[str]:
    """The students a run graded (or refused), from its per-student log lines."""
    return {line.split(":")[0].strip() for line in lines if line.startswith("  ")}


@pytest.mark.slow
@needs_bwrap
def test_a_class_graded_in_steps_is_always_described_whole(tmp_path):
    submitted, out = tmp_path / "submitted", tmp_path / "out"
    write_class(submitted, ["solution", "mask_flipped"])
    wrong = submitted / "gina" / "ch3" / "ch3-gina.ipynb"  # handed in under her own name
    wrong.parent.mkdir(parents=True)
    shutil.copy(submitted / "solution" / "ch3" / "ch3.ipynb", wrong)
    roster = tmp_path / "roster.csv"
    roster.write_text("Student,name\nsolution,Sol\nmask_flipped,Mask\ngina,Gina\nhank,Hank\n")
    handed_in = mode(wrong)

    # 1. one student only: the others are listed, none lost
    bar = io.StringIO()
    reports, lines = run(submitted, out, students=["solution"], roster=roster, progress=bar)
    assert graded_now(lines) == {"solution"}, lines
    table = rows(out)
    assert set(table) == {"solution", "mask_flipped", "gina", "hank"}, table
    assert table["solution"]["status"] == "graded" and float(table["solution"]["score"]) == 15
    assert table["mask_flipped"]["status"] == table["gina"]["status"] == "pending"
    hank = table["hank"]
    assert (hank["status"], hank["reason"], hank["score"]) == ("missing", "no submission", "0")
    assert "1/1" in bar.getvalue() and "failed=0" in bar.getvalue(), bar.getvalue()

    # 2. a re-run grades only what is new; the misnamed notebook is said
    reports, lines = run(submitted, out, roster=roster)
    assert graded_now(lines) == {"mask_flipped", "gina"}, lines
    assert "(1 unchanged since they were graded" in lines[0], lines[0]
    table = rows(out)
    assert table["gina"]["status"] == "rejected"
    assert table["gina"]["reason"] == "found ch3-gina.ipynb, expected ch3.ipynb", table["gina"]
    assert float(table["solution"]["score"]) == 15 and float(table["mask_flipped"]["score"]) == 15 - 5
    assert table["hank"]["status"] == "missing"
    saved = json.loads((out / "report.json").read_text())
    students = {s["student"]: s for s in saved["students"]}
    assert set(students) == set(table) and students["mask_flipped"]["total"] == 10
    assert students["mask_flipped"]["max_score"] == 15
    questions = {q["grade_id"]: q for q in saved["questions"]}
    assert questions["test_causal_mask"]["graded"] == 2 and questions["test_causal_mask"]["mean"] == 0.5
    assert questions["test_causal_mask"]["full_marks"] == 0.5
    assert questions["test_causal_mask"]["failure_count"] == 1 and questions["test_causal_mask"]["failure"]
    assert questions["test_q1"]["full_marks"] == 1 and not questions["test_q1"]["failure"]
    table_lines = [line for line in "\n".join(lines).splitlines() if line.startswith("test_causal_mask ")]
    assert table_lines and "0.5/1   50%  " in table_lines[0] and "(1)" in table_lines[0], lines[-1]

    # the instructor's group reads the results; the submissions are left as they were
    for path in [out / "grades.csv", out / "report.json", out / "autograded/mask_flipped/ch3/ch3.ipynb",
                 out / "feedback/mask_flipped/ch3/ch3.html", out / "feedback/gina/ch3/ch3.html"]:
        assert mode(path) == 0o640, (path, oct(mode(path)))
    for folder in [out, out / "autograded" / "mask_flipped", out / "feedback" / "mask_flipped" / "ch3"]:
        assert mode(folder) == 0o750, (folder, oct(mode(folder)))
    assert mode(wrong) == handed_in

    # 3. a manual score in the gradebook: the cells and the total agree, nothing is regraded
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        gb.find_grade("test_causal_mask", "ch3", "ch3", "mask_flipped").manual_score = 1
        gb.db.commit()
    reports, lines = run(submitted, out, roster=roster)
    assert graded_now(lines) == {"gina"}, lines  # a refused file costs nothing to refuse again
    row = rows(out)["mask_flipped"]
    assert float(row["test_causal_mask"]) == 1 and float(row["score"]) == 11
    assert sum(float(row[c]) for c in FULL) == float(row["score"])
    csv_bytes, json_bytes = (out / "grades.csv").read_bytes(), (out / "report.json").read_bytes()
    run(submitted, out, roster=roster)
    assert (out / "grades.csv").read_bytes() == csv_bytes and (out / "report.json").read_bytes() == json_bytes

    # 4. a changed file is graded again, and only it
    (submitted / "mask_flipped" / "ch3" / "ch3.ipynb").write_bytes((submitted / "solution" / "ch3" / "ch3.ipynb")
                                                                    .read_bytes())
    reports, lines = run(submitted, out, roster=roster)
    assert graded_now(lines) == {"mask_flipped", "gina"}, lines
    assert reports["mask_flipped"].score == 15 and float(rows(out)["mask_flipped"]["score"]) == 15

    # 5. a folder holding one student, everyone again, privately: the class keeps its rows (the
    # roster is in the gradebook now)
    alone = tmp_path / "alone"
    shutil.copytree(submitted / "gina", alone / "gina")
    reports, lines = run(alone, out, regrade=True, private=True)
    assert graded_now(lines) == {"gina"}, lines
    assert set(rows(out)) == {"solution", "mask_flipped", "gina", "hank"}
    assert float(rows(out)["solution"]["score"]) == 15
    assert mode(out / "grades.csv") == mode(out / "report.json") == 0o600


def test_bad_grading_input_is_one_clear_line(tmp_path, capsys):
    submitted = tmp_path / "submitted"
    write_class(submitted, ["solution"])
    args = ["grade", "ch3", "--submitted", str(submitted), "--out", str(tmp_path / "out"), "--allow-unsandboxed"]
    assert main([*args, "--student", "nobody"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmcourse grade: error: --student nobody: no submission of ch3") and "\n" not in err, err
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email\nAda,ada@example.org\n")
    assert main([*args, "--roster", str(roster)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no 'student' or 'id' column" in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_roster_is_checked_like_the_submissions(tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("\ufeffid,name\nada,Ada\n\nbob.b,Bob\n")
    assert read_roster(roster) == ["ada", "bob.b"]
    roster.write_text("id\nada\n=HYPERLINK(1)\n")
    with pytest.raises(ValueError, match=r"'=HYPERLINK\(1\)' \(row 2\) is not a valid student id"):
        read_roster(roster)
    roster.write_bytes(b"id\n" + b"a" * 200_000 + b"\n")  # past the csv module's field limit
    with pytest.raises(ValueError, match="not CSV"):
        read_roster(roster)


def test_the_course_config_can_keep_results_private(tmp_path):
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.root = '.'\n")
    assert private_results(tmp_path) is False
    with (tmp_path / "nbgrader_config.py").open("a") as f:
        f.write("c.LLMCourse.private_results = True\n")
    assert private_results(tmp_path) is True


def test_atomic_write_sets_the_mode_before_the_data(tmp_path):
    path = tmp_path / "a" / "b" / "f.txt"
    atomic_write_bytes(path, b"one", mode=0o640, folder_mode=0o750)
    assert mode(path) == 0o640 and mode(path.parent) == mode(path.parent.parent) == 0o750
    atomic_write_bytes(path, b"two")
    assert mode(path) == 0o600 and path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_question_stats_say_what_the_class_got_wrong():
    cells = (GradeCell("test_mask", 1.0, False, ()), GradeCell("test_q1", 2.0, False, ()))
    assignment = Assignment("ch3", "ch3", "", cells, frozenset(), {}, {})
    flipped = ["ch3.causal_mask (visible): FAILED\n  ok   T=1\n  FAIL T=3\n       output: values differ at [0, 1]\n"
               "       likely cause: mask in the wrong direction"]
    raised = ["ch3.causal_mask (visible): FAILED\n  FAIL T=3\n       raised IndexError: out of range"]

    def report(student, mask_messages, status="graded"):
        return Report(student, "ch3", "ch3", status=status,
                      cells=[CellReport("test_mask", 0.0 if mask_messages else 1.0, 1.0, False, mask_messages),
                             CellReport("test_q1", 2.0, 2.0, False, [])])

    reports = [report("a", flipped), report("b", flipped), report("c", raised), report("d", []),
               report("e", flipped, status="rejected")]  # a rejected submission says nothing about the cells
    points = {r.student: {c.grade_id: c.score for c in r.cells} for r in reports}
    points["d"]["test_q1"] = 1.0  # a manual score below full marks, with nothing said
    mask, q1 = question_stats(assignment, reports, points)
    assert mask == {"grade_id": "test_mask", "max_score": 1.0, "graded": 4, "mean": 0.25, "full_marks": 0.25,
                    "failure": "likely cause: mask in the wrong direction", "failure_count": 2}
    assert (q1["mean"], q1["full_marks"], q1["failure"], q1["failure_count"]) == (7 / 4, 0.75, "", 0)
    table = format_questions([mask, q1]).splitlines()
    assert table[1].split() == ["test_mask", "0.25/1", "25%", "likely", "cause:", "mask", "in", "the", "wrong",
                                "direction", "(2)"]
    assert table[2].split() == ["test_q1", "1.8/2", "75%"]
