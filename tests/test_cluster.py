"""Grading on a Dask cluster (issue 15): the same results as the local mode, and a worker that
dies or a job that hangs costs only its own job.

The cluster is a ``LocalCluster`` on the loopback (``--scheduler local:2``, or one the test
starts and connects to as ``tcp://127.0.0.1:PORT``), its workers separate processes, as a
real cluster's are on other machines.
"""
from __future__ import annotations

import csv
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

from llmcourse.cli import main  # noqa: E402
from llmcourse.grading.cluster import parse_scheduler, run_on_cluster  # noqa: E402
from llmcourse.grading.sandbox import Limits, find_bwrap  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures import write_class  # noqa: E402

pytestmark = pytest.mark.xdist_group("grading")
needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed")
LIMITS = Limits(wall_s=120, cell_s=8, output_bytes=256 * 1024)
CLASS = ["solution", "mask_flipped", "invalid_json"]  # full marks, a mistake, a refused file
NUMBER = re.compile(r"-?\d+(\.\d+)?(e[-+]?\d+)?")


def local_cluster(workers: int = 2) -> distributed.LocalCluster:
    """A cluster of single-threaded worker processes on the loopback, as ``local:N`` starts."""
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                    dashboard_address=None)


def comparable(report_json: bytes) -> dict:
    """``report.json`` without what differs between any two gradings of the same class: the
    timings, and the numbers in what the checks said (each grading draws fresh inputs: a
    case's shapes, the largest error and where). Points, statuses, reasons and notes stay."""
    saved = json.loads(report_json)
    for student in saved["students"]:
        del student["seconds"]
        for cell in student["cells"]:
            cell["messages"] = [NUMBER.sub("#", m) for m in cell["messages"]]
    for question in saved["questions"]:
        question["failure"] = NUMBER.sub("#", question["failure"])
    return saved


def gradebook_scores(out: Path, students: list[str]) -> dict:
    """(student, grade cell) -> (auto score, manual score), as nbgrader's gradebook holds them."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        return {(student, g.name): (g.auto_score, g.manual_score) for student in students
                for g in gb.find_submission_notebook("ch3", "ch3", student).grades}


def scores(out: Path) -> dict[str, str]:
    return {r["student"]: r["score"] for r in csv.DictReader((out / "grades.csv").open(newline=""))}


# ---------------------------------------------------------------- jobs for run_on_cluster (run on the workers)

def echo_job(job):
    """Most jobs: return what was sent, with the worker's pid."""
    kind, arg = job
    if kind == "hang":
        time.sleep(600)
    if kind == "die_once":  # kills its worker the first time: the marker file says it did
        marker = Path(arg)
        if not marker.exists():
            marker.write_text("died")
            os._exit(1)
    if kind == "die":
        os._exit(1)
    if kind == "raise":
        raise RuntimeError("a bug in the job")
    return kind, arg


def test_scheduler_values_are_checked(tmp_path, capsys):
    assert parse_scheduler("local:2") == ("local", 2)
    assert parse_scheduler("tcp://grader-01.example.org:8786") == ("tcp", "tcp://grader-01.example.org:8786")
    assert parse_scheduler("tcp://10.0.0.5:8786") == ("tcp", "tcp://10.0.0.5:8786")
    for bad in ["local:0", "local:", "local:two", "tcp://host", "http://host:8786", "host:8786", "tcp://:8786",
                "tcp://host:8786/x", "local:2 --evil"]:
        with pytest.raises(ValueError, match="expected tcp://HOST:PORT"):
            parse_scheduler(bad)
    submitted = tmp_path / "submitted"
    write_class(submitted, ["solution"])
    args = ["grade", "ch3", "--submitted", str(submitted), "--out", str(tmp_path / "out"), "--allow-unsandboxed"]
    assert main([*args, "--scheduler", "local:zero"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmcourse grade: error: --scheduler 'local:zero': expected tcp://") and "\n" not in err
    assert main([*args, "--scheduler", "local:2", "--jobs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmcourse grade: error: --jobs and --scheduler: give one") and "\n" not in err, err
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        assert main([*args, "--scheduler", "tcp://127.0.0.1:9"]) == 3  # nothing listens on port 9
    err = capsys.readouterr().err.strip()
    assert "llmcourse grade: error: cannot reach the Dask scheduler at tcp://127.0.0.1:9: " in err, err
    assert not (tmp_path / "out" / "grades.csv").exists()


def test_a_dead_worker_or_a_failing_job_costs_only_that_job(tmp_path):
    jobs = [("ok", 0), ("die_once", str(tmp_path / "died")), ("raise", 0), ("ok", 1)]
    results = {index: (ok, value) for index, ok, value in run_on_cluster(echo_job, jobs, "local:2", 60)}
    assert results[0] == (True, ("ok", 0)) and results[3] == (True, ("ok", 1))
    assert results[1] == (True, ("die_once", str(tmp_path / "died"))), results[1]  # run again elsewhere
    assert (tmp_path / "died").read_text() == "died"
    assert results[2][0] is False and "RuntimeError: a bug in the job" in results[2][1], results[2]

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):  # given up after two deaths
        results = {index: (ok, value) for index, ok, value in run_on_cluster(echo_job, [("die", 0), ("ok", 0)],
                                                                              "local:2", 60)}
    assert results[0][0] is False and "every grading worker that took it died" in results[0][1], results[0]
    assert results[1] == (True, ("ok", 0))


def test_a_job_past_its_time_is_cancelled_and_its_worker_freed(tmp_path):
    jobs = [("hang", 0), ("ok", 0), ("ok", 1), ("ok", 2)]
    started = time.monotonic()
    results = {index: (ok, value) for index, ok, value in run_on_cluster(echo_job, jobs, "local:2", 5)}
    assert results[0] == (False, "grading took longer than 5 s: cancelled"), results[0]
    assert [results[i] for i in (1, 2, 3)] == [(True, ("ok", 0)), (True, ("ok", 1)), (True, ("ok", 2))]
    assert time.monotonic() - started < 60  # never waits for the hung job's 600 s


@pytest.mark.slow
@needs_bwrap
def test_a_class_graded_on_a_cluster_gets_the_local_results(tmp_path):
    from llmcourse.grading.grade import grade_assignment  # here: the workers import this module, quickly

    submitted = tmp_path / "submitted"
    write_class(submitted, CLASS)
    here, there = tmp_path / "jobs2", tmp_path / "cluster"
    grade_assignment("ch3", submitted, here, jobs=2, limits=LIMITS, log=lambda line: None)
    lines: list[str] = []
    reports = grade_assignment("ch3", submitted, there, scheduler="local:2", limits=LIMITS, log=lines.append)
    assert "on the Dask cluster local:2" in lines[0], lines[0]
    assert {r.student: r.status for r in reports} == {"solution": "graded", "mask_flipped": "graded",
                                                      "invalid_json": "rejected"}
    assert (there / "grades.csv").read_text() == (here / "grades.csv").read_text()
    assert comparable((there / "report.json").read_bytes()) == comparable((here / "report.json").read_bytes())
    graded = ["solution", "mask_flipped"]
    assert gradebook_scores(there, graded) == gradebook_scores(here, graded) and gradebook_scores(here, graded)
    for student in graded:
        assert (there / "autograded" / student / "ch3" / "ch3.ipynb").is_file()
        assert (there / "feedback" / student / "ch3" / "ch3.html").is_file()

    # a re-run (after a crash of the client, say) grades only what the results do not hold
    (submitted / "mask_flipped" / "ch3" / "ch3.ipynb").write_bytes((submitted / "solution" / "ch3" / "ch3.ipynb")
                                                                    .read_bytes())
    lines.clear()
    reports = grade_assignment("ch3", submitted, there, scheduler="local:2", limits=LIMITS, log=lines.append)
    assert "grading 1 submissions" in lines[0] and "(2 unchanged since they were graded" in lines[0], lines[0]
    assert {r.student: r.score for r in reports}["mask_flipped"] == 15


@pytest.mark.slow
@needs_bwrap
def test_a_worker_killed_while_grading_costs_no_grade(tmp_path, capsys):
    submitted = tmp_path / "submitted"
    write_class(submitted, ["solution", "mask_flipped"])
    with local_cluster() as cluster:
        killed = []

        def kill_a_busy_worker() -> None:
            """Kill the process of the first worker seen grading (SIGKILL: no goodbye)."""
            with distributed.Client(cluster) as client:
                deadline = time.monotonic() + 60
                while not killed and time.monotonic() < deadline:
                    busy = [w for w, keys in client.processing().items() if keys]
                    if busy:
                        pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                        time.sleep(1.5)  # well into the grading
                        os.kill(pid, 9)
                        killed.append(pid)
                    time.sleep(0.2)

        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        address = cluster.scheduler_address
        assert main(["grade", "ch3", "--submitted", str(submitted), "--out", str(tmp_path / "out"),
                     "--scheduler", address]) == 0
        killer.join()
    assert killed, "no worker was seen grading"
    err = capsys.readouterr().err
    assert "2/2" in err and "failed=0" in err, err[-2000:]
    assert scores(tmp_path / "out") == {"mask_flipped": "10", "solution": "15"}


@pytest.mark.slow
@needs_bwrap
def test_the_cli_grades_on_a_local_cluster(tmp_path, capsys):
    submitted = tmp_path / "submitted"
    write_class(submitted, ["solution"])
    assert main(["grade", "ch3", "--submitted", str(submitted), "--out", str(tmp_path / "out"),
                 "--scheduler", "local:1"]) == 0
    out = capsys.readouterr()
    assert "solution: 15 / 15" in out.out, out.out
    assert "1/1" in out.err and "failed=0" in out.err, out.err[-2000:]
