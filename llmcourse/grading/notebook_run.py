"""Executing the restored notebook for the feedback, and taking back only its outputs.

The run happens in a sandbox (``execute_notebook.py``), where student code can rewrite or
replace any file it leaves: ``executed.ipynb`` could be a symlink to another student's
notebook, a forged notebook with honest-looking code, or a FIFO. So the grader keeps the
notebook it sent (the trusted, restored one) and copies into it only the outputs of each
cell, by position and cell id, capped in bytes, and only when the run exited cleanly.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat

from .sandbox import Limits, Result, run_isolated
from .untrusted import UntrustedFile, read_untrusted
from .wire import text

HERE = Path(__file__).resolve().parent
MAX_EXECUTED_BYTES = 64 * 2**20  # the sandbox's file-size limit


def execute_for_feedback(nb, sent, scratch: Path, limits: Limits) -> tuple[str, Result]:
    """Execute ``sent`` (``nb`` with hidden tests removed) in a sandbox and copy its outputs
    into ``nb``, in place. Returns why execution failed ("" when it did not) and the
    sandbox's result, for the report (``scoring.note_sandbox``). Touches nothing else, so it
    can run beside the answer runner."""
    workdir = scratch / "execute"
    workdir.mkdir()
    nbformat.write(sent, workdir / "restored.ipynb")
    result = run_isolated([sys.executable, "-I", str(HERE / "execute_notebook.py"), "restored.ipynb",
                           "executed.ipynb", str(limits.cell_s), str(limits.output_bytes)], workdir, limits)
    return _copy_back(nb, workdir, result, limits), result


def _copy_back(nb, workdir: Path, result: Result, limits: Limits) -> str:
    """The executed notebook's outputs into ``nb``; why that could not be done ("" if it was)."""
    if not result.clean:
        return f"executing the notebook failed: {result.reason or f'exited with status {result.returncode}'}"
    try:
        status = json.loads(read_untrusted(workdir, "execution.json", 64 * 1024))
        executed = nbformat.reads(read_untrusted(workdir, "executed.ipynb", MAX_EXECUTED_BYTES).decode(),
                                  as_version=4)
    except (UntrustedFile, ValueError, UnicodeDecodeError, RecursionError) as e:
        return f"executing the notebook failed: its result could not be read ({text(str(e))[:200]})"
    copy_outputs(executed, nb, limits.output_bytes)
    return text(status.get("error") or "") if isinstance(status, dict) else "executing the notebook failed"


def copy_outputs(executed, nb, output_bytes: int) -> None:
    """Each code cell of ``nb`` gets the outputs of the cell at the same place in ``executed``
    when that cell has the same id; all of a cell's outputs together are kept under
    ``output_bytes``. ``executed`` must pass nbformat's schema, or nothing is copied."""
    try:
        nbformat.validate(executed)
    except Exception:  # noqa: BLE001 -- ValidationError, or worse: a notebook nbformat does not know
        return
    if len(executed.cells) != len(nb.cells):
        return
    for mine, cell in zip(nb.cells, executed.cells):
        if mine.cell_type != "code" or cell.cell_type != "code" or cell.get("id") != mine.get("id"):
            continue
        kept, size = [], 0
        for output in cell.outputs:
            size += len(json.dumps(output))
            if size > output_bytes:
                kept.append(nbformat.v4.new_output("stream", name="stderr",
                                                   text=f"[output truncated: more than {output_bytes} bytes]\n"))
                break
            kept.append(output)
        mine.outputs, mine.execution_count = kept, cell.execution_count
