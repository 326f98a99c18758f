"""Grading jobs on a Dask cluster: the sibling of ``pool.run_jobs`` for many machines.

Dask distributed does the scheduling (``pip install "llmcourse[cluster]"``); this module only
feeds it jobs and watches them, with ``run_jobs``'s contract: each job's outcome is yielded as
it finishes, and a job whose worker dies or that runs past its time costs only that job.

* A worker that dies mid-job: the scheduler runs the job again on another worker, up to its
  ``distributed.scheduler.allowed-failures`` (3); past that the job is reported failed.
* A job still running ``timeout_s`` after it was sent is cancelled, and its worker restarted by
  its nanny (a cancelled Dask task keeps its thread: the worker would stay busy with it).
* At most as many jobs are in flight as the cluster has worker threads, so a job's time counts
  from when a worker can take it, and the client holds only the jobs being graded.
"""
from __future__ import annotations

import re
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

SCHEDULER_FORMS = "tcp://HOST:PORT (a running Dask scheduler) or local:N (N workers on this machine)"


class ClusterUnavailable(RuntimeError):
    """Dask distributed is not installed, or the scheduler cannot be reached or has no workers."""


def parse_scheduler(value: str) -> tuple[str, str | int]:
    """``("local", N)`` for ``local:N``, ``("tcp", address)`` for ``tcp://HOST:PORT``; anything
    else is a ``ValueError`` naming the two forms."""
    if match := re.fullmatch(r"local:(\d+)", value):
        if int(match[1]) >= 1:
            return "local", int(match[1])
    elif re.fullmatch(r"tcp://[\w.\-]+:\d{1,5}|tcp://\[[0-9a-fA-F:]+\]:\d{1,5}", value):
        return "tcp", value
    raise ValueError(f"--scheduler {value!r}: expected {SCHEDULER_FORMS}")


def check_scheduler(value: str) -> None:
    """Refuse a bad ``--scheduler`` value, or a machine without Dask distributed, before
    anything is graded (``ValueError``, ``ClusterUnavailable``)."""
    parse_scheduler(value)
    _distributed()


def _distributed():
    """The ``distributed`` module, imported only when a cluster is asked for."""
    try:
        import distributed
    except ImportError:
        raise ClusterUnavailable("--scheduler needs the cluster extra: pip install 'llmcourse[cluster]'") from None
    return distributed


@contextmanager
def connect(scheduler: str, wait_s: float):
    """A Dask ``Client`` of ``scheduler`` with at least one worker (waiting up to ``wait_s``);
    for ``local:N``, of a ``LocalCluster`` of N single-threaded worker processes on the
    loopback, closed afterwards."""
    distributed = _distributed()
    kind, where = parse_scheduler(scheduler)
    with ExitStack() as stack:
        if kind == "local":
            # one thread each: a worker grades one submission at a time, like a pool worker
            where = stack.enter_context(distributed.LocalCluster(
                n_workers=where, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None))
        try:
            client = stack.enter_context(distributed.Client(where))
        except OSError as e:
            raise ClusterUnavailable(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        try:
            client.wait_for_workers(1, timeout=wait_s)
        except TimeoutError:
            raise ClusterUnavailable(f"no Dask worker joined the scheduler at {scheduler} "
                                     f"within {wait_s:g} s") from None
        yield client


def run_on_cluster(fn: Callable, jobs: list, scheduler: str, timeout_s: float,
                   send: Callable = lambda job: job) -> Iterator[tuple[int, bool, object]]:
    """Yield ``(index, ok, result or error text)`` for each job as it finishes (any order),
    ``fn(send(job))`` run on a worker of ``scheduler`` (see ``parse_scheduler``).

    ``send`` makes, on this machine, what a worker is given for a job, just before it is sent
    (so the client holds only the jobs in flight). ``fn`` and what ``send`` returns must be
    picklable, and ``fn`` importable on the workers (a module-level function of a package they
    have). A job's ``timeout_s`` counts from when it is sent.
    """
    with connect(scheduler, wait_s=timeout_s) as client:
        yield from _run(client, fn, jobs, timeout_s, send)


def _run(client, fn: Callable, jobs: list, timeout_s: float, send: Callable) -> Iterator[tuple[int, bool, object]]:
    distributed = _distributed()
    waiting = list(enumerate(jobs))[::-1]
    running: dict = {}  # future -> (index, deadline)
    run = uuid.uuid4().hex[:8]  # keys unique on a scheduler other clients share

    def fill(slots: int) -> None:
        """Send waiting jobs until ``slots`` are in flight."""
        while waiting and len(running) < slots:
            index, job = waiting.pop()
            future = client.submit(fn, send(job), key=f"{fn.__name__}-{run}-{index}", pure=False)
            running[future] = (index, time.monotonic() + timeout_s)

    try:
        while waiting or running:
            slots = max(1, sum(client.nthreads().values()))
            fill(slots)
            first_deadline = min(deadline for _, deadline in running.values())
            try:
                done = distributed.wait(list(running), timeout=max(first_deadline - time.monotonic(), 0.01),
                                        return_when="FIRST_COMPLETED").done
            except TimeoutError:
                done = set()
            finished = []
            for future in done:
                if future.status in ("lost", "pending"):  # its worker died with the result: run again
                    continue
                index, _ = running.pop(future)
                finished.append((index, *_outcome(future)))
            for future, (index, deadline) in list(running.items()):
                if not future.done() and time.monotonic() >= deadline:  # a done one is yielded next
                    _cancel(client, future)
                    del running[future]
                    finished.append((index, False, f"grading took longer than {timeout_s:g} s: cancelled"))
            fill(slots)  # the next jobs first: the workers grade them while the client records these
            yield from finished
    finally:
        for future in running:
            future.cancel()


def _outcome(future) -> tuple[bool, object]:
    """``(True, result)`` of a finished future, else ``(False, why)``; the future is released,
    so that the scheduler does not run it again when the worker holding its result dies."""
    distributed = _distributed()
    try:
        if future.cancelled():
            return False, "the cluster cancelled this job"
        return True, future.result()
    except distributed.KilledWorker:
        return False, ("every grading worker that took it died (a crash, or killed for memory): "
                       "it was given up after distributed.scheduler.allowed-failures retries")
    except Exception as error:  # noqa: BLE001 -- the job's own failure, reported for it alone
        return False, "".join(traceback.format_exception(error, limit=5)).strip()
    finally:
        future.release()


def _cancel(client, future) -> None:
    """Cancel a job that ran out of time, and restart the worker running it: Dask cannot stop a
    running task, whose thread would keep the worker busy (its sandboxes die with it)."""
    workers = [worker for worker, keys in client.processing().items() if future.key in keys]
    future.cancel()
    if workers:
        client.restart_workers(workers, raise_for_error=False)
