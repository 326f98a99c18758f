"""Grading workers: jobs run in parallel, and one that crashes or hangs costs only its own job.

``concurrent.futures.ProcessPoolExecutor`` breaks as a whole (``BrokenProcessPool``) when a
worker dies, and cannot stop one job that hangs. Here each worker is a process of its own
with a pipe, given one job at a time, so the parent knows which job each is running and
since when: a worker that dies or passes ``timeout_s`` is killed and replaced, its job is
reported as failed with the reason, and the other jobs go on.
"""
from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import wait


def _serve(fn: Callable, conn) -> None:
    """A worker's loop: receive ``(index, job)``, send back ``(index, True, result)`` or
    ``(index, False, error text)``; ``None`` ends it."""
    while (message := conn.recv()) is not None:
        index, job = message
        try:
            conn.send((index, True, fn(job)))
        except Exception as e:  # noqa: BLE001 -- reported to the parent as this job's failure
            conn.send((index, False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"))


class _Worker:
    def __init__(self, context, fn: Callable):
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(fn, theirs), daemon=True)
        self.process.start()
        theirs.close()
        self.job: int | None = None
        self.started = 0.0

    def give(self, index: int, job) -> None:
        self.job, self.started = index, time.monotonic()
        self.conn.send((index, job))

    def stop(self, kill: bool = False) -> None:
        """End the worker: asked to when idle, killed when ``kill`` (hung, or parent leaving)."""
        if not kill:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def run_jobs(fn: Callable, jobs: list, workers: int, timeout_s: float) -> Iterator[tuple[int, bool, object]]:
    """Yield ``(index, ok, result or error text)`` for each job as it finishes (any order).

    ``fn`` must be picklable (a module-level function): workers are started with "spawn", as a
    fork of a parent that has already run torch (its OpenMP threads) can deadlock.
    """
    context = multiprocessing.get_context("spawn")
    waiting = list(enumerate(jobs))[::-1]
    pool = [_Worker(context, fn) for _ in range(min(workers, len(jobs)))]
    try:
        for worker in pool:
            worker.give(*waiting.pop())
        while any(w.job is not None for w in pool):
            busy = [w for w in pool if w.job is not None]
            next_deadline = min(w.started + timeout_s for w in busy)
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy],
                         timeout=max(next_deadline - time.monotonic(), 0))
            for i, worker in enumerate(pool):
                if worker.job is None:
                    continue
                died = (worker.job, False, "the grading worker died (a crash, or killed for memory)")
                if worker.conn in ready:
                    try:
                        outcome, replace = worker.conn.recv(), False
                    except (EOFError, OSError):
                        outcome, replace = died, True
                elif worker.process.sentinel in ready:
                    outcome, replace = died, True
                elif time.monotonic() >= worker.started + timeout_s:
                    outcome, replace = (worker.job, False, f"grading took longer than {timeout_s:g} s and was "
                                                           "stopped"), True
                else:
                    continue
                if replace or not worker.process.is_alive():  # dead or hung: a fresh worker takes its place
                    worker.stop(kill=True)
                    worker = pool[i] = _Worker(context, fn)
                worker.job = None
                yield outcome
                if waiting:
                    worker.give(*waiting.pop())
    finally:
        for worker in pool:
            worker.stop(kill=worker.job is not None)
