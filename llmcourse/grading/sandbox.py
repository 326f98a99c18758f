"""Run one untrusted command with limits: the single place where grading starts a process.

``run_isolated`` is implemented with process limits only (``resource.setrlimit`` in the
child, a wall-clock timeout that kills the whole process group, output captured up to a
byte cap). It is **not a sandbox**: the child can read whatever the grading user can
read. Every ``Result`` says so (``sandboxed=False``) and the grading report repeats it.
Issue 7 replaces the body of this file with bubblewrap; nothing else has to change.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SANDBOX_NOTE = "process limits only; not sandboxed"


@dataclass(frozen=True)
class Limits:
    """Per-process limits. ``wall_s`` bounds the whole run; ``cell_s`` is passed on to the
    child (per-cell timeouts are enforced inside it, by nbclient or the answer runner)."""

    wall_s: float = 120.0
    cell_s: float = 20.0
    cpu_s: int = 240
    memory_bytes: int = 6 * 2**30  # address space; torch alone maps ~1.5 GB
    processes: int = 256  # RLIMIT_NPROC (ignored by Linux for root)
    file_bytes: int = 64 * 2**20  # largest file the child may write
    output_bytes: int = 1 * 2**20  # stdout and stderr kept, each


@dataclass(frozen=True)
class Result:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    reason: str  # empty when the command exited by itself with status 0
    sandboxed: bool = False
    note: str = SANDBOX_NOTE


def _set_limits(limits: Limits) -> None:
    """Runs in the child between fork and exec."""
    os.setsid()  # its own process group, so a timeout kills everything it started
    for name, value in [(resource.RLIMIT_AS, limits.memory_bytes), (resource.RLIMIT_CPU, limits.cpu_s),
                        (resource.RLIMIT_NPROC, limits.processes), (resource.RLIMIT_FSIZE, limits.file_bytes)]:
        resource.setrlimit(name, (value, value))


def _drain(stream, cap: int, sink: list[bytes]) -> None:
    """Read ``stream`` to its end, keeping at most ``cap`` bytes (the rest is read and dropped)."""
    kept = 0
    while chunk := stream.read(65536):
        if kept < cap:
            sink.append(chunk[: cap - kept])
            kept += len(sink[-1])
        elif kept == cap:
            sink.append(b"\n[output truncated]\n")
            kept += 1


def _feed(proc: subprocess.Popen, data: bytes, ready_file: Path | None, deadline: float) -> None:
    """Write ``data`` to the child's stdin, once ``ready_file`` exists (if one is named)."""
    try:
        while ready_file is not None and not ready_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                return
            time.sleep(0.01)
        proc.stdin.write(data)
    except (BrokenPipeError, OSError):
        pass  # the child exited or closed its stdin: its loss, reported by its exit status
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass


def run_isolated(argv: list[str], workdir: str | os.PathLike, limits: Limits, stdin: bytes = b"",
                 stdin_after: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run ``argv`` in ``workdir`` under ``limits``; never raises for anything the child does.

    ``stdin`` is written to the child's standard input; with ``stdin_after`` (a file name in
    ``workdir``) only once the child has created that file. The answer runner uses this to
    receive the test inputs only after the student's code has run.
    """
    workdir = Path(workdir)
    deadline = time.monotonic() + limits.wall_s
    proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, preexec_fn=lambda: _set_limits(limits))
    out, err = [], []
    threads = [threading.Thread(target=_drain, args=(proc.stdout, limits.output_bytes, out), daemon=True),
               threading.Thread(target=_drain, args=(proc.stderr, limits.output_bytes, err), daemon=True),
               threading.Thread(target=_feed, args=(proc, stdin, workdir / stdin_after if stdin_after else None,
                                                    deadline), daemon=True)]
    for t in threads:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        timed_out = True
    _kill_group(proc.pid)  # also whatever it left running (a kernel, a fork)
    proc.wait()
    for t in threads:
        t.join(timeout=5)
    code = proc.returncode
    if timed_out:
        reason = f"time limit: stopped after {limits.wall_s:g} s"
    elif code is not None and code < 0:
        sig = signal.Signals(-code).name
        reason = {"SIGXCPU": f"CPU time limit ({limits.cpu_s} s)", "SIGXFSZ": "file size limit",
                  "SIGKILL": "killed (memory or time limit)"}.get(sig, f"killed by {sig}")
    elif code != 0:
        reason = f"exited with status {code}"
    else:
        reason = ""
    return Result(code, b"".join(out), b"".join(err), timed_out, reason)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
