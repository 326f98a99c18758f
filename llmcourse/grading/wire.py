"""The answer runner's wire format: the inputs sent to it, and its outputs read back.

On the runner's stdin (parent -> runner), two parts: first the spec (an 8-byte length and a
JSON object: the cells to run, the policy, the cell time limit, the name of the ``ready``
file), sent as soon as the parent has it; then, only after the student code ran, the
inputs: an 8-byte length, a JSON header naming each call (``{"key", "function", "args"}``,
tensors by name) and a safetensors blob. Outputs (runner -> parent, files in its scratch folder): ``outputs.json``
(``{"cells": [{"id", "error"}], "calls": {key: {"output": ..., "inputs_after"?: ...} | {"error": ...}}}``) and
``outputs.safetensors``. The outputs come from a process that ran student code, so they
are read with ``read_untrusted`` and checked for shape before anything uses them: a
garbled file is the student's loss (``WireError``), never the grader's crash.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from .untrusted import MissingFile, UntrustedFile, read_untrusted

MAX_JSON_BYTES = 16 * 2**20
MAX_TENSOR_BYTES = 64 * 2**20  # the sandbox's own file-size limit is the same
MAX_TEXT = 500  # characters kept of any message that came out of the sandbox
MAX_DEPTH = 16  # tuples of tuples...


class WireError(ValueError):
    """The runner's outputs are missing or not in the wire format."""


def encode_spec(spec: dict) -> bytes:
    """The runner's spec (``{"cells", "policy", "cell_timeout", "ready_file"}``), as it reads it."""
    blob = json.dumps(spec).encode()
    return struct.pack("<Q", len(blob)) + blob


def encode_inputs(calls: list[tuple[str, str, tuple]], keep_inputs: frozenset[str] = frozenset()) -> bytes:
    """``(key, function, args)`` per call -> header + safetensors blob, as the runner reads them.
    For the functions in ``keep_inputs``, the runner also sends back the arguments after the call
    (``"inputs_after"``), so that the parent can see whether it changed them."""
    import torch
    from safetensors.torch import save

    tensors, header = {}, {"calls": []}
    for key, function, args in calls:
        encoded = []
        for i, arg in enumerate(args):
            if isinstance(arg, torch.Tensor):
                tensors[f"{key}.a{i}"] = arg.contiguous().clone()  # safetensors refuses shared storage
                encoded.append({"tensor": f"{key}.a{i}"})
            else:
                encoded.append({"value": arg})
        header["calls"].append({"key": key, "function": function, "args": encoded,
                                "keep_inputs": function in keep_inputs})
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + save(tensors)


def text(value) -> str:
    """A message from the sandbox as a short string, whatever it was."""
    return str(value)[:MAX_TEXT] if isinstance(value, str) else f"<not a message: {type(value).__name__}>"


def read_outputs(workdir: Path) -> tuple[list[dict], dict[str, dict], dict]:
    """``(cells, calls, tensors)`` from the runner's files, or ``WireError`` saying what is wrong."""
    from safetensors.torch import load

    try:
        outputs = json.loads(read_untrusted(workdir, "outputs.json", MAX_JSON_BYTES))
        tensors = load(read_untrusted(workdir, "outputs.safetensors", MAX_TENSOR_BYTES))
    except MissingFile:
        raise WireError("it ended without writing its outputs (os._exit, or it crashed)") from None
    except UntrustedFile as e:
        raise WireError(str(e)) from None
    except Exception as e:  # noqa: BLE001 -- invalid JSON or safetensors, whatever the parser says
        raise WireError(f"the outputs are garbled ({type(e).__name__})") from None
    if not (isinstance(outputs, dict) and isinstance(outputs.get("cells"), list)
            and isinstance(outputs.get("calls"), dict)):
        raise WireError("the outputs are not in the runner's format")
    cells = [{"id": text(c.get("id")), "error": text(c["error"]) if c.get("error") is not None else None}
             for c in outputs["cells"] if isinstance(c, dict)]
    calls = {k: v for k, v in outputs["calls"].items() if isinstance(v, dict)}
    return cells, calls, tensors


def decode_output(encoded, tensors: dict, depth: int = 0):
    """One call's output, as the runner encoded it; anything unexpected becomes a placeholder
    string, which then fails the comparison with a message saying what arrived."""
    if not isinstance(encoded, dict) or depth > MAX_DEPTH:
        return "<an output the grader cannot read>"
    if "tensor" in encoded:
        return tensors.get(encoded["tensor"], "<a tensor missing from the outputs>")
    if "tuple" in encoded and isinstance(encoded["tuple"], list):
        return tuple(decode_output(e, tensors, depth + 1) for e in encoded["tuple"])
    if "unsupported" in encoded:
        return f"<an object of type {text(encoded['unsupported'])[:100]}>"
    value = encoded.get("value")
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:100_000]
    return "<an output the grader cannot read>"
