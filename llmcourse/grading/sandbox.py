"""Run one untrusted command isolated: the single place where grading starts a process.

``run_isolated`` runs the command inside a bubblewrap (``bwrap``) sandbox:

* **File system**: an empty root with, read-only, ``/usr`` (and the ``/bin``, ``/lib*``
  symlinks), a few files of ``/etc`` (the loader cache; a made-up ``passwd``, ``group``
  and ``hosts``), the Python installation (``sys.base_prefix``, at its own path, since a
  virtual environment's ``python`` is a symlink into it), the virtual environment
  (``sys.prefix``) at ``/opt/venv``, and the grading scripts named in ``argv`` at
  ``/opt/grader/``. ``/tmp`` and ``/dev/shm`` are empty tmpfs, ``/dev`` and ``/proc`` are
  the sandbox's own. The one writable host folder is ``workdir`` (the submission's scratch
  copy), at ``/work``. The course folder, ``solutions/``, the gradebook, other students'
  files and ``llmcourse`` itself are not there: an editable ``llmcourse`` points into the
  repository, which is not mounted, and an installed one is hidden under an empty tmpfs.
  A stub ``llmcourse.grading.check`` (doing nothing) is on ``PYTHONPATH`` so that the
  notebook's given cell imports; scores never come from the sandbox.
* **Namespaces**: own network (only a loopback, for the Jupyter kernel and its client,
  which both run inside), PID (everything left running dies with the sandbox), IPC, UTS
  and cgroup namespaces; ``--die-with-parent``, ``--new-session``, a cleared environment.
* **User**: the code never runs as root. Started by root, bwrap sets up the mounts and a
  tiny launcher switches to a fresh unprivileged uid (random, per run: the process limit
  is counted per uid) before running the command; started by a normal user, bwrap uses
  a user namespace (uid 1000 inside).
* **Limits** (set by the launcher, inside): address space, CPU time, processes, file
  size; a wall-clock timeout that kills the whole sandbox; output kept up to a byte cap.
  From outside, the scratch folder's total size and number of files are measured five
  times a second and the sandbox is killed when they pass ``disk_bytes`` / ``disk_files``
  (so it can overshoot by what it writes in 0.2 s, each file still capped at ``file_bytes``).

Where bwrap is missing or cannot start (macOS, Windows, a container without user
namespaces), ``run_isolated`` raises ``SandboxUnavailable`` with the reason, unless
``Limits.allow_unsandboxed`` is set: then the command runs with process limits only and
its ``Result`` says ``sandboxed=False``, which the grading report and CSV repeat.
"""
from __future__ import annotations

import functools
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SANDBOX_NOTE = "sandboxed (bubblewrap: no network, only its own scratch folder, limits)"
UNSANDBOXED_NOTE = "NOT SANDBOXED: process limits only (bubblewrap unavailable)"

# Where things appear inside the sandbox
WORK = "/work"
VENV = "/opt/venv"
GRADER = "/opt/grader"
STUB = GRADER + "/stub"
SANDBOX_UID = 1000  # inside a user namespace (bwrap started by a normal user)
HOST_UID_RANGE = (2_000_000, 2**24)  # fresh host uid per run (bwrap started by root)
DISK_POLL_S = 0.2  # how often the scratch folder's size is measured


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or unusable here, and running unsandboxed was not allowed."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. ``wall_s`` bounds the whole run; ``cell_s`` is passed on to the
    child (per-cell timeouts are enforced inside it, by nbclient or the answer runner).
    ``allow_unsandboxed``: where bubblewrap is unavailable, run with process limits only
    (results marked "not sandboxed") instead of refusing."""

    wall_s: float = 120.0
    cell_s: float = 20.0
    cpu_s: int = 240
    memory_bytes: int = 4 * 2**30  # address space; torch alone maps ~1.5 GB
    processes: int = 256  # RLIMIT_NPROC (counted for the sandbox's own uid)
    file_bytes: int = 64 * 2**20  # largest file the child may write
    output_bytes: int = 1 * 2**20  # stdout and stderr kept, each
    tmp_bytes: int = 512 * 2**20  # size of the sandbox's /tmp (and of /dev/shm), held in memory
    disk_bytes: int = 256 * 2**20  # total size of the scratch folder (workdir)
    disk_files: int = 10_000  # files and folders in it
    allow_unsandboxed: bool = False


@dataclass(frozen=True)
class Result:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    reason: str  # empty when the command exited by itself with status 0
    sandboxed: bool = False
    note: str = UNSANDBOXED_NOTE


# ---------------------------------------------------------------- is bubblewrap usable here?

def find_bwrap() -> str | None:
    """The bwrap executable on PATH, or None (the one place the tool is looked up)."""
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=None)
def _problem_with(bwrap: str | None, path_env: str) -> str | None:
    if sys.platform != "linux":
        return f"bubblewrap sandboxing needs Linux (this is {sys.platform})"
    if bwrap is None:
        return ("bubblewrap (bwrap) is not installed: install it (Debian/Ubuntu: apt-get install bubblewrap; "
                "Fedora: dnf install bubblewrap) or see scripts/install_system_deps.sh")
    with tempfile.TemporaryDirectory(prefix="llmcourse-probe-") as tmp:
        probe = _run(bwrap, [sys.executable, "-I", "-S", "-c", "import os; os.listdir('/work')"], Path(tmp),
                     Limits(wall_s=30), b"", None, None)
    if probe.returncode != 0:
        err = probe.stderr.decode(errors="replace").strip()[-300:]
        return (f"bubblewrap ({bwrap}) cannot start a sandbox here (user namespaces disabled, or a container "
                f"that forbids them?): {probe.reason}: {err}")
    return None


def sandbox_problem() -> str | None:
    """Why grading cannot be sandboxed on this machine, or None when it can (checked once)."""
    return _problem_with(find_bwrap(), os.environ.get("PATH", ""))


def require_sandbox(limits: Limits) -> bool:
    """True if runs will be sandboxed; False if they will not and ``limits`` allows that.

    Raises ``SandboxUnavailable`` (with what to do) when they cannot be and it is not allowed.
    """
    problem = sandbox_problem()
    if problem is None:
        return True
    if limits.allow_unsandboxed:
        return False
    raise SandboxUnavailable(f"refusing to run student code unsandboxed: {problem}. "
                             f"To run it with process limits only (every result marked 'not sandboxed'), "
                             f"pass --allow-unsandboxed.")


# ---------------------------------------------------------------- running

def run_isolated(argv: list[str], workdir: str | os.PathLike, limits: Limits, stdin: bytes = b"",
                 stdin_after: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run ``argv`` in ``workdir`` under ``limits``; never raises for anything the child does.

    ``argv[0]`` may be ``sys.executable``; other absolute paths to files in ``argv`` (the
    grading scripts) are mounted read-only under ``/opt/grader``. ``stdin`` is written to
    the child's standard input; with ``stdin_after`` (a file name in ``workdir``) only once
    the child has created that file. The answer runner uses this to receive the test
    inputs only after the student's code has run. Raises ``SandboxUnavailable`` when
    bubblewrap cannot be used and ``limits.allow_unsandboxed`` is not set.
    """
    workdir = Path(workdir)
    if require_sandbox(limits):
        return _run(find_bwrap(), argv, workdir, limits, stdin, stdin_after, env)
    return _run(None, argv, workdir, limits, stdin, stdin_after, env)


_LAUNCHER = """\
import os, resource, sys
uid, mem, cpu, nproc, fsize = map(int, sys.argv[1:6])
if uid:
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
for name, value in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu),
                    (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_FSIZE, fsize)):
    resource.setrlimit(name, (value, value))
os.execv(sys.argv[6], sys.argv[6:])
"""

_STUB_INIT = '"""Stub: graded code has no llmcourse (the grader checks answers outside the sandbox)."""\n'
_STUB_GRADING = ('"""Stub: the grader runs the checks outside the sandbox; its results are added below."""\n\n\n'
                 'def check(*args, **kwargs):\n    return None\n')


def _ro(host: str | os.PathLike, inside: str) -> list[str]:
    return ["--ro-bind", str(host), inside]


def _bwrap_argv(bwrap: str, argv: list[str], workdir: Path, limits: Limits, support: Path,
                env: dict[str, str] | None) -> list[str]:
    as_root = os.geteuid() == 0
    cmd = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
           "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
    if not as_root:  # an unprivileged bwrap needs a user namespace; nested ones are refused
        cmd += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--disable-userns"]
    else:  # the launcher needs these two to switch to the fresh uid; it has none afterwards
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    base, prefix = Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()
    parents = sorted({str(d) for d in [*base.parents, Path(VENV).parent, Path("/etc")] if str(d) != "/"})
    for folder in parents:  # bwrap would create the mount points' parents with mode 0700
        cmd += ["--perms", "0755", "--dir", folder]
    cmd += _ro("/usr", "/usr")
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += _ro(top, top)
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf"):
        if os.path.exists(f"/etc/{name}"):
            cmd += _ro(f"/etc/{name}", f"/etc/{name}")
    for name in ("passwd", "group", "hosts"):
        cmd += _ro(support / name, f"/etc/{name}")
    # Python: the installation at its own path (a venv's python is a symlink into it), the venv at VENV
    cmd += _ro(base, str(base))
    python = sys.executable
    places = [(base, str(base))]
    if prefix != base:
        cmd += _ro(prefix, VENV)
        places.insert(0, (prefix, VENV))
        exe = Path(sys.executable)
        python = f"{VENV}/bin/{exe.name}" if exe.parent.parent.resolve() == prefix else python
    # llmcourse itself is never visible: an installed copy under a mounted prefix is hidden
    package = Path(__file__).resolve().parents[1]
    for host, inside in places:
        if package.is_relative_to(host):
            cmd += ["--tmpfs", f"{inside}/{package.relative_to(host)}"]
    size = str(limits.tmp_bytes)
    cmd += ["--dev", "/dev", "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm", "--proc", "/proc",
            "--perms", "1777", "--size", size, "--tmpfs", "/tmp", "--perms", "0755", "--dir", GRADER]
    cmd += _ro(support / "stub", STUB) + _ro(support / "launch.py", f"{GRADER}/launch.py")
    inner = []
    for i, arg in enumerate(argv):
        if i == 0 and arg == sys.executable:
            inner.append(python)
        elif os.path.isabs(arg) and os.path.isfile(arg) and not Path(arg).resolve().is_relative_to(workdir.resolve()):
            inside = f"{GRADER}/{Path(arg).name}"
            cmd += _ro(arg, inside)
            inner.append(inside)
        else:
            inner.append(arg)
    # Last, the root itself read-only: in a user namespace the sandbox's uid owns bwrap's root
    # tmpfs, and files written there would use memory outside every limit.
    cmd += ["--bind", str(workdir), WORK, "--remount-ro", "/", "--chdir", WORK, "--clearenv"]
    variables = {"PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": WORK, "USER": "student",
                 "LOGNAME": "student", "LANG": "C.UTF-8", "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1",
                 "PYTHONPATH": STUB, "MPLCONFIGDIR": "/tmp/matplotlib", "IPYTHONDIR": "/tmp/ipython",
                 "JUPYTER_RUNTIME_DIR": "/tmp/jupyter", "JUPYTER_PLATFORM_DIRS": "1",
                 "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                 "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    for key, value in variables.items():
        cmd += ["--setenv", key, value]
    uid = secrets.randbelow(HOST_UID_RANGE[1] - HOST_UID_RANGE[0]) + HOST_UID_RANGE[0] if as_root else 0
    if as_root:
        os.chown(workdir, uid, uid)
        for child in workdir.iterdir():
            os.chown(child, uid, uid, follow_symlinks=False)
    return cmd + ["--", python, "-I", "-S", f"{GRADER}/launch.py", str(uid), str(limits.memory_bytes),
                  str(limits.cpu_s), str(limits.processes), str(limits.file_bytes), *inner]


def _write_support(support: Path) -> None:
    (support / "launch.py").write_text(_LAUNCHER)
    (support / "passwd").write_text(f"student:x:{SANDBOX_UID}:{SANDBOX_UID}:student:{WORK}:/bin/sh\n")
    (support / "group").write_text(f"student:x:{SANDBOX_UID}:\n")
    (support / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    grading = support / "stub" / "llmcourse" / "grading"
    grading.mkdir(parents=True)
    (grading.parent / "__init__.py").write_text(_STUB_INIT)
    (grading / "__init__.py").write_text(_STUB_GRADING)
    for path in [support, *support.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _set_limits(limits: Limits) -> None:
    """Unsandboxed runs: in the child between fork and exec (RLIMIT_NPROC does not bind root)."""
    for name, value in [(resource.RLIMIT_AS, limits.memory_bytes), (resource.RLIMIT_CPU, limits.cpu_s),
                        (resource.RLIMIT_NPROC, limits.processes), (resource.RLIMIT_FSIZE, limits.file_bytes)]:
        resource.setrlimit(name, (value, value))


def _run(bwrap: str | None, argv: list[str], workdir: Path, limits: Limits, stdin: bytes,
         stdin_after: str | None, env: dict[str, str] | None) -> Result:
    deadline = time.monotonic() + limits.wall_s
    with tempfile.TemporaryDirectory(prefix="llmcourse-sandbox-") as support:
        if bwrap is not None:
            support = Path(support)
            _write_support(support)
            cmd, preexec, child_env = _bwrap_argv(bwrap, argv, workdir, limits, support, env), None, None
        else:
            cmd, preexec, child_env = argv, functools.partial(_set_limits, limits), env
        # its own process group, so a timeout kills everything it started (bwrap: the whole sandbox)
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=child_env, preexec_fn=preexec, start_new_session=True)
        out, err = [], []
        threads = [threading.Thread(target=_drain, args=(proc.stdout, limits.output_bytes, out), daemon=True),
                   threading.Thread(target=_drain, args=(proc.stderr, limits.output_bytes, err), daemon=True),
                   threading.Thread(target=_feed, args=(proc, stdin, workdir / stdin_after if stdin_after else None,
                                                        deadline), daemon=True)]
        for t in threads:
            t.start()
        timed_out, over_disk = False, ""
        while proc.poll() is None and not over_disk:
            try:
                proc.wait(timeout=min(DISK_POLL_S, max(deadline - time.monotonic(), 0)))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                over_disk = _disk_problem(workdir, limits)
        _kill_group(proc.pid)  # also whatever it left running (a kernel, a fork)
        proc.wait()
        for t in threads:
            t.join(timeout=5)
    code = proc.returncode
    signum = -code if code is not None and code < 0 else None
    if bwrap is not None and code is not None and code > 128:  # bwrap reports a signal as 128 + its number
        signum = code - 128
    if over_disk:
        reason = over_disk
    elif timed_out:
        reason = f"time limit: stopped after {limits.wall_s:g} s"
    elif signum is not None:
        try:
            sig = signal.Signals(signum).name
        except ValueError:
            sig = f"signal {signum}"
        reason = {"SIGXCPU": f"CPU time limit ({limits.cpu_s} s)", "SIGXFSZ": "file size limit",
                  "SIGKILL": "killed (memory or time limit)"}.get(sig, f"killed by {sig}")
    elif code != 0:
        reason = f"exited with status {code}"
    else:
        reason = ""
    sandboxed = bwrap is not None
    return Result(code, b"".join(out), b"".join(err), timed_out, reason, sandboxed,
                  SANDBOX_NOTE if sandboxed else UNSANDBOXED_NOTE)


def _disk_problem(workdir: Path, limits: Limits) -> str:
    """Why the scratch folder is over its limits ("" if it is not); stops counting early."""
    used, count, stack = 0, 0, [workdir]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    count += 1
                    if count > limits.disk_files:
                        return f"disk limit: more than {limits.disk_files:,} files in its folder"
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        used += entry.stat(follow_symlinks=False).st_blocks * 512
                        if used > limits.disk_bytes:
                            return f"disk limit: its folder grew past {limits.disk_bytes / 2**20:g} MB"
        except OSError:
            continue  # removed or unreadable meanwhile: counted next time
    return ""


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


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
