"""Benchmark the trusted grading pipeline on the ch3 pilot.

    python benchmarks/bench_grading.py [--students N]

1. One student's notebook: time of ``grade_submission`` (answer runner + notebook execution).
2. A class of N copies of the solution graded with ``grade_assignment`` with --jobs 1 and 2.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from grading_fixtures import BY_NAME, notebook_text  # noqa: E402

from llmcourse.grading.grade import build_gradebook, grade_assignment, grade_submission, load_assignment  # noqa: E402
from llmcourse.grading.sandbox import Limits  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trusted = load_assignment(build_gradebook(ROOT, "solutions", "ch3", tmp / "gb"), "ch3", "ch3")
        path = tmp / "ch3.ipynb"
        path.write_text(notebook_text(BY_NAME["solution"]))
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
