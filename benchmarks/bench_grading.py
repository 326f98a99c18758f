"""Benchmark the trusted grading pipeline.

    python benchmarks/bench_grading.py [--students N]
    python benchmarks/bench_grading.py --sandbox [--students N] [--repeats R]
    python benchmarks/bench_grading.py --check [--repeats R] [--against DIR]
    python benchmarks/bench_grading.py --cluster [--students N] [--repeats R]

Default:
1. One student: the five assignments (ch1-ch5, the solution notebooks as submissions),
   each graded as ``llmcourse grade chN`` does (``grade_assignment``: answer runner,
   notebook execution for feedback, gradebook, feedback HTML, CSV), one after the other.
2. A class of N copies of the ch3 solution graded with --jobs 1 and --jobs 2.

With ``--against DIR`` (another checkout of the course, e.g. ``git worktree add /tmp/before
HEAD~5``): the one-student measurement of this checkout and of DIR, interleaved in one run,
each round in a fresh process importing its own ``llmcourse``; medians per assignment.

With ``--sandbox``: what the bubblewrap sandbox adds, side by side in one run (the two
sides interleaved, medians of R repeats): one sandboxed start (``run_isolated`` of an empty
Python program; grading a notebook starts two), one notebook graded, and the class of N
graded with --jobs 2, each with and without the sandbox.

With ``--cluster``: what grading on a Dask cluster adds (``--scheduler local:2``, the
cluster's start and stop included) over ``--jobs 2``: a class of N copies of the ch3
solution graded both ways, the two interleaved, medians of R repeats.

With ``--check``: ``llmcourse check`` of an answered ch3 notebook (the solution, against the
release), each run a fresh process, as a student runs it: with a cold cache (a new, empty
``LLMCOURSE_CACHE_DIR``) and a warm one (the same cache as the run before); medians of R
repeats, and with ``--against DIR`` the same for DIR, interleaved.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from grading_fixtures import BY_NAME, notebook_text  # noqa: E402

from llmcourse.grading.grade import grade_assignment, grade_submission  # noqa: E402
from llmcourse.grading.gradebook import build_gradebook, load_assignment  # noqa: E402
from llmcourse.grading import sandbox  # noqa: E402
from llmcourse.grading.sandbox import Limits, run_isolated  # noqa: E402


@contextlib.contextmanager
def unsandboxed():
    """Grade as if bubblewrap were missing (with ``allow_unsandboxed``): process limits only."""
    real = sandbox.find_bwrap
    sandbox.find_bwrap = lambda: None
    try:
        yield
    finally:
        sandbox.find_bwrap = real


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare_sandbox(args, tmp: Path, trusted, path: Path) -> None:
    if sandbox.sandbox_problem():
        raise SystemExit(f"cannot compare: {sandbox.sandbox_problem()}")
    limits = Limits(allow_unsandboxed=True)
    for n in range(args.students):
        target = tmp / "submitted" / f"student{n:02d}" / "ch3" / "ch3.ipynb"
        target.parent.mkdir(parents=True)
        shutil.copyfile(path, target)
    (tmp / "empty").mkdir()
    measures = {"start (python -c pass)": lambda: run_isolated([sys.executable, "-c", "pass"], tmp / "empty", limits),
                "one notebook graded": lambda: grade_submission(path.read_bytes(), path.name, "bench", trusted, limits),
                f"class of {args.students}, --jobs 2": lambda: grade_assignment(  # every repeat grades all
                    "ch3", tmp / "submitted", tmp / "out", jobs=2, limits=limits, log=lambda *a: None, regrade=True)}
    print(f"sandbox: {sandbox.find_bwrap()}; medians of {args.repeats} interleaved repeats")
    print("| measurement | sandboxed s | not sandboxed s | sandbox adds s |")
    print("|---|---:|---:|---:|")
    for label, fn in measures.items():
        on, off = [], []
        for _ in range(args.repeats):
            on.append(timed(fn))
            with unsandboxed():
                off.append(timed(fn))
        a, b = statistics.median(on), statistics.median(off)
        print(f"| {label} | {a:.2f} | {b:.2f} | {a - b:+.2f} |", flush=True)


def compare_cluster(args, tmp: Path, path: Path) -> None:
    """A class of ``args.students`` graded with --jobs 2 and on a LocalCluster of 2 workers,
    interleaved (every repeat grades everyone: ``regrade``)."""
    for n in range(args.students):
        target = tmp / "submitted" / f"student{n:02d}" / "ch3" / "ch3.ipynb"
        target.parent.mkdir(parents=True)
        shutil.copyfile(path, target)
    ways = {"--jobs 2": ("jobs2", {"jobs": 2}), "--scheduler local:2": ("cluster", {"scheduler": "local:2"})}
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(args.repeats):
        for way, (out, how) in ways.items():
            times[way].append(timed(lambda: grade_assignment("ch3", tmp / "submitted", tmp / out,
                                                             log=lambda *a: None, regrade=True, **how)))
    local, cluster = (statistics.median(times[way]) for way in ways)
    print(f"class of {args.students} (ch3), medians of {args.repeats} interleaved repeats")
    print("| grading | s | s per notebook |")
    print("|---|---:|---:|")
    for way in ways:
        print(f"| {way} | {statistics.median(times[way]):.1f} | {statistics.median(times[way]) / args.students:.2f} |")
    print(f"the cluster path adds {cluster - local:+.1f} s ({100 * (cluster / local - 1):+.1f}%)", flush=True)


def one_student(tmp: Path) -> None:
    """All five assignments of one student, each graded as ``llmcourse grade chN`` does."""
    total = 0.0
    for chapter in ("ch1", "ch2", "ch3", "ch4", "ch5"):
        target = tmp / "one" / chapter / "submitted" / "student" / chapter / f"{chapter}.ipynb"
        target.parent.mkdir(parents=True)
        shutil.copyfile(ROOT / "solutions" / chapter / f"{chapter}.ipynb", target)
        reports = []
        seconds = timed(lambda: reports.extend(grade_assignment(
            chapter, target.parents[2], tmp / "one" / chapter / "out", jobs=1, log=lambda *a: None)))
        total += seconds
        print(f"one student, {chapter}: {seconds:.1f} s, score {reports[0].score:g} / {reports[0].max_score:g}",
              flush=True)
    print(f"one student, all five assignments: {total:.1f} s", flush=True)


ONE_STUDENT = """import sys, tempfile, pathlib
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import bench_grading
with tempfile.TemporaryDirectory() as tmp:
    bench_grading.one_student(pathlib.Path(tmp))
"""


def compare_checkouts(other: Path, repeats: int) -> None:
    """One student's five assignments, this checkout vs ``other``, alternating, in fresh processes."""
    import re

    times: dict[str, dict[str, list[float]]] = {"this": {}, "other": {}}
    for _ in range(repeats):
        for side, tree in (("other", other), ("this", ROOT)):
            env = {**os.environ, "PYTHONPATH": str(tree)}
            out = subprocess.run([sys.executable, "-c", ONE_STUDENT, str(tree)], env=env, cwd=tree,
                                 capture_output=True, text=True, check=True).stdout
            for chapter, seconds in re.findall(r"one student, (ch\d): ([\d.]+) s", out):
                times[side].setdefault(chapter, []).append(float(seconds))
    print(f"this checkout vs {other}: medians of {repeats} interleaved rounds, s per notebook")
    print("| assignment | this | other | this / other |")
    print("|---|---:|---:|---:|")
    for chapter in sorted(times["this"]):
        a, b = statistics.median(times["this"][chapter]), statistics.median(times["other"][chapter])
        print(f"| {chapter} | {a:.2f} | {b:.2f} | {a / b:.3f} |")
    a = sum(statistics.median(v) for v in times["this"].values())
    b = sum(statistics.median(v) for v in times["other"].values())
    print(f"| all five | {a:.2f} | {b:.2f} | {a / b:.3f} |", flush=True)


def time_check(tree: Path, notebook: Path, cache: Path) -> float:
    """Seconds of one ``llmcourse check NOTEBOOK`` with the checkout ``tree``, in a fresh process
    (imports included) with ``cache`` as its cache folder."""
    env = {**os.environ, "PYTHONPATH": str(tree), "LLMCOURSE_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "llmcourse.cli", "check", str(notebook), "--course", str(tree)],
                            env=env, cwd=tree, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if " points" not in result.stdout:
        raise RuntimeError(f"llmcourse check failed in {tree}:\n{result.stdout}\n{result.stderr[-3000:]}")
    return seconds


def compare_check(trees: dict[str, Path], repeats: int, tmp: Path) -> None:
    """``llmcourse check`` of the ch3 solution, cold and warm cache, for each checkout, interleaved.
    The notebook is ``ch3/ch3.ipynb``, the one layout every version accepts."""
    notebook = tmp / "ch3" / "ch3.ipynb"
    notebook.parent.mkdir()
    notebook.write_text(notebook_text(BY_NAME["solution"]))
    warm = {side: tmp / f"warm-{side}" for side in trees}
    for side, tree in trees.items():  # fills the warm caches; not counted
        time_check(tree, notebook, warm[side])
    times: dict[tuple[str, str], list[float]] = {(side, c): [] for side in trees for c in ("cold", "warm")}
    for n in range(repeats):
        for side, tree in trees.items():
            times[side, "cold"].append(time_check(tree, notebook, tmp / f"cold-{side}-{n}"))
            times[side, "warm"].append(time_check(tree, notebook, warm[side]))
    print(f"llmcourse check of ch3 (answered), s: medians of {repeats} interleaved repeats")
    print("| checkout | cold cache | warm cache |")
    print("|---|---:|---:|")
    for side, tree in trees.items():
        cold, hot = statistics.median(times[side, "cold"]), statistics.median(times[side, "warm"])
        print(f"| {side} ({tree}) | {cold:.2f} | {hot:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=6)
    parser.add_argument("--sandbox", action="store_true", help="compare with and without the sandbox")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", type=Path, default=None,
                        help="another checkout: compare one student's grading time (or with --check, "
                             "llmcourse check's) with it")
    parser.add_argument("--cluster", action="store_true",
                        help="compare the class graded with --jobs 2 and on a LocalCluster of 2 workers")
    parser.add_argument("--check", action="store_true",
                        help="time llmcourse check of an answered ch3 notebook, cold and warm cache")
    args = parser.parse_args()
    if args.check:
        trees = {"this": ROOT, **({"other": args.against.resolve()} if args.against else {})}
        with tempfile.TemporaryDirectory() as tmp:
            compare_check(trees, args.repeats, Path(tmp))
        return
    if args.against:
        compare_checkouts(args.against.resolve(), args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trusted = load_assignment(build_gradebook(ROOT, "solutions", "ch3", tmp / "gb"), "ch3", "ch3")
        path = tmp / "ch3.ipynb"
        path.write_text(notebook_text(BY_NAME["solution"]))
        if args.sandbox:
            compare_sandbox(args, tmp, trusted, path)
            return
        if args.cluster:
            compare_cluster(args, tmp, path)
            return
        one_student(tmp)
        for n in range(args.students):
            target = tmp / "submitted" / f"student{n:02d}" / "ch3" / "ch3.ipynb"
            target.parent.mkdir(parents=True)
            shutil.copyfile(path, target)
        for jobs in (1, 2):
            seconds = timed(lambda: grade_assignment("ch3", tmp / "submitted", tmp / f"out{jobs}", jobs=jobs,
                                                     log=lambda *a: None))
            print(f"class of {args.students} (ch3) with --jobs {jobs}: {seconds:.1f} s "
                  f"({seconds / args.students:.2f} s per notebook, gradebook + feedback + CSV included)", flush=True)

if __name__ == "__main__":
    main()
