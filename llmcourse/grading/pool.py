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

READY = "ready"


def _serve(fn: Callable, conn) -> None:
    """A worker's loop: say ``READY`` once started, then receive ``(index, job)`` and send back
    ``(index, True, result)`` or ``(index, False, error text)``; ``None`` ends it."""
    conn.send(READY)
    while (message := conn.recv()) is not None:
        index, job = message
        try:
            conn.send((index, True, fn(job)))
        except Exception as e:  # noqa: BLE001 -- reported to the parent as this job's failure
            conn.send((index, False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"))


class _Worker:
    """One worker process, and the job it runs (``None`` while it starts)."""

    def __init__(self, context, fn: Callable):
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(fn, theirs), daemon=True)
        self.process.start()
        theirs.close()
        self.ready = False
        self.job: int | None = None
        self.started = 0.0

    def give(self, index: int, job) -> None:
        self.job, self.started = index, time.monotonic()
        try:
            self.conn.send((index, job))
        except OSError:
            pass  # it died meanwhile: its sentinel says so next

    def receive(self):
        """The worker's next message, or None when it is gone."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None

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

    A job's ``timeout_s`` counts from when a started worker takes it. ``fn`` must be
    picklable (a module-level function): workers are started with "spawn", as a fork of a
    parent that has already run torch (its OpenMP threads) can deadlock.
    """
    context = multiprocessing.get_context("spawn")
    waiting = list(enumerate(jobs))[::-1]
    running = [_Worker(context, fn) for _ in range(min(workers, len(jobs)))]
    try:
        while running:
            deadlines = [w.started + timeout_s for w in running if w.job is not None]
            ready = wait([w.conn for w in running] + [w.process.sentinel for w in running],
                         timeout=max(min(deadlines) - time.monotonic(), 0) if deadlines else None)
            for worker in list(running):
                if worker.conn in ready:
                    message = worker.receive()
                elif worker.process.sentinel in ready:
                    message = None
                elif worker.job is not None and time.monotonic() >= worker.started + timeout_s:
                    message = f"grading took longer than {timeout_s:g} s and was stopped"
                else:
                    continue
                if not worker.ready:
                    if message != READY:
                        raise RuntimeError(f"a grading worker could not start (exit code {worker.process.exitcode})")
                    worker.ready = True
                elif not isinstance(message, tuple):  # dead or hung: a fresh worker takes its place
                    yield worker.job, False, message or "the grading worker died (a crash, or killed for memory)"
                    worker.stop(kill=True)
                    running.remove(worker)
                    if waiting:
                        running.append(_Worker(context, fn))
                    continue
                else:
                    worker.job = None
                if waiting:  # the next job first: the worker grades it while the parent records this one
                    worker.give(*waiting.pop())
                else:
                    worker.stop()
                    running.remove(worker)
                if isinstance(message, tuple):
                    yield message
    finally:
        for worker in running:
            worker.stop(kill=True)
