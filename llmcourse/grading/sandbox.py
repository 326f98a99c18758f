"""Run one untrusted command isolated: the single place where grading starts a process.

``run_isolated`` runs the command inside a bubblewrap (``bwrap``) sandbox, in a cgroup of its own:

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
* **Limits for the whole sandbox** (its cgroup, made by the grader before the sandbox
  starts and removed, after killing whatever is left in it, on every way out): resident
  memory of all its processes together (``memory_tree_bytes``; swap included), number of
  processes and threads (``processes``), and CPU share (``cpu_cores``, one core: a
  submission that forks busy children slows down only itself, not the students graded
  beside it). The process joins its cgroup before bwrap runs (a ``sh`` that writes its own
  pid into ``cgroup.procs`` and then ``exec``s bwrap), so nothing of it ever runs outside.
  cgroup v2 where its memory, pids and cpu controllers can be used in a subtree this user
  may write (as root: beside the grader's own cgroup; else a delegated one), otherwise
  cgroup v1 (one folder per controller, under the grader's own). A kernel OOM kill in the
  cgroup is reported as "memory limit".
* **Limits per process** (set by the launcher, inside; kept as a second wall): address
  space, CPU time, processes, file size; a wall-clock timeout that kills the whole
  sandbox; output kept up to a byte cap. From outside, the scratch folder's total size and
  number of files are measured five times a second and the sandbox is killed when they
  pass ``disk_bytes`` / ``disk_files`` (so it can overshoot by what it writes in 0.2 s,
  each file still capped at ``file_bytes``). The grader never follows a symlink in the
  scratch folder (the walk opens every folder with ``O_NOFOLLOW``; the ``ready`` flag
  counts only as a regular file, seen by ``lstat``).

Where bwrap is missing or cannot start (macOS, Windows, a container without user
namespaces), ``run_isolated`` raises ``SandboxUnavailable`` with the reason, unless
``Limits.allow_unsandboxed`` is set: then the command runs with process limits only (and
a cgroup, where there is one) and its ``Result`` says ``sandboxed=False``, which the
grading report and CSV repeat. Where no cgroup can be made (cgroup v2 not delegated to a
normal user, no controllers), it refuses the same way unless ``Limits.allow_no_cgroup``
(or ``allow_unsandboxed``, which accepts any missing isolation) is set; such a result is
``sandboxed=False`` too, and its note says which limits held.
"""
from __future__ import annotations

import functools
import itertools
import os
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
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
DISK_DEPTH = 64  # folders nested deeper than this in the scratch folder stop the sandbox ("disk limit")

# cgroups: where their file systems are mounted (a test points this at an empty folder)
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_NEEDED = ("memory", "pids", "cpu")
CGROUP_V1_EXTRA = ("cpuacct", "freezer")  # v1, used where present: CPU time used; killing a tree without a race
CPU_PERIOD_US = 100_000
SCRATCH_PREFIX = "llmcourse-"  # + kind, pid, random: see scratch_folder
CGROUP_PREFIX = "llmcourse-sandbox-"  # + grader pid, counter, random: a stale one is recognised by its pid


def scratch_folder(kind: str) -> tempfile.TemporaryDirectory:
    """A new temporary folder for grading, ``llmcourse-<kind>-<pid>-<random>``: the pid lets a
    later run remove the folders a killed grader left (``scratch.remove_stale``). Here, as
    this module imports no sibling (it also runs as a copy on its own)."""
    return tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{kind}-{os.getpid()}-")


class SandboxUnavailable(RuntimeError):
    """bubblewrap or a cgroup is missing or unusable here, and running without was not allowed."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. ``wall_s`` bounds the whole run; ``cell_s`` is passed on to the
    child (per-cell timeouts are enforced inside it, by nbclient or the answer runner).
    ``allow_unsandboxed``: where bubblewrap is unavailable, run with process limits only
    (results marked "not sandboxed") instead of refusing; it also accepts a missing cgroup.
    ``allow_no_cgroup``: where no cgroup can be made, run with bubblewrap and per-process
    limits only (results marked) instead of refusing; a missing bubblewrap still refuses."""

    wall_s: float = 120.0
    cell_s: float = 20.0
    cpu_s: int = 240
    memory_bytes: int = 4 * 2**30  # address space, per process (RLIMIT_AS): torch alone maps ~1.5 GB of it
    # Resident memory (and swap) of the whole sandbox, its cgroup: what the host really gives.
    # Grading a solution notebook peaks at 0.22 GB (measured: the notebook run, a Jupyter
    # kernel with torch and nbclient; the answer runner 0.15 GB), plus up to ~0.45 GB of
    # torch's library pages for the sandbox that reads them first (page cache: charged to it
    # but reclaimable). The tmpfs /tmp and /dev/shm count here too. 2 GB leaves an honest
    # answer room for its tensors and keeps --jobs N sandboxes within N x 2 GB of the host.
    memory_tree_bytes: int = 2 * 2**30
    processes: int = 256  # the sandbox's processes and threads (cgroup pids.max), and RLIMIT_NPROC
    cpu_cores: float | None = 1.0  # CPU share of the whole sandbox (cgroup cpu.max); None: no CPU cap
    file_bytes: int = 64 * 2**20  # largest file the child may write
    output_bytes: int = 1 * 2**20  # stdout and stderr kept, each
    tmp_bytes: int = 512 * 2**20  # size of the sandbox's /tmp (and of /dev/shm), held in memory
    disk_bytes: int = 256 * 2**20  # total size of the scratch folder (workdir)
    disk_files: int = 10_000  # files and folders in it
    allow_unsandboxed: bool = False
    allow_no_cgroup: bool = False


@dataclass(frozen=True)
class Result:
    """What a run did. ``sandboxed``: bubblewrap isolation and the cgroup limits both held
    (``bwrap`` and ``cgroup`` say which did; ``note`` says it in words for the report).
    ``usage``: what the whole process tree used, as its cgroup measured it (empty without
    one): ``memory_peak`` (bytes), ``cpu_s``, ``cpu_throttled`` (periods throttled),
    ``pids_peak``, ``forks_refused`` (at ``pids.max``), ``oom_kills``."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    reason: str  # empty when the command exited by itself with status 0 and no limit was hit
    sandboxed: bool = False
    note: str = UNSANDBOXED_NOTE
    bwrap: bool = False
    cgroup: str = ""  # "v1" or "v2" when the run had its own cgroup
    usage: dict = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """It exited by itself with status 0 and hit no limit: only then do its files count."""
        return not self.reason and self.returncode == 0


# ---------------------------------------------------------------- is bubblewrap usable here?

def find_bwrap() -> str | None:
    """The bwrap executable on PATH, or None (the one place the tool is looked up)."""
    return shutil.which("bwrap")


@functools.cache
def _problem_with(bwrap: str | None, path_env: str) -> str | None:
    if sys.platform != "linux":
        return f"bubblewrap sandboxing needs Linux (this is {sys.platform})"
    if bwrap is None:
        return ("bubblewrap (bwrap) is not installed: install it (Debian/Ubuntu: apt-get install bubblewrap; "
                "Fedora: dnf install bubblewrap) or see scripts/install_system_deps.sh")
    with scratch_folder("probe") as tmp:
        probe = _run(bwrap, [sys.executable, "-I", "-S", "-c", "import os; os.listdir('/work')"], Path(tmp),
                     Limits(wall_s=30), b"", None, None)
    if probe.returncode != 0:
        err = probe.stderr.decode(errors="replace").strip()[-300:]
        return (f"bubblewrap ({bwrap}) cannot start a sandbox here (user namespaces disabled, or a container "
                f"that forbids them?): {probe.reason}: {err}")
    return None


# ---------------------------------------------------------------- a cgroup per sandbox

@dataclass(frozen=True)
class _Place:
    """Where this grader may make sandbox cgroups: ``version`` 1 or 2, and per controller
    the folder to make them in (v2: the same folder for all; v1: one per hierarchy)."""

    version: int
    parents: tuple[tuple[str, Path], ...]


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _keyed(path: Path) -> dict[str, int]:
    """A cgroup file of ``key value`` lines (``cpu.stat``, ``pids.events``, ...), as numbers."""
    values = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per controller, from /proc/self/cgroup ("" for cgroup v2)."""
    own = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def _mount_root(mount: Path) -> str | None:
    """The folder of its hierarchy that ``mount`` shows (a container may see only its own subtree)."""
    try:
        for line in _read(Path("/proc/self/mountinfo")).splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[4] == os.path.realpath(mount):
                return fields[3]
    except OSError:
        pass
    return None


def _folder_of(mount: Path, path: str) -> Path | None:
    """The folder of the cgroup ``path`` (as /proc/self/cgroup names it) under ``mount``."""
    here = mount / path.lstrip("/")
    if here.is_dir():
        return here
    root = (_mount_root(mount) or "/").rstrip("/")
    if root and (path + "/").startswith(root + "/"):
        here = mount / path[len(root):].lstrip("/")
        if here.is_dir():
            return here
    return None


def _v2_parent(mount: Path, own: dict[str, str]) -> tuple[Path | None, str]:
    """The folder, at or above this process's own cgroup v2, to make sandbox cgroups in.

    v2 allows controllers in a cgroup's children only while it holds no processes itself
    (the root excepted), so the grader's own cgroup, which holds the grader, usually cannot
    be it: then its parent can, and the sandboxes are the grader's siblings (as root; a
    normal user needs that parent delegated to it, e.g. under ``user@UID.service`` or by
    ``systemd-run --user --scope -p Delegate=yes``)."""
    if not (mount / "cgroup.controllers").is_file():
        return None, f"no cgroup2 at {mount}"
    folder = _folder_of(mount, own.get("", "/"))
    if folder is None:
        return None, f"this process's cgroup2 {own.get('', '?')} is not under {mount}"
    problem, needed = "", set(CGROUP_NEEDED)
    while folder.is_relative_to(mount):
        try:
            missing = needed - set(_read(folder / "cgroup.controllers").split())
            if missing:
                problem = f"cgroup2 {folder} has no {', '.join(sorted(missing))} controller"
            elif not (os.access(folder, os.W_OK | os.X_OK) and os.access(folder / "cgroup.procs", os.W_OK)):
                problem = f"cgroup2 {folder} is not writable by uid {os.geteuid()} (not delegated to it)"
            else:
                enabled = set(_read(folder / "cgroup.subtree_control").split())
                if needed - enabled:  # refused (EBUSY) where the cgroup holds processes
                    _write(folder / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(needed - enabled)))
                return folder, ""
        except OSError as e:
            problem = f"cgroup2 {folder}: cannot enable {', '.join(CGROUP_NEEDED)} for its children ({e.strerror})"
        if folder == mount:
            break
        folder = folder.parent
    return None, problem


def _v1_parents(root: Path, own: dict[str, str]) -> tuple[dict[str, Path] | None, str]:
    """Per controller, this process's own cgroup v1 folder (children of it are the sandboxes':
    v1 has no rule against processes in a cgroup that has children)."""
    parents = {}
    for controller in (*CGROUP_NEEDED, *CGROUP_V1_EXTRA):
        mount = root / controller
        if not (mount / "tasks").is_file():  # a v1 hierarchy (a v2 folder has no "tasks")
            if controller in CGROUP_NEEDED:
                return None, f"no cgroup v1 {controller} hierarchy at {mount}"
            continue
        folder = _folder_of(mount, own.get(controller, "/"))
        if folder is None:
            return None, f"this process's {controller} cgroup {own.get(controller, '?')} is not under {mount}"
        if not os.access(folder, os.W_OK | os.X_OK):
            return None, f"cgroup v1 {folder} is not writable by uid {os.geteuid()}"
        parents[controller] = Path(os.path.realpath(folder))  # cpu -> cpu,cpuacct: one folder for both
    return parents, ""


@functools.cache
def _find_place(root: str, uid: int) -> tuple[_Place | None, str]:
    """Where sandbox cgroups can be made (tried once: one is made and removed), or why none can."""
    if sys.platform != "linux":
        return None, f"cgroups need Linux (this is {sys.platform})"
    try:
        own = _own_cgroups()
    except (OSError, ValueError) as e:
        return None, f"cannot read /proc/self/cgroup ({e})"
    problems = []
    for mount in dict.fromkeys([Path(root), Path(root) / "unified"]):  # pure v2; hybrid (v2 beside v1)
        folder, why = _v2_parent(mount, own)
        if folder is not None:
            place = _Place(2, tuple((c, folder) for c in CGROUP_NEEDED))
            break
        problems.append(why)
    else:
        parents, why = _v1_parents(Path(root), own)
        if parents is None:
            return None, "; ".join([*problems, why])
        place = _Place(1, tuple(parents.items()))
    try:
        _Cgroup(place, Limits()).remove()
    except OSError as e:
        return None, f"cannot make a cgroup v{place.version} in {place.parents[0][1]}: {e.strerror or e}"
    _remove_stale(place)
    return place, ""


def cgroup_problem() -> str | None:
    """Why sandboxes cannot have a cgroup of their own here, or None when they can (checked once)."""
    return _find_place(CGROUP_ROOT, os.geteuid())[1] or None


def _remove_stale(place: _Place) -> None:
    """Remove the empty cgroups that graders which died without cleaning up left behind
    (older than a minute: a grader in another PID namespace may have just made one)."""
    for parent in dict.fromkeys(p for _, p in place.parents):
        for folder in parent.glob(CGROUP_PREFIX + "*"):
            pid = folder.name[len(CGROUP_PREFIX):].split("-")[0]
            try:
                if pid.isdigit() and not process_alive(int(pid)) and time.time() - folder.stat().st_mtime > 60:
                    folder.rmdir()  # only an empty one: nothing is killed here
            except OSError:
                pass


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts: it is not ours to clean up after)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class _Cgroup:
    """One sandbox's cgroup: made (with its limits) before the sandbox starts, killed and
    removed after it ends. ``folders``: per controller, its folder (one folder in v2)."""

    def __init__(self, place: _Place, limits: Limits):
        self.version = place.version
        name = f"{CGROUP_PREFIX}{os.getpid()}-{next(_cgroup_numbers)}-{secrets.token_hex(3)}"
        self.folders: dict[str, Path] = {}
        made: dict[Path, Path] = {}
        try:
            for controller, parent in place.parents:
                if parent not in made:  # v1 hierarchies mounted together (cpu,cpuacct) share one folder
                    (parent / name).mkdir()
                    made[parent] = parent / name
                self.folders[controller] = made[parent]
            self._set(limits)
        except OSError:
            self.remove()
            raise

    def _set(self, limits: Limits) -> None:
        memory, pids, cpu = (self.folders[c] for c in CGROUP_NEEDED)
        quota = str(round(limits.cpu_cores * CPU_PERIOD_US)) if limits.cpu_cores else None
        if self.version == 2:
            _write(memory / "memory.max", str(limits.memory_tree_bytes))
            if (memory / "memory.swap.max").exists():  # else swapping would stretch the limit
                _write(memory / "memory.swap.max", "0")
            _write(cpu / "cpu.max", f"{quota or 'max'} {CPU_PERIOD_US}")
        else:
            _write(memory / "memory.limit_in_bytes", str(limits.memory_tree_bytes))
            if (memory / "memory.memsw.limit_in_bytes").exists():  # memory + swap, set after memory alone
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_tree_bytes))
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", quota or "-1")
        _write(pids / "pids.max", str(limits.processes))

    def describe(self, limits: Limits) -> str:
        cpu = f"{limits.cpu_cores:g} CPU core(s)" if limits.cpu_cores else "no CPU cap"
        return (f"cgroup v{self.version}: {limits.memory_tree_bytes / 2**30:.3g} GB of memory, "
                f"{limits.processes} processes, {cpu} for the whole sandbox")

    def procs_files(self) -> list[Path]:
        """The files to write a pid into, to move that process into this cgroup."""
        return [folder / "cgroup.procs" for folder in dict.fromkeys(self.folders.values())]

    def _pids(self) -> list[int]:
        try:
            return [int(p) for p in _read(self.folders["pids"] / "cgroup.procs").split()]
        except (OSError, KeyError, ValueError):
            return []

    def _freeze(self, frozen: bool) -> bool:
        """Freeze (or thaw) the whole tree, so that it cannot fork while it is being killed."""
        try:
            if self.version == 2:
                folder = self.folders["pids"]
                _write(folder / "cgroup.freeze", "1" if frozen else "0")
                done = lambda: _keyed(folder / "cgroup.events").get("frozen") == 1
            else:
                folder = self.folders["freezer"]
                _write(folder / "freezer.state", "FROZEN" if frozen else "THAWED")
                done = lambda: _read(folder / "freezer.state").strip() == "FROZEN"
            stop = time.monotonic() + 1
            while frozen and not done() and time.monotonic() < stop:  # it takes effect task by task
                time.sleep(0.005)
            return True
        except (OSError, KeyError):
            return False

    def kill(self) -> None:
        """SIGKILL every process in the cgroup and wait (up to 5 s) until it is empty."""
        folder = self.folders.get("pids")
        if folder is None:  # not made (yet): nothing can be in it
            return
        try:
            if self.version == 2 and (folder / "cgroup.kill").exists():
                _write(folder / "cgroup.kill", "1")
        except OSError:
            pass
        frozen = self._freeze(True)
        self._signal_all()
        if frozen:
            self._freeze(False)  # a frozen process dies only once thawed
        stop = time.monotonic() + 5
        while self._signal_all() and time.monotonic() < stop:  # without a freezer: rounds, bounded by pids.max
            time.sleep(0.01)

    def _signal_all(self) -> bool:
        """SIGKILL every process listed in the cgroup; False when it is empty."""
        pids = self._pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return bool(pids)

    def usage(self) -> dict:
        """What the tree used (see ``Result.usage``); read before ``remove``."""
        memory, pids, cpu = (self.folders[c] for c in CGROUP_NEEDED)
        if self.version == 2:
            sources = {"memory_peak": (memory / "memory.peak", None), "oom_kills": (memory / "memory.events", "oom_kill"),
                       "cpu_usec": (cpu / "cpu.stat", "usage_usec")}
        else:
            sources = {"memory_peak": (memory / "memory.max_usage_in_bytes", None),
                       "oom_kills": (memory / "memory.oom_control", "oom_kill")}
            if "cpuacct" in self.folders:
                sources["cpu_nsec"] = (self.folders["cpuacct"] / "cpuacct.usage", None)
        sources.update(cpu_throttled=(cpu / "cpu.stat", "nr_throttled"), pids_peak=(pids / "pids.peak", None),
                       forks_refused=(pids / "pids.events", "max"))
        usage = {}
        for name, (path, key) in sources.items():
            try:
                value = _keyed(path).get(key) if key else int(_read(path).strip())
            except (OSError, ValueError):
                continue
            if value is not None:
                usage[name] = value
        for name, scale in (("cpu_usec", 1e6), ("cpu_nsec", 1e9)):
            if name in usage:
                usage["cpu_s"] = usage.pop(name) / scale
        return usage

    def remove(self) -> None:
        """Kill what is left in the cgroup and remove its folders (never raises)."""
        self.kill()
        for folder in dict.fromkeys(self.folders.values()):
            stop = time.monotonic() + 5
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while a killed process is still exiting
                    if time.monotonic() > stop:
                        break
                    time.sleep(0.02)


_cgroup_numbers = itertools.count()

# Run by ``sh -c`` in front of the command: the shell moves itself (``$$``, the pid that bwrap
# keeps once exec'd) into every cgroup.procs named before "--", then becomes the command, so
# the sandbox's first instruction already runs in its cgroup (no window to fork outside it).
_JOIN_FAILED = "llmcourse: cannot join the sandbox's cgroup"
_JOIN = ('for f do [ "$f" = -- ] && break; echo $$ > "$f" || { echo "' + _JOIN_FAILED + '" >&2; exit 125; }; '
         'shift; done; shift; exec "$@"')


# ---------------------------------------------------------------- may grading run here?

def bwrap_problem() -> str | None:
    """Why bubblewrap cannot isolate runs on this machine, or None when it can (checked once)."""
    return _problem_with(find_bwrap(), os.environ.get("PATH", ""))


def sandbox_problem() -> str | None:
    """Why grading cannot be fully sandboxed on this machine (no bubblewrap, no cgroup),
    or None when it can (checked once)."""
    return "; ".join(p for p in (bwrap_problem(), cgroup_problem()) if p) or None


def _allowed(limits: Limits) -> tuple[bool, _Place | None]:
    """(bubblewrap usable, where to make cgroups) under ``limits``; raises ``SandboxUnavailable``
    when one is missing and ``limits`` does not allow that."""
    no_bwrap = bwrap_problem()
    if no_bwrap and not limits.allow_unsandboxed:
        raise SandboxUnavailable(f"refusing to run student code unsandboxed: {no_bwrap}. "
                                 f"To run it with process limits only (every result marked 'not sandboxed'), "
                                 f"pass --allow-unsandboxed.")
    place, cgroup_why = _find_place(CGROUP_ROOT, os.geteuid())
    if place is None and not (limits.allow_no_cgroup or limits.allow_unsandboxed):
        raise SandboxUnavailable(
            f"refusing to run student code without a cgroup (no memory, process and CPU limit for the whole "
            f"sandbox, so one submission could slow down or starve the others): {cgroup_why}. Run as root, or in "
            f"a delegated cgroup v2 (systemd-run --user --scope -p Delegate=yes ...), or pass --allow-no-cgroup "
            f"to run with per-process limits only (every result marked).")
    return not no_bwrap, place


def require_sandbox(limits: Limits) -> bool:
    """True if runs will be sandboxed (bubblewrap and a cgroup); False if not and ``limits`` allows that.

    Raises ``SandboxUnavailable`` (with what to do) when they cannot be and it is not allowed.
    """
    bwrap, place = _allowed(limits)
    return bwrap and place is not None


# ---------------------------------------------------------------- running

@dataclass(frozen=True)
class Stdin:
    """One part of a child's standard input: ``data``, or what the Future ``data`` resolves to
    (the parent may still be working it out while the child starts), written once the
    child has created the file ``after`` in its folder, if one is named (a regular file: a
    symlink or a FIFO of that name does not count). A Future that fails stops the child."""
    data: bytes | Future
    after: str | None = None


def run_isolated(argv: list[str], workdir: str | os.PathLike, limits: Limits,
                 stdin: bytes | Sequence[Stdin] = b"", env: dict[str, str] | None = None) -> Result:
    """Run ``argv`` in ``workdir`` under ``limits``; never raises for anything the child does.

    ``argv[0]`` may be ``sys.executable``; other absolute paths to files in ``argv`` (the
    grading scripts) are mounted read-only under ``/opt/grader``. ``stdin`` is written to
    the child's standard input, at once or in parts (``Stdin``), in order; then it is
    closed. The answer runner uses parts to start before its cells are known and to receive
    the test inputs only after the student's code has run. Raises ``SandboxUnavailable``
    when bubblewrap or a cgroup cannot be used and ``limits`` does not allow running without.
    """
    workdir = Path(workdir)
    bwrap, place = _allowed(limits)
    parts = [Stdin(stdin)] if isinstance(stdin, bytes) else list(stdin)
    return _run(find_bwrap() if bwrap else None, argv, workdir, limits, parts, env, place)


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


def _run(bwrap: str | None, argv: list[str], workdir: Path, limits: Limits, stdin: list[Stdin],
         env: dict[str, str] | None, place: _Place | None = None) -> Result:
    deadline = time.monotonic() + limits.wall_s
    cgroup, proc, usage = None, None, {}
    with scratch_folder("support") as support:
        try:
            if bwrap is not None:
                support = Path(support)
                _write_support(support)
                cmd, preexec, child_env = _bwrap_argv(bwrap, argv, workdir, limits, support, env), None, None
            else:
                cmd, preexec, child_env = argv, functools.partial(_set_limits, limits), env
            if place is not None:
                try:
                    cgroup = _Cgroup(place, limits)
                except OSError as e:
                    if not (limits.allow_no_cgroup or limits.allow_unsandboxed):
                        raise SandboxUnavailable(f"cannot make the sandbox's cgroup: {e}") from e
                if cgroup is not None:
                    cmd = ["/bin/sh", "-c", _JOIN, "sh", *map(str, cgroup.procs_files()), "--", *cmd]
            # its own process group, so a timeout kills everything it started (bwrap: the whole sandbox)
            proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=child_env, preexec_fn=preexec,
                                    start_new_session=True)
            out, err = [], []
            threads = [threading.Thread(target=_drain, args=(proc.stdout, limits.output_bytes, out), daemon=True),
                       threading.Thread(target=_drain, args=(proc.stderr, limits.output_bytes, err), daemon=True),
                       threading.Thread(target=_feed, args=(proc, stdin, workdir, deadline), daemon=True)]
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
        finally:  # every way out: nothing of the sandbox keeps running
            if cgroup is not None:
                cgroup.kill()  # also what left its process group (a child in a new session)
            if proc is not None:
                _kill_group(proc.pid)  # also whatever it left running (a kernel, a fork)
                proc.wait()
            if cgroup is not None:
                usage = cgroup.usage()
                cgroup.remove()
        for t in threads:
            t.join(timeout=5)
        try:
            proc.stdin.close()  # the inputs were never released (see _feed), or it is closed already
        except OSError:
            pass
    code = proc.returncode
    signum = -code if code is not None and code < 0 else None
    if bwrap is not None and code is not None and code > 128:  # bwrap reports a signal as 128 + its number
        signum = code - 128
    if over_disk:
        reason = over_disk
    elif usage.get("oom_kills"):
        reason = (f"memory limit: its processes together passed {limits.memory_tree_bytes / 2**30:.3g} GB, and "
                  f"the kernel killed {usage['oom_kills']} of them")
    elif timed_out:
        reason = f"time limit: stopped after {limits.wall_s:g} s"
    elif cgroup is not None and code == 125 and _JOIN_FAILED.encode() in b"".join(err):
        reason = "the sandbox could not join its cgroup"
    elif signum is not None:
        try:
            sig = signal.Signals(signum).name
        except ValueError:
            sig = f"signal {signum}"
        killed = "killed by SIGKILL" if cgroup is not None else "killed (memory or time limit)"
        reason = {"SIGXCPU": f"CPU time limit ({limits.cpu_s} s)", "SIGXFSZ": "file size limit",
                  "SIGKILL": killed}.get(sig, f"killed by {sig}")
    elif code != 0:
        reason = f"exited with status {code}"
    else:
        reason = ""
    return Result(code, b"".join(out), b"".join(err), timed_out, reason, bwrap is not None and cgroup is not None,
                  _note(bwrap is not None, cgroup, limits), bwrap is not None,
                  f"v{cgroup.version}" if cgroup else "", usage)


def _note(bwrap: bool, cgroup: _Cgroup | None, limits: Limits) -> str:
    """Which limits held, in words, for the grading report."""
    if bwrap and cgroup:
        return f"sandboxed (bubblewrap: no network, only its own scratch folder; {cgroup.describe(limits)})"
    if bwrap:
        return ("NOT FULLY SANDBOXED: bubblewrap (no network, only its own scratch folder) but no cgroup: memory, "
                "processes and CPU limited per process only")
    if cgroup:
        return f"NOT SANDBOXED: bubblewrap unavailable; process limits and a {cgroup.describe(limits)} only"
    return UNSANDBOXED_NOTE


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _disk_problem(workdir: Path, limits: Limits) -> str:
    """Why the scratch folder is over its limits ("" if it is not); stops counting early.

    The sandbox can swap a folder for a symlink at any moment, so every folder is opened
    relative to its parent's descriptor with ``O_NOFOLLOW`` (a symlink is counted, never
    followed) and sizes come from ``lstat``; the folders open at once are the depth of the
    walk, bounded by ``DISK_DEPTH``."""
    used, count = 0, 0
    try:
        top = os.open(os.path.realpath(workdir), _DIR_FLAGS)  # the grader's own path; below it, nothing is followed
    except OSError:
        return ""
    stack = [(top, os.scandir(top))]
    try:
        while stack:
            fd, entries = stack[-1]
            try:
                entry = next(entries, None)
            except OSError:  # removed meanwhile: counted next time
                entry = None
            if entry is None:
                entries.close()
                os.close(fd)
                stack.pop()
                continue
            count += 1
            if count > limits.disk_files:
                return f"disk limit: more than {limits.disk_files:,} files in its folder"
            try:
                if entry.is_dir(follow_symlinks=False):
                    if len(stack) >= DISK_DEPTH:
                        return f"disk limit: folders nested more than {DISK_DEPTH} deep in its folder"
                    sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)  # ELOOP if it became a symlink
                    stack.append((sub, os.scandir(sub)))
                else:
                    used += entry.stat(follow_symlinks=False).st_blocks * 512
                    if used > limits.disk_bytes:
                        return f"disk limit: its folder grew past {limits.disk_bytes / 2**20:g} MB"
            except OSError:
                continue  # removed or swapped meanwhile: counted next time
    finally:
        for fd, entries in stack:
            entries.close()
            os.close(fd)
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


def _is_regular_file(path: Path) -> bool:
    """``path`` is a regular file, itself (``lstat``: a symlink, even to one, is not; nor a FIFO)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _feed(proc: subprocess.Popen, parts: list[Stdin], workdir: Path, deadline: float) -> None:
    """Write each part of the child's stdin in turn, once its ``after`` file is a regular file
    and its data is known, then close stdin. When the child exits or the deadline passes
    first, stdin stays open: an end of input is never a signal the child gets instead of
    the inputs, and ``_run`` closes the pipe after the kill. A part whose Future failed (the
    parent gave up on this run) kills the child, which then ends like a timed-out one."""
    for part in parts:
        while part.after is not None and not _is_regular_file(workdir / part.after):
            if proc.poll() is not None or time.monotonic() > deadline:
                return
            time.sleep(0.01)
        data = part.data
        while isinstance(data, Future):
            if proc.poll() is not None or time.monotonic() > deadline:
                return
            try:
                data = data.result(timeout=0.05)
            except FutureTimeout:
                continue
            except BaseException:  # noqa: BLE001 -- the parent's reason is its own to report
                _kill_group(proc.pid)
                return
        try:
            proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            return  # the child exited or closed its stdin: its loss, reported by its exit status
    try:
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
