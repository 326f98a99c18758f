"""``llmcourse`` installed from a wheel, away from the checkout: it declares what it imports,
and ``generate``, ``train`` and ``grade`` (against a course folder given by path) work.

The fresh environment is a new venv with the wheel installed by pip. Its other packages
are this environment's, hard-linked (copied where links cannot be made) rather than
downloaded, since tests never use the network; llmcourse's own editable install is left
out, so the only llmcourse there is the wheel's.
"""
import ast
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "llmcourse"
SITE = Path(sysconfig.get_paths()["purelib"])
# Where an import's top-level name differs from the distribution that provides it.
DISTRIBUTION = {"yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn", "dateutil": "python-dateutil"}


def third_party_imports(files) -> set[str]:
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names.add(node.module.split(".")[0])
    return {DISTRIBUTION.get(n, n) for n in names - set(sys.stdlib_module_names) - {"llmcourse", "__future__"}}


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower().replace("_", "-") for r in requirements}


def project_table() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_the_library_and_the_grader_declare_what_they_import():
    project = project_table()
    library = [p for p in PACKAGE.rglob("*.py") if "grading" not in p.relative_to(PACKAGE).parts]
    cluster = [PACKAGE / "grading" / "cluster.py"]
    grading = [p for p in (PACKAGE / "grading").rglob("*.py") if p not in cluster]
    declared = requirement_names(project["dependencies"])
    missing = third_party_imports(library) - declared
    assert not missing, f"the library imports {sorted(missing)}, not in pyproject's dependencies"
    extra = declared | requirement_names(project["optional-dependencies"]["grading"])
    missing = third_party_imports(grading) - extra
    assert not missing, f"the grader imports {sorted(missing)}, in neither dependencies nor the grading extra"
    missing = third_party_imports(cluster) - extra - requirement_names(project["optional-dependencies"]["cluster"])
    assert not missing, f"grading on a cluster imports {sorted(missing)}, not in the grading or cluster extras"


def fresh_venv(folder: Path) -> Path:
    """A new venv with this environment's packages (llmcourse's own install left out)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    target = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:  # another file system
            shutil.copy2(src, dst)

    for entry in SITE.iterdir():
        if entry.name.startswith(("__editable__", "llmcourse")) or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, copy_function=link, symlinks=True)
        else:
            link(entry, target / entry.name)
    # Console scripts the grader runs (nbgrader starts alembic), pointed at the new python
    for script in Path(sys.executable).parent.iterdir():
        head = script.read_bytes()[:200] if script.is_file() and not script.is_symlink() else b""
        if head.startswith(b"#!") and b"python" in head.split(b"\n")[0] and not (folder / "bin" / script.name).exists():
            lines = script.read_text().splitlines(keepends=True)
            (folder / "bin" / script.name).write_text(f"#!{python}\n" + "".join(lines[1:]))
            (folder / "bin" / script.name).chmod(0o755)
    return python


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_generates_trains_and_grades(tmp_path):
    # Build the wheel from a copy of what it is made of, so the checkout gets no build/ folder.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(PACKAGE, source / "llmcourse", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path / "dist"), str(source)], check=True)
    (wheel,) = (tmp_path / "dist").glob("llmcourse-*.whl")
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: torch" in metadata and 'extra == "grading"' in metadata

    python = fresh_venv(tmp_path / "venv")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LLMCOURSE_COURSE", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"

    def run(*args):
        result = subprocess.run([str(python.parent / "llmcourse"), *args], cwd=work, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"llmcourse {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        return result.stdout

    where = subprocess.run([str(python), "-c", "import llmcourse, sys; print(llmcourse.__file__); print(sys.prefix)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(tmp_path / "venv"), f"llmcourse imported from {where[0]}, not the wheel"
    pip_check = subprocess.run([str(python), "-m", "pip", "check"], cwd=work, env=env, capture_output=True, text=True)
    assert pip_check.returncode == 0, pip_check.stdout + pip_check.stderr

    # train on a small text file, then generate from what it wrote
    (work / "poem.txt").write_text("the cat sat on the mat. the dog sat on the log. " * 40)
    (work / "small.json").write_text(json.dumps({"context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 1}))
    run("train", "--config", "small.json", "--data", "poem.txt", "--out", "run", "--max-steps", "3",
        "--batch-size", "2", "--eval-interval", "2", "--no-progress", "--device", "cpu")
    text = run("generate", "--checkpoint", "run", "--prompt", "the cat", "--max-new-tokens", "5", "--device", "cpu")
    assert text.startswith("the cat") and len(text) > len("the cat")

    # grade a class of one against the course folder, given by path (not found from here)
    submission = work / "submitted" / "alice" / "ch3"
    submission.mkdir(parents=True)
    shutil.copy2(REPO / "solutions" / "ch3" / "ch3.ipynb", submission / "ch3.ipynb")
    run("grade", "ch3", "--course", str(REPO), "--submitted", "submitted", "--out", "graded")
    (row,) = list(csv.DictReader((work / "graded" / "grades.csv").open()))
    assert row["student"] == "alice" and float(row["score"]) == float(row["max_score"]) > 0, row

    # without --course, from a folder that is no course, the error says what is expected
    result = subprocess.run([str(python.parent / "llmcourse"), "grade", "ch3", "--submitted", "submitted"],
                            cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "no course folder" in result.stderr and "--course" in result.stderr
