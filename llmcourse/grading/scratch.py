"""Scratch folders for grading, and removing the ones a killed grader left behind.

Every temporary folder grading makes comes from ``sandbox.scratch_folder``, named
``llmcourse-<kind>-<pid>-<random>``. It is
removed when its ``with`` block ends, also on Ctrl-C and on SIGTERM (the CLI turns SIGTERM
into ``SystemExit``); a process killed with SIGKILL cannot clean up, so the next grading run
removes the folders of processes that no longer exist (``remove_stale``).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .sandbox import SCRATCH_PREFIX as PREFIX
from .sandbox import process_alive


def _owner_pid(folder: Path) -> int | None:
    parts = folder.name[len(PREFIX):].split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def remove_stale() -> list[Path]:
    """Remove the scratch folders whose process is gone; returns them."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*-*"):
        pid = _owner_pid(folder)
        if pid is None or folder.is_symlink() or not folder.is_dir() or process_alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
