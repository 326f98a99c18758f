"""Benchmark: how much a hostile sandbox slows down an honest one graded beside it.

    python benchmarks/bench_sandbox_neighbours.py [--repeats R] [--children N] [--iterations I]

The victim is a fixed honest workload (a pure-Python loop of I iterations, one process,
about 1.5 s alone) in one sandbox; it times itself, inside, so sandbox start-up is not
counted. The attacker, in a second sandbox started first, cancels its alarm (the answer
runner's per-cell timeout would not stop it) and forks N busy children, each in a new
session (out of its sandbox's process group), and keeps them spinning until the victim is
done. Conditions, interleaved within each repeat, medians of R repeats:

1. the victim alone (its cgroup as grading makes it);
2. the attacker beside it, both sandboxes with their cgroups as grading makes them (one CPU
   core each: ``cpu.max`` in v2, the CFS quota in v1);
3. the same without the CPU cap (``cpu_cores=None``: the cgroups keep memory and process
   limits, and the scheduler still shares CPU between the two groups by weight);
4. the same with no cgroup at all (what grading did before: per-process limits only, so
   every busy child weighs as much as the victim's one process).

Printed: the victim's seconds and its ratio to "alone" per condition, and the CPU seconds
per wall second the attacker's sandbox got (from its cgroup, where it had one). Grading
runs as many sandboxes side by side as there are cores (``--jobs``, default: the CPU
count), so on a 2-core machine the attacker and the victim are the whole load.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmcourse.grading import sandbox
from llmcourse.grading.sandbox import Limits, run_isolated

VICTIM = '''
import time
start = time.perf_counter()
total = 0
for i in range({iterations}):
    total += i * i % 7
print("victim seconds", time.perf_counter() - start)
'''

ATTACKER = '''
import os, signal, time
signal.signal(signal.SIGALRM, signal.SIG_IGN)  # the per-cell alarm of the answer runner: cancelled
signal.alarm(0)
signal.setitimer(signal.ITIMER_REAL, 0)
for _ in range({children}):
    if os.fork() == 0:
        os.setsid()  # a session of its own: out of reach of a kill of the sandbox's process group
        n = 0
        while True:
            n += 1
            if n % 200_000 == 0 and os.path.exists("stop"):  # the benchmark's way to end it
                os._exit(0)
open("started", "w").close()
while not os.path.exists("stop"):
    time.sleep(0.05)
'''


@contextlib.contextmanager
def no_cgroups():
    """Grade as if no cgroup could be made (with ``allow_no_cgroup``): per-process limits only."""
    real = sandbox.CGROUP_ROOT
    sandbox.CGROUP_ROOT = "/nonexistent-cgroup-root"
    try:
        yield
    finally:
        sandbox.CGROUP_ROOT = real


def victim_seconds(tmp: Path, limits: Limits, iterations: int) -> float:
    work = Path(tempfile.mkdtemp(dir=tmp))
    result = run_isolated([sys.executable, "-c", VICTIM.format(iterations=iterations)], work, limits)
    if result.reason:
        raise SystemExit(f"the victim failed: {result.reason}: {result.stderr.decode()[-500:]}")
    return float(result.stdout.split()[-1])


def beside_attacker(tmp: Path, limits: Limits, args) -> tuple[float, float | None]:
    """The victim's seconds with the attacker running beside it, and the attacker's CPU
    seconds per wall second (None without a cgroup to measure it)."""
    work = Path(tempfile.mkdtemp(dir=tmp))
    results = []
    start = time.monotonic()
    attacker = threading.Thread(target=lambda: results.append(run_isolated(
        [sys.executable, "-c", ATTACKER.format(children=args.children)], work, limits)))
    attacker.start()
    while not (work / "started").exists():
        if not attacker.is_alive():
            raise SystemExit(f"the attacker did not start: {results[0].reason} {results[0].stderr[-500:]}")
        time.sleep(0.01)
    try:
        seconds = victim_seconds(tmp, limits, args.iterations)
    finally:
        (work / "stop").touch()
        attacker.join()
    used = results[0].usage.get("cpu_s")
    return seconds, None if used is None else used / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--children", type=int, default=8, help="busy children the attacker forks")
    parser.add_argument("--iterations", type=int, default=15_000_000, help="the victim's loop")
    args = parser.parse_args()
    if problem := sandbox.sandbox_problem():
        raise SystemExit(f"cannot run: {problem}")
    capped = Limits(wall_s=300)
    uncapped = Limits(wall_s=300, cpu_cores=None)
    bare = Limits(wall_s=300, allow_no_cgroup=True)
    times = {k: [] for k in ("alone", "cgroup", "cgroup, no CPU cap", "no cgroup")}
    attacker_share = {k: [] for k in times}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for repeat in range(args.repeats):
            times["alone"].append(victim_seconds(tmp, capped, args.iterations))
            for label, limits in (("cgroup", capped), ("cgroup, no CPU cap", uncapped)):
                seconds, share = beside_attacker(tmp, limits, args)
                times[label].append(seconds)
                attacker_share[label].append(share)
            with no_cgroups():
                seconds, _ = beside_attacker(tmp, bare, args)
            times["no cgroup"].append(seconds)
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    place, _ = sandbox._find_place(sandbox.CGROUP_ROOT, sandbox.os.geteuid())
    alone = statistics.median(times["alone"])
    print(f"\ncgroup v{place.version}; attacker: {args.children} busy children in new sessions, alarm cancelled; "
          f"medians of {args.repeats} interleaved repeats")
    print("| victim | seconds | vs alone | attacker's CPU s per s |")
    print("|---|---:|---:|---:|")
    for label, values in times.items():
        shares = [s for s in attacker_share[label] if s is not None]
        share = f"{statistics.median(shares):.2f}" if shares else ""
        print(f"| {label} | {statistics.median(values):.2f} | {statistics.median(values) / alone:.2f}x | {share} |")


if __name__ == "__main__":
    main()
