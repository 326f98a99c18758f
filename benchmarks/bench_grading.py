"""Benchmark the trusted grading pipeline on the ch3 pilot.

    python benchmarks/bench_grading.py [--students N]
    python benchmarks/bench_grading.py --sandbox [--students N] [--repeats R]

1. One student's notebook: time of ``grade_submission`` (answer runner + notebook execution).
2. A class of N copies of the solution graded with ``grade_assignment`` with --jobs 1 and 2.

With ``--sandbox``: what the bubblewrap sandbox adds, side by side in one run (the two
sides interleaved, medians of R repeats): one sandboxed start (``run_isolated`` of an empty
Python program; grading a notebook starts two), one notebook graded, and the class of N
graded with --jobs 2, each with and without the sandbox.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from grading_fixtures import BY_NAME, notebook_text  # noqa: E402

from llmcourse.grading.grade import build_gradebook, grade_assignment, grade_submission, load_assignment  # noqa: E402
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
                "one notebook graded": lambda: grade_submission(path, "bench", trusted, limits),
                f"class of {args.students}, --jobs 2": lambda: grade_assignment(
                    "ch3", tmp / "submitted", tmp / "out", jobs=2, limits=limits, log=lambda *a: None)}
    print(f"sandbox: {sandbox.find_bwrap()}; medians of {args.repeats} interleaved repeats")
    print(f"| measurement | sandboxed s | not sandboxed s | sandbox adds s |")
    print("|---|---:|---:|---:|")
    for label, fn in measures.items():
        repeats = args.repeats if not label.startswith("class") else max(1, args.repeats // 3)
        on, off = [], []
        for _ in range(repeats):
            on.append(timed(fn))
            with unsandboxed():
                off.append(timed(fn))
        a, b = statistics.median(on), statistics.median(off)
        print(f"| {label} | {a:.2f} | {b:.2f} | {a - b:+.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=6)
    parser.add_argument("--sandbox", action="store_true", help="compare with and without the sandbox")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trusted = load_assignment(build_gradebook(ROOT, "solutions", "ch3", tmp / "gb"), "ch3", "ch3")
        path = tmp / "ch3.ipynb"
        path.write_text(notebook_text(BY_NAME["solution"]))
        if args.sandbox:
            compare_sandbox(args, tmp, trusted, path)
            return
        for execute in (False, True):
            start = time.perf_counter()
            report, _ = grade_submission(path, "bench", trusted, Limits(), execute=execute)
            label = "answer runner + notebook execution" if execute else "answer runner only"
            print(f"one notebook ({label}): {time.perf_counter() - start:.1f} s, score {report.score:g}")
        for n in range(args.students):
            target = tmp / "submitted" / f"student{n:02d}" / "ch3" / "ch3.ipynb"
            target.parent.mkdir(parents=True)
            shutil.copyfile(path, target)
        for jobs in (1, 2):
            start = time.perf_counter()
            grade_assignment("ch3", tmp / "submitted", tmp / f"out{jobs}", jobs=jobs, log=lambda *a: None)
            seconds = time.perf_counter() - start
            print(f"class of {args.students} with --jobs {jobs}: {seconds:.1f} s "
                  f"({seconds / args.students:.1f} s per notebook, gradebook + feedback + CSV included)")


if __name__ == "__main__":
    main()
