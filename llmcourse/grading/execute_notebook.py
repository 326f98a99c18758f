"""Execute a notebook with nbclient, client and kernel together in this (limited) process.

Run by path inside ``run_isolated``: ``python -I execute_notebook.py IN OUT CELL_S OUTPUT_BYTES``.
Writes the executed notebook to OUT and ``execution.json`` (how execution ended) beside it.
Outputs are capped in **bytes** per cell as they arrive, so printing 60 MB on one line
neither fills memory nor ends up in the feedback. Imports nothing from ``llmcourse``.
"""
import json
import os
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError


class CappedClient(NotebookClient):
    """A NotebookClient that keeps at most ``output_bytes`` of output per cell."""

    def __init__(self, nb, output_bytes, **kwargs):
        super().__init__(nb, **kwargs)
        self.output_bytes = output_bytes
        self._sizes = {}

    def output(self, outs, msg, display_id, cell_index):
        size = self._sizes.get(cell_index, 0)
        if size > self.output_bytes:
            return None  # already truncated: drop the rest
        content = msg.get("content", {})
        size += len(content.get("text", "")) + len(json.dumps(content.get("data", {}))) + \
            len(json.dumps(content.get("traceback", [])))
        self._sizes[cell_index] = size
        if size > self.output_bytes:
            outs.append(nbformat.v4.new_output(
                "stream", name="stderr",
                text=f"[output truncated: this cell printed more than {self.output_bytes} bytes]\n"))
            return None
        return super().output(outs, msg, display_id, cell_index)


def main():
    source, target, cell_s, output_bytes = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    nb = nbformat.read(source, as_version=4)
    os.environ["NBGRADER_EXECUTION"] = "autograde"
    client = CappedClient(nb, output_bytes, timeout=cell_s, allow_errors=True, kernel_name="python3",
                          resources={"metadata": {"path": os.getcwd()}}, interrupt_on_timeout=True,
                          shutdown_kernel="immediate")
    status = {"error": None}
    try:
        client.execute()
    except DeadKernelError:
        status["error"] = "the kernel died (os._exit, a crash or the memory limit); later cells did not run"
    except CellTimeoutError:
        status["error"] = f"a cell ran past the time limit ({cell_s:g} s) and could not be interrupted"
    except Exception as e:  # noqa: BLE001 -- reported, never raised past the grader
        status["error"] = f"execution failed: {type(e).__name__}: {str(e)[:300]}"
    nbformat.write(nb, target)
    with open(os.path.join(os.path.dirname(target) or ".", "execution.json"), "w") as f:
        json.dump(status, f)


if __name__ == "__main__":
    main()
