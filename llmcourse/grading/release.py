"""``llmcourse release``: generate the student notebooks in exercises/ from solutions/.

Runs ``nbgrader generate_assignment --force`` (solution regions become ``YOUR CODE HERE``
stubs, hidden tests are removed, checksums are added), with a throw-away gradebook, then
normalises every notebook so that regenerating gives byte-identical files, and marks it with
its assignment (``metadata.llmcourse.assignment``), so ``llmcourse check`` knows what a copy
of it is, whatever its name or folder.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..files import atomic_write_bytes
from .nbconfig import ensure_tools_on_path, find_course

METADATA_KEY = "llmcourse"  # a released notebook's metadata: {"llmcourse": {"assignment": "ch3"}}


def normalise_notebook(path: Path, assignment: str) -> None:
    """Rewrite a generated notebook canonically: no outputs or execution counts, sorted
    keys, one-space indent, a final newline (what ``nbformat.write`` would do); and name its
    assignment in its metadata (``METADATA_KEY``)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb["metadata"][METADATA_KEY] = {"assignment": assignment}
    atomic_write_bytes(path, (json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())


def assignments(root: Path, source: str = "solutions") -> list[str]:
    """The assignments of the course in ``root``: the folders of ``source`` (the instructor's
    ``solutions/``, or the release ``exercises/``) with a notebook."""
    return sorted(p.name for p in (root / source).iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def release(assignment: str | None = None, root: str | Path | None = None, release_dir: str | Path | None = None,
            log=print) -> list[Path]:
    """Generate ``release_dir/<assignment>/`` (default: the course's ``exercises/``) for one or
    all assignments of the course in ``root`` (default: ``find_course()``)."""
    root = find_course(root)
    release_dir = Path(release_dir).resolve() if release_dir else root / "exercises"
    names = [assignment] if assignment else assignments(root)
    ensure_tools_on_path()
    written = []
    for name in names:
        if not (root / "solutions" / name).is_dir():
            raise FileNotFoundError(f"no assignment {name!r} in {root / 'solutions'}")
        with tempfile.TemporaryDirectory(prefix="llmcourse-release-") as tmp:
            result = subprocess.run(
                [sys.executable, "-m", "nbgrader", "generate_assignment", name, "--force",
                 f"--CourseDirectory.root={root}", f"--CourseDirectory.release_directory={tmp}",
                 f"--CourseDirectory.db_url=sqlite:///{tmp}/gradebook.db"],
                cwd=root, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{result.stderr[-3000:]}")
            generated = Path(tmp) / name
            target = release_dir / name
            for nb in sorted(generated.rglob("*.ipynb")):
                normalise_notebook(nb, name)
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(generated, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "gradebook.db"))
            written += sorted(target.rglob("*.ipynb"))
        log(f"released {name} -> {target}")
    return written
