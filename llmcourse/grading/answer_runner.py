"""The answer runner: runs a student's answer code in a fresh process and calls its functions.

Run by path, never imported by grading code: ``python -I answer_runner.py spec.json``
in a scratch folder. It imports nothing from ``llmcourse`` and makes ``llmcourse``
unimportable before any student code runs. Steps:

1. block ``llmcourse`` (a meta-path finder first in line, the editable-install finder and
   any path holding the package removed) and replace the forbidden torch built-ins
   listed in the spec by functions that raise;
2. execute the answer and given cells of the spec, in order, in one namespace, each with
   a time limit (SIGALRM), keeping going after errors as a notebook would;
3. create the ``ready`` file and only then read the inputs from stdin: a JSON header
   (which function to call with which arguments) and a safetensors blob;
4. call the functions and write ``outputs.json`` + ``outputs.safetensors``.

The parent compares these outputs with ``llmcourse``; nothing here decides a score.
Student code can break this process, but then only its own outputs are missing.
"""
import builtins
import json
import os
import signal
import struct
import sys
import traceback
import types

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

_open, _exec, _compile, _dumps = builtins.open, builtins.exec, builtins.compile, json.dumps
_Tensor, _isinstance, _str, _exit = torch.Tensor, builtins.isinstance, builtins.str, os._exit
_stdin = sys.stdin.buffer


class CellTimeout(BaseException):
    """Raised in student code when a cell or call runs past its time limit."""


class _BlockLlmcourse:
    """Meta-path finder that refuses ``llmcourse`` (all but the stub of ``llmcourse.grading``)."""

    def find_spec(self, name, path=None, target=None):
        if name == "llmcourse" or name.startswith("llmcourse."):
            raise ImportError("llmcourse is not available to graded code: write the answer yourself")
        return None


def block_llmcourse():
    sys.meta_path[:] = [f for f in sys.meta_path if "llmcourse" not in repr(f) and
                        "llmcourse" not in getattr(type(f), "__module__", "")]
    sys.meta_path.insert(0, _BlockLlmcourse())
    sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "llmcourse"))]
    for name in [m for m in sys.modules if m == "llmcourse" or m.startswith("llmcourse.")]:
        del sys.modules[name]
    # The notebook's given cell imports ``check`` for the visible tests; here it does nothing.
    package = types.ModuleType("llmcourse")
    package.__path__ = []
    grading = types.ModuleType("llmcourse.grading")
    grading.check = lambda *args, **kwargs: None
    package.grading = grading
    sys.modules["llmcourse"], sys.modules["llmcourse.grading"] = package, grading


def forbid(dotted_paths):
    """Replace each ``a.b.c`` by a function (or class) that raises when used."""
    for dotted in dotted_paths:
        owner_path, _, attr = dotted.rpartition(".")
        owner = sys.modules.get(owner_path)
        if owner is None:
            owner = __import__(owner_path, fromlist=[attr])
        if not hasattr(owner, attr):
            continue

        def refuse(*args, _name=dotted, **kwargs):
            raise RuntimeError(f"{_name} is not allowed in this exercise: write it by hand")
        setattr(owner, attr, refuse)


def _alarm(signum, frame):
    raise CellTimeout()


def run_limited(fn, seconds):
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def strip_magics(source):
    """IPython lines (``%matplotlib``, ``!pip``) are not Python: keep them out."""
    return "\n".join("pass  # " + line if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())


def execute_cells(cells, namespace, seconds):
    report = []
    for cell in cells:
        try:
            code = _compile(strip_magics(cell["source"]), f"<cell {cell['id']}>", "exec")
            run_limited(lambda: _exec(code, namespace), seconds)
            report.append({"id": cell["id"], "error": None})
        except CellTimeout:
            report.append({"id": cell["id"], "error": f"cell time limit ({seconds:g} s)"})
        except BaseException as e:  # noqa: BLE001 -- SystemExit included: a cell cannot end the runner
            report.append({"id": cell["id"], "error": _describe_error(e)})
    return report


def _describe_error(e):
    lines = traceback.format_exception_only(type(e), e)
    return "".join(lines).strip()[-500:]


def read_inputs():
    """The header and tensors the parent sends once the student code has run."""
    size = struct.unpack("<Q", _stdin.read(8))[0]
    header = json.loads(_stdin.read(size))
    tensors = _st_load(_stdin.read())
    return header, tensors


def encode(value, key, tensors):
    """A JSON description of ``value``; tensors go into ``tensors`` under ``key``."""
    if _isinstance(value, _Tensor):
        tensors[key] = value.detach().to("cpu").contiguous().clone()
        return {"tensor": key}
    if _isinstance(value, (tuple, list)):
        return {"tuple": [encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if value is None or _isinstance(value, (bool, int, float, _str)):
        return {"value": value}
    return {"unsupported": _str(type(value).__name__)[:100]}


def call_all(header, tensors, namespace, seconds):
    results, out_tensors = {}, {}
    for call in header["calls"]:
        key, name = call["key"], call["function"]
        fn = namespace.get(name)
        if not callable(fn):
            results[key] = {"error": f"{name} is not defined (did its cell run without errors?)"}
            continue
        args = [tensors[a["tensor"]].clone() if "tensor" in a else a["value"] for a in call["args"]]
        try:
            value = run_limited(lambda: fn(*args), seconds)
            results[key] = {"output": encode(value, key, out_tensors)}
        except CellTimeout:
            results[key] = {"error": f"time limit ({seconds:g} s) while calling {name}"}
        except NotImplementedError:
            results[key] = {"error": f"{name} is not written yet (NotImplementedError)"}
        except BaseException as e:  # noqa: BLE001
            results[key] = {"error": f"{name} raised {_describe_error(e)}"}
    return results, out_tensors


def main():
    with _open(sys.argv[1]) as f:
        spec = json.load(f)
    block_llmcourse()
    forbid(spec["forbidden"])
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    cell_report = execute_cells(spec["cells"], namespace, spec["cell_timeout"])
    with _open(spec["ready_file"], "w") as f:
        f.write("ready")
    header, tensors = read_inputs()
    results, out_tensors = call_all(header, tensors, namespace, spec["cell_timeout"])
    with _open("outputs.safetensors", "wb") as f:
        f.write(_st_save(out_tensors))
    with _open("outputs.json", "w") as f:
        f.write(_dumps({"cells": cell_report, "calls": results}))
    sys.stdout.flush()
    _exit(0)  # no atexit handlers or finalizers the student may have registered


if __name__ == "__main__":
    main()
