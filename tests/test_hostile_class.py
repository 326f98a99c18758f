"""A hostile class graded in one call: files, ids and sandbox leftovers that attack the grader.

Each attacker is graded beside honest students, some sorted before and some after it (ids
``aa_honest`` and ``zz_honest``): the attacker gets nothing it did not earn, with a reason,
and the honest students get exactly their grades and feedback. Classes of attack:

* submissions that are not plain files (section 3 of the hardening issue): a symlink to the
  instructor's solutions, a student folder that is a symlink to another student's, a hard
  link, a FIFO, a file of 40 MB;
* student ids that nbgrader reads as globs, spreadsheets as formulas, terminals as escapes;
* what a sandbox leaves behind (section 2): ``outputs.json`` as a symlink to ``/dev/zero``
  or as a FIFO, an executed notebook forged by the feedback kernel before it kills its
  nbclient parent, ``executed.ipynb`` replaced by a symlink to the solutions;
* a grading worker that dies or hangs, and a feedback page that fails (section 4).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from llmcourse.grading import pool, sandbox, scratch
from llmcourse.grading.grade import grade_assignment
from llmcourse.grading.intake import printable, student_id_problem
from llmcourse.grading.sandbox import Limits, find_bwrap
from llmcourse.grading.untrusted import MissingFile, UntrustedFile, read_untrusted

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures import FULL, SOURCE, Fixture, notebook_text  # noqa: E402

needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed "
                                 "(scripts/install_system_deps.sh installs it)")
LIMITS = Limits(wall_s=60, cell_s=20)
HONEST = ("aa_honest", "zz_honest")
SECRET = "INSTRUCTOR-ONLY-" + "7d1f"  # in a host file the grader can read and no student may see

# The answer runner calls causal_mask, then writes outputs.json: the student's function
# replaces it first, so the runner writes through the symlink (or into the FIFO) and exits 0.
OUTPUTS_TO_DEV_ZERO = '''import os

def causal_mask(T):
    if not os.path.lexists("outputs.json"):
        os.symlink("/dev/zero", "outputs.json")
    return torch.ones(T, T, dtype=torch.bool).tril()'''
OUTPUTS_AS_FIFO = '''import os

_keep = []

def causal_mask(T):
    if not os.path.lexists("outputs.json"):
        os.mkfifo("outputs.json")
        _keep.append(os.open("outputs.json", os.O_RDONLY | os.O_NONBLOCK))  # so the runner's write goes through
    return torch.ones(T, T, dtype=torch.bool).tril()'''
# In the feedback kernel (NBGRADER_EXECUTION is set there, not in the answer runner): write a
# forged executed notebook with the instructor's code, then kill the nbclient parent.
FORGE_EXECUTED = '''import json, os, signal

if os.environ.get("NBGRADER_EXECUTION"):
    nb = json.load(open("restored.ipynb"))
    for cell in nb["cells"]:
        if cell.get("metadata", {{}}).get("nbgrader", {{}}).get("grade_id") == "causal_mask":
            cell["source"] = "FORGED: def causal_mask(T): return torch.ones(T, T).tril()"
    json.dump(nb, open("executed.ipynb", "w"))
    json.dump({{"error": None}}, open("execution.json", "w"))
    os.kill(os.getppid(), signal.SIGKILL)

def causal_mask(T):
    return torch.ones(T, T, dtype=torch.bool).triu()'''
# In the feedback kernel: a child that keeps replacing executed.ipynb by a symlink to the
# instructor's source, racing the end of the sandbox.
SYMLINK_EXECUTED = '''import os, time

if os.environ.get("NBGRADER_EXECUTION") and os.fork() == 0:
    os.setsid()
    for _ in range(200000):
        try:
            os.symlink({source!r}, "executed.tmp")
            os.replace("executed.tmp", "executed.ipynb")
        except OSError:
            pass
        time.sleep(0.0005)
    os._exit(0)

def causal_mask(T):
    return torch.ones(T, T, dtype=torch.bool).triu()'''
WRONG_MASK = ("test_causal_mask", "hidden_causal_mask", "test_multi_head_attention", "hidden_multi_head_attention")
BAD_IDS = ["[x]", '=HYPERLINK("evil.example","click")', "\x1b[2Jcleared", ".hidden", "-rf"]


def write(submitted: Path, name: str, text: str) -> Path:
    path = submitted / name / "ch3" / "ch3.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_class(tmp: Path) -> Path:
    """Honest students around every attacker; returns the submitted folder."""
    submitted = tmp / "submitted"
    secret = json.loads(notebook_text(Fixture("solution")))
    secret["cells"][0]["source"] = SECRET
    (tmp / "secret.ipynb").write_text(json.dumps(secret))
    for name in HONEST:
        write(submitted, name, notebook_text(Fixture(name)))
    # submissions that are not plain files
    link = submitted / "file_symlink" / "ch3" / "ch3.ipynb"
    link.parent.mkdir(parents=True)
    link.symlink_to(SOURCE)
    (submitted / "folder_symlink").symlink_to(submitted / "aa_honest")
    outside = tmp / "elsewhere.ipynb"
    outside.write_text(notebook_text(Fixture("solution")))
    hard = submitted / "hard_link" / "ch3" / "ch3.ipynb"
    hard.parent.mkdir(parents=True)
    os.link(outside, hard)
    fifo = submitted / "fifo" / "ch3" / "ch3.ipynb"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    huge = write(submitted, "huge_file", notebook_text(Fixture("solution")))
    os.truncate(huge, 40 * 2**20)
    # ids
    for n, name in enumerate(BAD_IDS):
        write(submitted, name, notebook_text(Fixture(f"bad_id_{n}")))
    # what the sandbox leaves behind
    for name, code in [("outputs_dev_zero", OUTPUTS_TO_DEV_ZERO), ("outputs_fifo", OUTPUTS_AS_FIFO),
                       ("forged_executed", FORGE_EXECUTED.format()),
                       ("symlinked_executed", SYMLINK_EXECUTED.format(source=str(tmp / "secret.ipynb")))]:
        write(submitted, name, notebook_text(Fixture(name, {"causal_mask": code})))
    return submitted


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    submitted = make_class(tmp)
    lines = []
    reports = grade_assignment("ch3", submitted, tmp / "out", jobs=2, limits=LIMITS, log=lines.append)
    return {"reports": {r.student: r for r in reports}, "out": tmp / "out", "log": lines, "tmp": tmp}


def points(report) -> dict[str, float]:
    return {c.grade_id: c.score for c in report.cells}


def text_of(report) -> str:
    return json.dumps([report.reason, report.notes, [c.messages for c in report.cells]])


def rows(out: Path) -> dict[str, dict]:
    return {r["student"]: r for r in csv.DictReader((out / "grades.csv").open(newline=""))}


@pytest.mark.slow
@needs_bwrap
def test_honest_students_keep_full_marks_and_feedback(graded):
    for name in HONEST:
        report = graded["reports"][name]
        assert points(report) == {k: float(v) for k, v in FULL.items()}, text_of(report)
        page = graded["out"] / "feedback" / name / "ch3" / "ch3.html"
        assert page.is_file() and "Grader" in page.read_text()
        assert float(rows(graded["out"])[name]["score"]) == sum(FULL.values())


@pytest.mark.slow
@needs_bwrap
@pytest.mark.parametrize("name, expect", [
    ("file_symlink", "a symlink"), ("folder_symlink", "symlink"), ("hard_link", "hard link"),
    ("fifo", "not a regular file"), ("huge_file", "too large")])
def test_submission_that_is_not_a_plain_file_is_refused(graded, name, expect):
    report = graded["reports"][name]
    assert report.status == "rejected" and report.score == 0, text_of(report)
    assert expect in report.reason, report.reason
    assert rows(graded["out"])[name]["status"] == "rejected"


@pytest.mark.slow
@needs_bwrap
def test_bad_student_ids_are_refused_and_neutralised(graded):
    by_shown = {printable(name, 100): name for name in BAD_IDS}
    table = rows(graded["out"])
    for shown, name in by_shown.items():
        report = graded["reports"][shown]
        assert report.status == "rejected" and "not a valid student id" in report.reason, text_of(report)
        key = "'" + shown if shown.startswith(("=", "-")) else shown
        assert table[key]["status"] == "rejected", table.keys()
    raw = (graded["out"] / "grades.csv").read_text()
    assert "\x1b" not in raw and "\n=HYPERLINK" not in raw and ',=HYPERLINK' not in raw
    assert not any("\x1b" in line for line in graded["log"])
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{graded['out'] / 'gradebook.db'}") as gb:
        students = {s.id for s in gb.students}
    assert not students & set(BAD_IDS), students


@pytest.mark.slow
@needs_bwrap
@pytest.mark.parametrize("name", ["outputs_dev_zero", "outputs_fifo"])
def test_runner_outputs_that_are_not_plain_files_count_for_nothing(graded, name):
    """Graded code may not import os (the allowlist); if it got around that, the parent would
    still refuse the file (``test_read_outputs_refuses_what_is_not_the_wire_format``)."""
    report = graded["reports"][name]
    assert all(points(report)[c] == 0 for c in WRONG_MASK) and "imports os" in text_of(report), text_of(report)


def test_read_outputs_refuses_what_is_not_the_wire_format(tmp_path):
    from safetensors.torch import save

    from llmcourse.grading.wire import WireError, read_outputs

    def folder(name, outputs, tensors=b""):
        path = tmp_path / name
        path.mkdir()
        if callable(outputs):
            outputs(path / "outputs.json")
        else:
            (path / "outputs.json").write_bytes(outputs)
        (path / "outputs.safetensors").write_bytes(tensors or save({}))
        return path

    good = json.dumps({"cells": [{"id": "a", "error": None}], "calls": {"c0.0": {"output": {"value": 1}}}}).encode()
    assert read_outputs(folder("good", good))[1] == {"c0.0": {"output": {"value": 1}}}
    cases = {"dev_zero": (lambda p: p.symlink_to("/dev/zero"), "plain file"),
             "fifo": (lambda p: os.mkfifo(p), "not a regular file"),
             "huge": (lambda p: os.truncate(p, 17 * 2**20) if p.touch() is None else None, "too large"),
             "garbled": (b'{"cells": [', "garbled"), "shape": (b'[1, 2]', "format"),
             "deep": (b"[" * 100000 + b"]" * 100000, "garbled")}
    for name, (outputs, why) in cases.items():
        with pytest.raises(WireError, match=why):
            read_outputs(folder(name, outputs))
    with pytest.raises(WireError, match="without writing"):
        read_outputs(tmp_path)
    with pytest.raises(WireError, match="garbled"):
        read_outputs(folder("bad_tensors", good, b"\xff" * 100))


@pytest.mark.slow
@needs_bwrap
@pytest.mark.parametrize("name", ["forged_executed", "symlinked_executed"])
def test_feedback_is_built_from_the_trusted_notebook(graded, name):
    """The wrong mask loses its cells, and neither the forged code nor the instructor's source
    reaches the autograded notebook or the feedback."""
    report = graded["reports"][name]
    got = points(report)
    assert all(got[c] == 0 for c in WRONG_MASK) and all(got[c] == FULL[c] for c in FULL if c not in WRONG_MASK), \
        text_of(report)
    notebook = (graded["out"] / "autograded" / name / "ch3" / "ch3.ipynb").read_text()
    page = (graded["out"] / "feedback" / name / "ch3" / "ch3.html").read_text()
    assert SECRET not in notebook and SECRET not in page
    cell = next(c for c in json.loads(notebook)["cells"]
                if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "causal_mask")
    submitted = FORGE_EXECUTED.format() if name == "forged_executed" else SYMLINK_EXECUTED.format(
        source=str(graded["tmp"] / "secret.ipynb"))
    assert "".join(cell["source"]) == submitted  # the code the student really submitted, not the forgery


@pytest.mark.slow
@needs_bwrap
def test_no_scratch_folder_is_left_behind(graded):
    """Folders of processes that have ended (the workers of the class above): none is left."""
    owners = {p: scratch._owner_pid(p) for p in Path(tempfile.gettempdir()).glob("llmcourse-*")}
    left = [p for p, pid in owners.items() if pid is not None and not sandbox.process_alive(pid)]
    assert not left, left


def test_folders_of_a_killed_grader_are_removed_by_the_next_run():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Path(tempfile.mkdtemp(prefix=f"llmcourse-grade-{dead.pid}-"))
    (stale / "runner").mkdir()
    with sandbox.scratch_folder("grade") as mine:
        assert stale in scratch.remove_stale()
        assert not stale.exists() and Path(mine).is_dir()


# ---------------------------------------------------------------- the read every grader file goes through

def test_read_untrusted_refuses_everything_but_a_small_regular_file(tmp_path):
    (tmp_path / "ok").write_bytes(b"fine")
    assert read_untrusted(tmp_path, "ok", 10) == b"fine"
    (tmp_path / "big").write_bytes(b"x" * 11)
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "up").symlink_to(tmp_path.parent)
    os.mkfifo(tmp_path / "fifo")
    os.link(tmp_path / "ok", tmp_path / "ok2")
    (tmp_path / "dir").mkdir()
    cases = {"big": "too large", "zero": "symlink", "fifo": "not a regular file", "ok2": "hard link",
             "dir": "not a regular file", "nothing": "does not exist"}
    for name, why in cases.items():
        with pytest.raises(UntrustedFile, match=why):
            read_untrusted(tmp_path, name, 10)
    with pytest.raises(UntrustedFile, match="not a folder"):
        read_untrusted(tmp_path, ["up", tmp_path.name, "big"], 10)
    for name in ("..", ".", "a/b", ""):
        with pytest.raises(UntrustedFile, match="plain file name"):
            read_untrusted(tmp_path, name, 10)
    with pytest.raises(MissingFile):
        read_untrusted(tmp_path, ["no", "such"], 10)


def test_student_ids_are_an_allowlist():
    for good in ["alice", "bob.smith", "s12345", "kim_min-jun", "jo@uni", "명수"]:
        assert student_id_problem(good) is None, good
    for bad in BAD_IDS + ["a/b", "a*", "a?", "", "x" * 101, "tab\tname", "new\nline", "a b", "semi;colon"]:
        assert student_id_problem(bad), bad


def test_printable_strips_terminal_escapes():
    assert printable("\x1b[31mred\x1b[0m\n") == "?[31mred?[0m?"


# ---------------------------------------------------------------- workers that die or hang

def _job(kind):
    if kind == "die":
        os._exit(7)
    if kind == "hang":
        time.sleep(3600)
    if kind == "raise":
        raise RuntimeError("a grader bug")
    return f"done {kind}"


def test_a_dead_or_hung_worker_costs_only_its_own_job():
    jobs = ["a", "die", "b", "hang", "raise", "c", "d"]
    start = time.monotonic()
    results = {index: (ok, value) for index, ok, value in pool.run_jobs(_job, jobs, workers=2, timeout_s=8)}
    assert time.monotonic() - start < 120
    assert {i: results[i] for i in (0, 2, 5, 6)} == {0: (True, "done a"), 2: (True, "done b"),
                                                     5: (True, "done c"), 6: (True, "done d")}
    assert results[1][0] is False and "died" in results[1][1]
    assert results[3][0] is False and "longer than 8 s" in results[3][1]
    assert results[4][0] is False and "a grader bug" in results[4][1]


@needs_bwrap
def test_a_failing_feedback_page_costs_one_student(tmp_path, monkeypatch):
    from nbgrader.apps import NbGraderAPI

    real = NbGraderAPI.generate_feedback

    def fail_for_one(self, assignment, student, force=True):
        if student == "aa_victim":
            return {"success": False, "error": "a template error"}
        return real(self, assignment, student, force=force)

    monkeypatch.setattr(NbGraderAPI, "generate_feedback", fail_for_one)
    for name in ("aa_victim", "zz_honest"):
        write(tmp_path / "submitted", name, notebook_text(Fixture("solution")))
    reports = {r.student: r for r in grade_assignment("ch3", tmp_path / "submitted", tmp_path / "out", jobs=1,
                                                      limits=LIMITS, log=lambda *a: None)}
    assert reports["zz_honest"].score == reports["aa_victim"].score == sum(FULL.values())
    assert "Grader" in (tmp_path / "out" / "feedback" / "zz_honest" / "ch3" / "ch3.html").read_text()
    victim = (tmp_path / "out" / "feedback" / "aa_victim" / "ch3" / "ch3.html").read_text()
    assert "could not be made" in victim
    assert set(rows(tmp_path / "out")) == {"aa_victim", "zz_honest"}
