"""The grading sandbox (bubblewrap), for real: hostile submissions graded beside honest ones.

One ``grade_assignment`` call grades two honest submissions (the ch3 solution and a typical
mistake) with one submission per attack: reading the instructor's source notebooks, writing
the gradebook, the network, a fork bomb, memory, a huge file, filling the disk with
files under the size limit, 60 MB printed on one line, sleeping past the time limit. The attackers know the instructor's paths (the repository,
the gradebook): the test writes them into their code. Each attack must get nothing, with a
reason, and the honest students' grades must be exactly those of a class graded without the
attackers. Also: what a sandboxed process can see, what happens without bubblewrap, and the
sandbox's cgroup (memory, processes and CPU of the whole tree; gone after every run) and what
happens without one.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from llmcourse.grading import sandbox
from llmcourse.grading.grade import grade_assignment
from llmcourse.grading.sandbox import (Limits, SandboxUnavailable, find_bwrap, require_sandbox, run_isolated,
                                       Stdin, sandbox_problem)

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures import HEADS, MASK, MHA, ROOT, SDPA, SIMPLIFIED, SOURCE, Fixture, notebook_text  # noqa: E402

pytestmark = [pytest.mark.xdist_group("grading"),
              pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap is not installed "
                                 "(scripts/install_system_deps.sh installs it)")]
# wall_s bounds the sleeper; cell_s is generous so that honest code never times out on a busy machine
LIMITS = Limits(wall_s=75, cell_s=20, output_bytes=256 * 1024)
SLEEP_MARK = "3617"  # the fork bomb's children run `sleep 3617`: findable in /proc afterwards

FIND_FILES = '''
import os
def _find(names, skip=("/usr", "/proc", "/sys", "/dev", "/opt/venv", "/root/.pyenv")):
    """Walk the whole file system from / (and from every parent folder) for these file names."""
    found, seen = [], 0
    for top in ["/", os.path.abspath("../../.."), "/proc/self/cwd/../../..", "/proc/1/cwd", "/proc/self/root/"]:
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(folder, d)) not in skip]
            seen += 1
            if seen > 5000:
                return found
            found += [os.path.join(folder, f) for f in files if f in names]
    return found
'''

READ_SOLUTIONS = FIND_FILES + '''
import json
candidates = [{root!r} + "/solutions/ch3/ch3.ipynb", "/proc/self/root" + {root!r} + "/solutions/ch3/ch3.ipynb"]
candidates += ["../" * k + "solutions/ch3/ch3.ipynb" for k in range(1, 8)]
candidates += [v.rstrip("/") + "/solutions/ch3/ch3.ipynb" for v in os.environ.values() if v.startswith("/")]
candidates += [f"/proc/{{pid}}/cwd/../../../solutions/ch3/ch3.ipynb" for pid in os.listdir("/proc") if pid.isdigit()]
candidates += _find({{"ch3.ipynb", "restored.ipynb"}})
stolen, marker = None, "### BEGIN " + "SOLUTION"  # the instructor's causal_mask cell, not this one
for path in candidates:
    try:
        cells = json.loads(open(path).read())["cells"]
    except (OSError, ValueError, KeyError):
        continue
    for cell in cells:
        source = "".join(cell["source"])
        if cell.get("metadata", {{}}).get("nbgrader", {{}}).get("grade_id") == "causal_mask" and marker in source:
            stolen = path
            exec(source)
print("SOLUTIONS FOUND:", stolen)
if stolen is None:
    def causal_mask(T):
        raise NotImplementedError("I could not find the solutions")
'''

GRADEBOOK = FIND_FILES + '''
import sqlite3
hits = []
for path in [{db!r}, "../../../gradebook.db", "/proc/self/root" + {db!r}] + _find({{"gradebook.db"}}):
    try:
        db = sqlite3.connect(path, timeout=1)
        db.execute("UPDATE grade SET auto_score = 100")  # raise mine...
        db.execute("UPDATE grade SET auto_score = 0, manual_score = 0 WHERE id IN "
                   "(SELECT grade.id FROM grade JOIN submitted_notebook ON grade.notebook_id = submitted_notebook.id "
                   "JOIN submitted_assignment ON submitted_notebook.assignment_id = submitted_assignment.id "
                   "WHERE submitted_assignment.student_id = 'honest')")  # ...and lower another's
        db.commit()
        hits.append(path)
    except Exception as e:
        pass
print("GRADEBOOKS WRITTEN:", hits)

def q1():
    return "a"  # wrong: the plan was to raise the score in the gradebook
'''

NETWORK = '''
import socket, time
attempts, answer = [], None
for host, port in [("127.0.0.1", {port}), ("localhost", {port}), ("1.1.1.1", 53), ("93.184.216.34", 80)]:
    start = time.monotonic()
    try:
        with socket.create_connection((host, port)) as s:  # no timeout: a hang would show
            answer = s.recv(16).decode()
        attempts.append(f"{{host}}:{{port}} connected")
    except OSError as e:
        attempts.append(f"{{host}}:{{port}} {{type(e).__name__}} after {{time.monotonic() - start:.2f}} s")
print("ATTEMPTS:", "; ".join(attempts))

def q2():
    if answer is None:
        raise RuntimeError("no network: " + "; ".join(attempts))
    return answer  # fetched from a helper outside
'''

FORK_BOMB = '''
import os
children, error = 0, None
for _ in range(2000):
    try:
        pid = os.fork()
    except OSError as e:
        error = e
        break
    if pid == 0:
        try:
            os.execv("/bin/sleep", ["sleep", "{mark}"])
        finally:
            os._exit(0)
    children += 1
print(f"fork bomb stopped after {{children}} forks: {{error}}")

def simplified_attention(x):
    raise RuntimeError(f"fork bomb stopped after {{children}} forks: {{error}}")
'''

MEMORY = '''big = torch.ones(6 * 2**30)  # 24 GB
''' + '''
def split_heads(x, n_heads):
    B, T, d = x.shape
    return x.view(B, T, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x):
    B, H, T, hd = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hd)
'''

HUGE_FILE = '''
chunk = b"x" * 2**20
for path in ["/tmp/big.bin", "big.bin"]:
    with open(path, "wb") as f:
        for _ in range(1024):  # 1 GB each
            f.write(chunk)
            f.flush()
''' + '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout=0.0, training=False):
    return q, q
'''

FILL_DISK = '''
chunk = b"x" * 2**20
for n in range(40):  # 40 files of 60 MB, each under the file size limit: 2.4 GB in all
    with open(f"fill{n}.bin", "wb") as f:
        for _ in range(60):
            f.write(chunk)
print("the disk took it all")
''' + '''
def simplified_attention(x):
    return x, x
'''

HUGE_PRINT = 'print("x" * 60_000_000)\n\ndef q1():\n    return "c"'

SLEEPER = '''
import signal, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT, signal.SIGTERM})
time.sleep(3600)

def q1():
    return "c"
'''

HONEST = ["honest", "honest_mistake"]


def attackers(port: int, db: Path) -> list[Fixture]:
    """The attacks, with the grade cells each must lose and a phrase its report must contain.

    In the answer runner the allowlist refuses each attack's imports or ``open`` before it
    runs ("... in this exercise"), so its own function scores nothing; the feedback run
    executes the same code as a plain notebook, inside the sandbox, where the limits and
    the isolation stop it (``test_no_solutions_gradebook_or_network_reached`` and the
    others read what it printed there)."""
    refused = "in this exercise"
    return [
        Fixture("attack_solutions", {"causal_mask": READ_SOLUTIONS.format(root=str(ROOT))}, MASK + MHA, refused),
        Fixture("attack_gradebook", {"q1": GRADEBOOK.format(db=str(db))}, ("test_q1",), refused),
        Fixture("attack_network", {"q2": NETWORK.format(port=port)}, ("test_q2",), refused),
        Fixture("attack_fork_bomb", {"simplified_attention": FORK_BOMB.format(mark=SLEEP_MARK)}, SIMPLIFIED,
                refused),
        Fixture("attack_memory", {"heads": MEMORY}, HEADS + MHA, "allocate"),
        Fixture("attack_huge_file", {"scaled_dot_product_attention": HUGE_FILE}, SDPA + MHA, refused),
        Fixture("attack_fill_disk", {"simplified_attention": FILL_DISK}, SIMPLIFIED, "disk limit"),
        Fixture("attack_print", {"q1": HUGE_PRINT}, (), ""),  # harmless once capped: full marks
        Fixture("attack_sleep", {"q1": SLEEPER}, ("test_q1",), "time limit"),
    ]


def honest_fixtures() -> list[Fixture]:
    flipped = "def causal_mask(T):\n    return torch.ones(T, T, dtype=torch.bool).triu()"
    return [Fixture("honest"), Fixture("honest_mistake", {"causal_mask": flipped}, MASK + MHA,
                                       "a token sees the future")]


def write(submitted: Path, fixtures: list[Fixture]) -> None:
    for fixture in fixtures:
        path = submitted / fixture.name / "ch3" / "ch3.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(notebook_text(fixture))


class Listener:
    """A TCP server on 127.0.0.1 in the test process: hands out q2's answer to whoever connects."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, addr = self.server.accept()
            except OSError:
                return
            self.connections.append(addr)
            conn.sendall(b"b")
            conn.close()


def grade_rows(out: Path) -> dict[str, dict[str, str]]:
    return {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}


def gradebook_scores(out: Path) -> dict[tuple[str, str], tuple]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        return {(g.student.id, g.name): (g.auto_score, g.manual_score)
                for s in gb.students for sub in s.submissions for nb in sub.notebooks for g in nb.grades}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The honest students alone, then the same students with every attacker, each in one call."""
    tmp = tmp_path_factory.mktemp("sandbox")
    listener = Listener()
    write(tmp / "alone", honest_fixtures())
    alone = {r.student: r for r in grade_assignment("ch3", tmp / "alone", tmp / "out_alone", jobs=2,
                                                    limits=LIMITS, log=lambda *a: None)}
    out = tmp / "out"
    attacks = attackers(listener.port, out / "gradebook.db")
    write(tmp / "class", honest_fixtures() + attacks)
    start = time.monotonic()
    reports = {r.student: r for r in grade_assignment("ch3", tmp / "class", out, jobs=2, limits=LIMITS,
                                                      log=lambda *a: None)}
    seconds = time.monotonic() - start
    listener.server.close()
    return {"alone": alone, "out_alone": tmp / "out_alone", "reports": reports, "out": out,
            "attacks": {f.name: f for f in attacks}, "listener": listener, "seconds": seconds}


def report_text(report) -> str:
    return json.dumps([report.reason, report.notes, [c.messages for c in report.cells]])


def autograded(out: Path, student: str) -> str:
    return (out / "autograded" / student / "ch3" / "ch3.ipynb").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["attack_solutions", "attack_gradebook", "attack_network", "attack_fork_bomb",
                                  "attack_memory", "attack_huge_file", "attack_fill_disk", "attack_print",
                                  "attack_sleep"])
def test_attack_gets_nothing_with_a_reason(graded, name):
    report, fixture = graded["reports"][name], graded["attacks"][name]
    got = {c.grade_id: c.score for c in report.cells}
    assert got == fixture.points(), f"{name}: {got}\n{report_text(report)[:3000]}"
    assert fixture.expect in report_text(report), f"{name}: {fixture.expect!r} not in\n{report_text(report)[:3000]}"
    assert report.sandboxed, report.sandbox_note
    row = grade_rows(graded["out"])[name]
    assert float(row["score"]) == sum(fixture.points().values()) and row["sandbox"] == "sandboxed"


@pytest.mark.slow
def test_honest_grades_are_unchanged_by_the_attackers(graded):
    for student in HONEST:
        alone, beside = graded["alone"][student], graded["reports"][student]
        assert [(c.grade_id, c.score) for c in beside.cells] == [(c.grade_id, c.score) for c in alone.cells]
        assert beside.status == alone.status == "graded" and beside.sandboxed
        # the two classes' copies of a notebook were written at different times: all else is the same
        row, row_alone = (grade_rows(graded[out])[student] for out in ("out", "out_alone"))
        assert row.pop("submitted_at") != "" and row_alone.pop("submitted_at") != ""
        assert row == row_alone
    assert graded["alone"]["honest"].score == 15 and graded["alone"]["honest_mistake"].score == 10
    scores = gradebook_scores(graded["out"])
    alone = gradebook_scores(graded["out_alone"])
    assert {k: v for k, v in scores.items() if k[0] in HONEST} == alone
    assert scores[("attack_gradebook", "test_q1")] == (0.0, None)  # its own mark was not raised


@pytest.mark.slow
def test_no_solutions_gradebook_or_network_reached(graded):
    out = graded["out"]
    assert "SOLUTIONS FOUND: None" in autograded(out, "attack_solutions")
    assert "GRADEBOOKS WRITTEN: []" in autograded(out, "attack_gradebook")
    assert graded["listener"].connections == []
    text = re.search(r'ATTEMPTS: ([^"\\]*)', autograded(out, "attack_network")).group(1)  # printed there
    times = [float(t) for t in re.findall(r"after ([0-9.]+) s", text)]
    assert len(times) >= 4 and max(times) < 2, text  # each attempt refused at once, no hang
    assert "connected" not in text


@pytest.mark.slow
def test_fork_bomb_bounded_and_cleaned_up(graded):
    text = autograded(graded["out"], "attack_fork_bomb")  # what the feedback run printed
    children = int(re.search(r"fork bomb stopped after (\d+) forks", text).group(1))
    assert children < LIMITS.processes, text
    leftover = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes() == b"sleep\0" + SLEEP_MARK.encode() + b"\0":
                leftover.append(proc.name)
        except OSError:
            pass
    assert leftover == []


@pytest.mark.slow
def test_output_capped_and_time_limit(graded):
    out = graded["out"]
    assert len(autograded(out, "attack_print")) < 2_000_000
    assert (out / "feedback" / "attack_print" / "ch3" / "ch3.html").stat().st_size < 2_000_000
    sleeper = graded["reports"]["attack_sleep"]
    assert "time limit" in report_text(sleeper)
    assert sleeper.seconds < 2 * LIMITS.wall_s + 60  # killed at the wall limit, not left running


UNPRIVILEGED = 65534  # nobody


def _probe(tmp_path: Path, scratch: Path, secret: Path) -> str:
    """Python code that reports, as JSON, what it can reach from inside the sandbox."""
    return f'''
import json, os, socket
seen = {{"uid": os.getuid(), "work": sorted(os.listdir("/work")), "root": sorted(os.listdir("/"))}}
for path in [{str(ROOT)!r}, {str(SOURCE)!r}, {str(secret)!r}, {str(tmp_path)!r}, "/home", "/root/.ssh", "/etc/shadow"]:
    seen[path] = os.path.exists(path)
for path in ["/usr/x", "/opt/venv/x", "/etc/x", "/x"]:
    try:
        open(path, "w")
        seen[path] = "written"
    except OSError as e:
        seen[path] = type(e).__name__
open("/work/out.txt", "w").write("ok")
open("/tmp/t.txt", "w").write("ok")
try:
    import llmcourse.attention
    seen["llmcourse"] = True
except ImportError:
    seen["llmcourse"] = False
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    seen["net"] = True
except OSError:
    seen["net"] = False
print(json.dumps(seen))
'''


def _assert_isolated(seen: dict, tmp_path: Path, scratch: Path, secret: Path) -> None:
    assert seen["uid"] != 0 and seen["work"] == ["mine.txt"]
    assert set(seen["root"]) <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "opt", "root",
                                 "dev", "proc", "tmp", "work"}, seen["root"]
    for path in [str(ROOT), str(SOURCE), str(secret), str(tmp_path), "/home", "/root/.ssh", "/etc/shadow"]:
        assert seen[path] is False, path
    assert all(seen[p] != "written" for p in ["/usr/x", "/opt/venv/x", "/etc/x", "/x"]), {p: seen[p] for p in ["/usr/x", "/opt/venv/x", "/etc/x", "/x"]}
    assert seen["llmcourse"] is False and seen["net"] is False
    assert (scratch / "out.txt").read_text() == "ok"


def _scratch(tmp_path: Path) -> tuple[Path, Path]:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "mine.txt").write_text("mine")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    return scratch, secret


def test_sandbox_sees_only_its_scratch_folder(tmp_path):
    """What a sandboxed process can reach, checked from inside."""
    scratch, secret = _scratch(tmp_path)
    result = run_isolated([sys.executable, "-I", "-c", _probe(tmp_path, scratch, secret)], scratch, Limits(wall_s=60))
    assert result.returncode == 0 and result.sandboxed, result.stderr.decode()[-2000:]
    _assert_isolated(json.loads(result.stdout), tmp_path, scratch, secret)


@pytest.fixture
def shared_tmp():
    """A folder in /tmp that another user can enter (pytest's tmp_path is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="llmcourse-unprivileged-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sandbox_started_by_an_unprivileged_user(shared_tmp):
    """The other way bwrap runs: started by a normal user, it isolates through a user
    namespace (as root, grading takes the setuid-launcher way, tested everywhere else).
    As root, this test drops to ``nobody`` first; as a normal user it is already there."""
    tmp_path = shared_tmp
    scratch, secret = _scratch(tmp_path)
    secret.chmod(0o600)
    # The unprivileged user runs the system's Python (the test's own may live in root's home,
    # out of its reach) and a copy of sandbox.py (the checkout may be out of its reach too):
    # it needs only the standard library.
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable
    shutil.copyfile(ROOT / "llmcourse" / "grading" / "sandbox.py", tmp_path / "sandbox.py")
    grader = tmp_path / "grader.py"
    grader.write_text(
        "import importlib.util, json, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('sandbox', {str(tmp_path / 'sandbox.py')!r})\n"
        "sandbox = sys.modules['sandbox'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(sandbox)\n"
        f"r = sandbox.run_isolated([sys.executable, '-I', '-c', {_probe(tmp_path, scratch, secret)!r}],\n"
        f"                         {str(scratch)!r}, sandbox.Limits(wall_s=60, allow_no_cgroup=True))\n"
        "print(json.dumps({'uid': os.geteuid(), 'rc': r.returncode, 'bwrap': r.bwrap, 'cgroup': r.cgroup,\n"
        "                  'sandboxed': r.sandboxed, 'note': r.note,\n"
        "                  'stdout': r.stdout.decode(), 'stderr': r.stderr.decode()[-2000:]}))\n")
    command = [python, str(grader)]
    if os.geteuid() == 0:
        for path in (tmp_path, scratch, *scratch.iterdir(), grader, tmp_path / "sandbox.py"):
            os.chown(path, UNPRIVILEGED, UNPRIVILEGED)
        command = ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups", *command]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-3000:]
    outer = json.loads(run.stdout.strip().splitlines()[-1])
    assert outer["uid"] != 0 and outer["rc"] == 0 and outer["bwrap"], outer["stderr"]
    # a cgroup where one is delegated to this user, else the result says that none held
    assert outer["sandboxed"] == bool(outer["cgroup"]) and ("no cgroup" in outer["note"]) != outer["sandboxed"], outer
    _assert_isolated(json.loads(outer["stdout"]), tmp_path, scratch, secret)


def test_too_many_files_stop_the_sandbox(tmp_path):
    make_files = "for n in range(100_000):\n    open(f'f{n}', 'w').close()\nprint('all made')"
    result = run_isolated([sys.executable, "-c", make_files], tmp_path, Limits(wall_s=60, disk_files=1000))
    assert "more than 1,000 files" in result.reason and b"all made" not in result.stdout
    assert len(list(tmp_path.iterdir())) < 100_000


def test_missing_bwrap_refuses_and_flag_runs_unsandboxed(tmp_path, monkeypatch):
    """No bwrap on PATH: grading refuses with a clear message; the explicit flag grades, marked."""
    fixture = Fixture("honest")
    write(tmp_path / "submitted", [fixture])
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + "/nonexistent"}
    cli = subprocess.run([sys.executable, "-m", "llmcourse.cli", "grade", "ch3", "--submitted",
                          str(tmp_path / "submitted"), "--out", str(tmp_path / "out_cli")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert cli.returncode == 3, cli.stderr
    assert "bubblewrap (bwrap) is not installed" in cli.stderr and "--allow-unsandboxed" in cli.stderr
    assert not (tmp_path / "out_cli" / "grades.csv").exists()

    monkeypatch.setenv("PATH", env["PATH"])
    assert find_bwrap() is None and "not installed" in sandbox_problem()
    with pytest.raises(SandboxUnavailable, match="refusing to run student code unsandboxed"):
        grade_assignment("ch3", tmp_path / "submitted", tmp_path / "out", limits=LIMITS, log=lambda *a: None)
    with pytest.raises(SandboxUnavailable):
        run_isolated([sys.executable, "-c", "pass"], tmp_path, LIMITS)
    lines = []
    limits = Limits(wall_s=120, cell_s=20, output_bytes=256 * 1024, allow_unsandboxed=True)
    (report,) = grade_assignment("ch3", tmp_path / "submitted", tmp_path / "out", jobs=1, limits=limits,
                                 log=lines.append)
    assert report.score == 15 and report.sandboxed is False and "NOT SANDBOXED" in report.sandbox_note
    assert "NOT SANDBOXED" in lines[0] and "[NOT SANDBOXED]" in lines[1]
    assert grade_rows(tmp_path / "out")["honest"]["sandbox"] == "NOT SANDBOXED"
    assert json.loads((tmp_path / "out" / "report.json").read_text())["students"][0]["sandboxed"] is False


# ---------------------------------------------------------------- the sandbox's cgroup

needs_cgroup = pytest.mark.skipif(sandbox.cgroup_problem() is not None,
                                  reason=f"no cgroup for sandboxes here: {sandbox.cgroup_problem()}")


def _processes_with(mark: str) -> list[str]:
    """Pids of the processes whose command line contains ``mark`` (none may outlive a sandbox)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark.encode() in (proc / "cmdline").read_bytes():
                found.append(proc.name)
        except OSError:
            pass
    return found


def _our_cgroups() -> list[Path]:
    """The sandbox cgroups this test process has made and not yet removed."""
    place, _ = sandbox._find_place(sandbox.CGROUP_ROOT, os.geteuid())
    return [c for _, parent in place.parents for c in parent.glob(f"{sandbox.CGROUP_PREFIX}{os.getpid()}-*")]


MEMORY_TREE = '''
import os, time
children = []
for n in range(5):  # MEMORY-TREE-3619
    pid = os.fork()
    if pid == 0:
        block = b"x" * 2**30  # 1 GB, every page written: resident
        time.sleep(3)
        os._exit(0)
    children.append(pid)
print("children ended:", [os.waitpid(pid, 0)[1] for pid in children])
'''


@needs_cgroup
def test_memory_limit_holds_for_the_whole_process_tree(tmp_path):
    """Five children of 1 GB each: each under the 4 GB address-space limit, together 5 GB;
    the cgroup (1.5 GB for the whole sandbox) stops them and the report says "memory limit"."""
    limit = 3 * 2**29  # 1.5 GB
    result = run_isolated([sys.executable, "-c", MEMORY_TREE], tmp_path, Limits(wall_s=60, memory_tree_bytes=limit))
    assert "memory limit" in result.reason and result.usage["oom_kills"] >= 1, (result.reason, result.usage)
    assert result.usage["memory_peak"] <= limit, f"peak {result.usage['memory_peak']:,} > limit {limit:,}"
    assert b"children ended:" in result.stdout and b"9" in result.stdout, result.stdout  # killed by SIGKILL
    assert _processes_with("MEMORY-TREE-3619") == [] and _our_cgroups() == []


@needs_cgroup
def test_fork_bomb_stops_at_the_cgroups_process_limit(tmp_path):
    """The cgroup's pids.max binds first: it counts the whole sandbox (bwrap too), while
    RLIMIT_NPROC counts only the sandbox's uid (and binds nobody as root)."""
    mark = "3620"
    code = FORK_BOMB.format(mark=mark) + "\nprint('forks:', children, 'error:', error)\n"
    result = run_isolated([sys.executable, "-c", code], tmp_path, Limits(wall_s=60, processes=40))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    forks = int(re.search(rb"forks: (\d+)", result.stdout).group(1))
    assert forks < 40 and b"Resource temporarily unavailable" in result.stdout, result.stdout
    assert result.usage["forks_refused"] >= 1 and result.usage["pids_peak"] <= 40, result.usage
    assert [p for p in _processes_with(mark) if (Path("/proc") / p / "cmdline").read_bytes().startswith(b"sleep")] == []


BUSY = '''
import os, time
end = time.monotonic() + 2.5
child = os.fork()  # two processes, each busy for 2.5 s of wall time
while time.monotonic() < end:
    pass
if child:
    os.waitpid(child, 0)
'''


@needs_cgroup
def test_cpu_share_is_one_core(tmp_path):
    """Two busy processes get one core between them: CPU time (measured by the cgroup,
    for the whole tree) over wall time stays near 1, not 2. A statement about CPU share,
    not about how long anything takes."""
    start = time.monotonic()
    result = run_isolated([sys.executable, "-c", BUSY], tmp_path, Limits(wall_s=60))
    wall = time.monotonic() - start
    assert result.returncode == 0 and result.cgroup, result
    assert result.usage["cpu_s"] / wall < 1.3, f"{result.usage['cpu_s']:.2f} CPU s in {wall:.2f} s: {result.usage}"
    assert "1 CPU core" in result.note


SURVIVOR = '''
import os, signal, subprocess, sys, time
subprocess.Popen(["sleep", "{mark}"], start_new_session=True)  # out of the sandbox's process group
how = "{how}"
if how == "timeout":
    time.sleep(60)
elif how == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
'''


@needs_cgroup
@pytest.mark.parametrize("with_bwrap", [True, False], ids=["bwrap", "no-bwrap"])
@pytest.mark.parametrize("how", ["exits", "timeout", "killed"])
def test_cgroup_removed_and_nothing_survives(tmp_path, monkeypatch, how, with_bwrap):
    """After a normal exit, a timeout or a killed run, the sandbox's cgroup is gone and no
    process of it runs: not even a child in its own session, which escapes a kill of the
    process group (without bubblewrap's PID namespace only the cgroup catches it)."""
    if not with_bwrap:
        monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    mark = {"exits": "3621", "timeout": "3622", "killed": "3623"}[how] + ("1" if with_bwrap else "2")
    limits = Limits(wall_s=3, allow_unsandboxed=not with_bwrap)
    result = run_isolated([sys.executable, "-c", SURVIVOR.format(mark=mark, how=how)], tmp_path, limits)
    assert result.cgroup and result.bwrap == with_bwrap, result
    expected = {"exits": "", "timeout": "time limit", "killed": "SIGKILL"}[how]
    assert expected in result.reason if expected else result.reason == "", result.reason
    leftover = [p for p in _processes_with(mark) if (Path("/proc") / p / "cmdline").read_bytes().startswith(b"sleep")]
    assert leftover == [] and _our_cgroups() == [], (leftover, _our_cgroups())


READ_STDIN = '''
import os, sys
kind = "{kind}"
if kind == "symlink":
    os.symlink("/dev/zero", "ready")
elif kind == "fifo":
    os.mkfifo("ready")
else:
    open("ready", "w").close()
data = sys.stdin.buffer.read()
print("GOT", len(data))
'''


@pytest.mark.parametrize("kind", ["symlink", "fifo", "file"])
def test_only_a_regular_ready_file_releases_the_inputs(tmp_path, kind):
    """``ready`` as a symlink (to /dev/zero, which exists on the host too) or a FIFO never
    releases stdin, and the parent neither follows nor opens it: it returns at the wall
    limit. A regular file releases the inputs (the control)."""
    code = READ_STDIN.format(kind=kind)
    start = time.monotonic()
    result = run_isolated([sys.executable, "-c", code], tmp_path, Limits(wall_s=4),
                          stdin=[Stdin(b"the inputs", after="ready")])
    seconds = time.monotonic() - start
    if kind == "file":
        assert result.stdout == b"GOT 10\n" and result.reason == "", result
    else:
        assert result.timed_out and b"GOT" not in result.stdout, result
        assert seconds < 4 + 10, seconds


def test_stdin_parts_wait_for_their_data_and_a_failed_one_stops_the_child(tmp_path):
    """A part whose data the parent resolves later reaches the child when it is known, after
    the parts before it; a part whose Future fails (the parent gave up) kills the child,
    which never sees an end of input it could take for the data."""
    later = Future()
    threading.Timer(0.5, later.set_result, [b"late"]).start()
    result = run_isolated([sys.executable, "-c", "import sys; print(sys.stdin.buffer.read())"], tmp_path,
                          Limits(wall_s=60), stdin=[Stdin(b"early "), Stdin(later)])
    assert result.stdout == b"b'early late'\n" and result.reason == "", result
    gave_up = Future()
    threading.Timer(0.5, gave_up.set_exception, [RuntimeError("grading gave up")]).start()
    code = "import sys; data = sys.stdin.buffer.read(); print('read', len(data))"
    result = run_isolated([sys.executable, "-c", code], tmp_path, Limits(wall_s=60), stdin=[Stdin(b"x"), Stdin(gave_up)])
    assert b"read" not in result.stdout and not result.timed_out and not result.clean, result
    assert "killed" in result.reason, result


def test_an_answer_runner_never_given_its_cells_is_stopped_and_removed():
    """The runner is started before the submission is read; when the submission is rejected
    it is never sent its cells: leaving its ``with`` block kills it (not the time limit) and
    removes its folder."""
    from llmcourse.grading.scoring import AnswerRunner

    with AnswerRunner(Limits(wall_s=600)) as runner:
        workdir = runner.workdir
        assert workdir.is_dir()
    assert not workdir.exists()
    result = runner._done.result()
    assert not result.timed_out and not result.clean and "killed" in result.reason, result


def test_disk_walk_never_follows_symlinks(tmp_path):
    """Symlinks in the scratch folder (to /usr, to /, to themselves) are counted as one entry
    each, never walked; folders nested past DISK_DEPTH stop the sandbox."""
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "usr").symlink_to("/usr")
    (work / "sub" / "root").symlink_to("/")
    (work / "loop").symlink_to("loop")
    (work / "sub" / "data").write_bytes(b"x" * 8192)
    assert sandbox._disk_problem(work, Limits(disk_files=10, disk_bytes=2**20)) == ""
    assert "grew past" in sandbox._disk_problem(work, Limits(disk_files=10, disk_bytes=4096))
    deep = work / "deep"
    for _ in range(sandbox.DISK_DEPTH + 1):
        deep = deep / "d"
    deep.mkdir(parents=True)
    assert "nested more than" in sandbox._disk_problem(work, Limits())


def test_without_a_cgroup_grading_refuses_unless_allowed(tmp_path, monkeypatch):
    """No cgroup hierarchy (the cgroup root pointed at an empty folder): refusal with the
    reason and the flag to pass; with ``allow_no_cgroup`` the run goes on, marked."""
    monkeypatch.setattr(sandbox, "CGROUP_ROOT", str(tmp_path / "cgroup"))
    (tmp_path / "cgroup").mkdir()
    (tmp_path / "work").mkdir()
    problem = sandbox.cgroup_problem()
    assert problem and "no cgroup v1 memory hierarchy" in problem and problem in sandbox_problem()
    for call in (lambda: require_sandbox(Limits()),
                 lambda: run_isolated([sys.executable, "-c", "pass"], tmp_path / "work", Limits()),
                 lambda: grade_assignment("ch3", tmp_path / "work", tmp_path / "out", limits=Limits(),
                                          log=lambda *a: None)):
        with pytest.raises(SandboxUnavailable, match="without a cgroup.*--allow-no-cgroup"):
            call()
    assert not (tmp_path / "out" / "grades.csv").exists()
    assert require_sandbox(Limits(allow_no_cgroup=True)) is False
    result = run_isolated([sys.executable, "-c", "print('ran')"], tmp_path / "work", Limits(allow_no_cgroup=True))
    assert result.stdout == b"ran\n" and result.reason == "" and result.usage == {}
    assert result.bwrap and not result.cgroup and not result.sandboxed
    assert "NOT FULLY SANDBOXED" in result.note and "no cgroup" in result.note


def test_cgroup_v2_made_beside_the_graders_own(tmp_path):
    """cgroup v2 (not mounted here: a fake tree): the grader's own cgroup holds the grader, so
    the kernel refuses controllers for its children (here: its cgroup.subtree_control cannot
    be written); the sandboxes go into its parent, with memory.max, pids.max and cpu.max set."""
    mount = tmp_path / "cgroup"
    own = mount / "grader.scope"
    for folder in (mount, own):
        folder.mkdir(exist_ok=True)
        (folder / "cgroup.controllers").write_text("cpu io memory pids\n")
        (folder / "cgroup.procs").write_text("")
    (mount / "cgroup.subtree_control").write_text("cpu memory pids\n")
    (own / "cgroup.subtree_control").mkdir()  # EISDIR on write, as EBUSY on a cgroup with processes
    parent, problem = sandbox._v2_parent(mount, {"": "/grader.scope"})
    assert parent == mount, problem
    place = sandbox._Place(2, tuple((c, parent) for c in sandbox.CGROUP_NEEDED))
    limits = Limits(memory_tree_bytes=3 * 2**30, processes=99, cpu_cores=1.0)
    cgroup = sandbox._Cgroup(place, limits)
    try:
        folder = cgroup.folders["memory"]
        assert folder.parent == mount and folder.name.startswith(f"{sandbox.CGROUP_PREFIX}{os.getpid()}-")
        assert {f.name: f.read_text() for f in folder.iterdir()} == {
            "memory.max": str(3 * 2**30), "pids.max": "99", "cpu.max": "100000 100000"}
        assert cgroup.procs_files() == [folder / "cgroup.procs"]
    finally:
        shutil.rmtree(cgroup.folders["memory"])
    (own / "cgroup.controllers").write_text("cpu pids\n")  # a parent that does not pass memory down
    (mount / "cgroup.controllers").write_text("cpu pids\n")
    parent, problem = sandbox._v2_parent(mount, {"": "/grader.scope"})
    assert parent is None and "has no memory controller" in problem, problem
