"""Training checkpoints: write a run to disk and read it back, bit for bit (chapter 4).

A checkpoint is a folder:

    config.json, model.safetensors   the model, as ``weights.save_model`` writes it
                                     (so ``weights.load_gpt`` reads it too)
    optimizer.safetensors            AdamW's tensors (moments, step counts), flattened
    optimizer.json                   the rest of AdamW's state dict (param groups, ...)
    rng.safetensors                  each process's torch RNG states, as uint8 tensors
    trainer_state.json               step, data position, train config, history, ...
    loss.png                         the loss plot (written by ``train``, optional here)

Python's and NumPy's RNGs are not used in training, so they are not saved. A save is
atomic as a whole (``save_checkpoint``): a process killed at any moment leaves the
old checkpoint or the new one, complete. ``train`` decides what goes into
``trainer_state``; this module only stores it.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from .config import GPTConfig
from .files import atomic_write_bytes, fsync_dir
from .model import GPT
from .weights import load_model, save_model

CHECKPOINT_FILES = ["config.json", "model.safetensors", "optimizer.safetensors",
                    "optimizer.json", "rng.safetensors", "trainer_state.json"]


# --- Optimizer state ------------------------------------------------------------------


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state dict into named tensors (for safetensors) and a
    JSON-able rest that records which tensor belongs where."""
    tensors, state = {}, {}
    for param_id, param_state in state_dict["state"].items():
        entry = {"tensors": [], "values": {}}
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{key}"] = value.detach().cpu().contiguous()
                entry["tensors"].append(key)
            else:
                entry["values"][key] = value
        state[str(param_id)] = entry
    return tensors, {"state": state, "param_groups": state_dict["param_groups"]}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], structure: dict) -> dict:
    """The inverse of ``flatten_optimizer_state``."""
    state = {}
    for param_id, entry in structure["state"].items():
        state[int(param_id)] = {**entry["values"],
                                **{key: tensors[f"state.{param_id}.{key}"] for key in entry["tensors"]}}
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in structure["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict, source: Path) -> None:
    """``optimizer.load_state_dict``, after checking that every saved moment has the
    shape of the parameter it belongs to (PyTorch checks only the counts)."""
    saved_groups, groups = state_dict["param_groups"], optimizer.param_groups
    if [len(g["params"]) for g in saved_groups] != [len(g["params"]) for g in groups]:
        raise ValueError(f"{source}: the saved optimizer has parameter groups of sizes "
                         f"{[len(g['params']) for g in saved_groups]}, the model needs "
                         f"{[len(g['params']) for g in groups]}")
    for saved, group in zip(saved_groups, groups):
        for param_id, param in zip(saved["params"], group["params"]):
            moment = state_dict["state"].get(param_id, {}).get("exp_avg")
            if moment is not None and moment.shape != param.shape:
                raise ValueError(f"{source}: the state of parameter {param_id} has shape "
                                 f"{tuple(moment.shape)}, the parameter {tuple(param.shape)}")
    optimizer.load_state_dict(state_dict)


# --- Saving and loading ---------------------------------------------------------------


def _sidecars(folder: Path) -> tuple[Path, Path]:
    """Where a checkpoint is written before it is swapped in, and where the previous
    one waits until the swap is done. Hidden names: never mistaken for a checkpoint."""
    return folder.parent / f".{folder.name}.saving", folder.parent / f".{folder.name}.previous"


def recover_checkpoint(folder: str | os.PathLike) -> None:
    """Finish or undo a checkpoint swap that a killed process left half done.

    The swap is two renames (folder -> previous, saving -> folder). A kill between
    them leaves no ``folder`` but a complete ``previous``: put it back. A leftover
    ``saving`` folder was never complete and is deleted.
    """
    folder = Path(folder)
    saving, previous = _sidecars(folder)
    if previous.is_dir():
        if folder.exists():
            shutil.rmtree(previous)
        else:
            os.replace(previous, folder)
    if saving.exists():
        shutil.rmtree(saving)


def save_checkpoint(folder: str | os.PathLike, model: GPT, optimizer: torch.optim.Optimizer,
                    trainer_state: dict, rng_states: dict[str, torch.Tensor],
                    extra_files: Mapping[str, bytes] | None = None) -> Path:
    """Write a training checkpoint, atomically as a whole.

    Every file goes into a hidden folder beside ``folder`` (each file fsynced by
    ``atomic_write_bytes``), which is then swapped in by renames; the previous
    checkpoint is deleted only after that. A process killed at any moment leaves
    either the old checkpoint or the new one, complete (``recover_checkpoint``).
    ``extra_files`` maps more file names to their bytes (``train`` adds the loss plot).
    """
    folder = Path(folder)
    recover_checkpoint(folder)
    saving, previous = _sidecars(folder)
    save_model(model, saving)
    tensors, structure = flatten_optimizer_state(optimizer.state_dict())
    atomic_write_bytes(saving / "optimizer.safetensors", safetensors_save(tensors))
    atomic_write_bytes(saving / "optimizer.json", json.dumps(structure).encode())
    atomic_write_bytes(saving / "rng.safetensors", safetensors_save(rng_states))
    atomic_write_bytes(saving / "trainer_state.json", json.dumps(trainer_state, indent=1).encode())
    for name, data in (extra_files or {}).items():
        atomic_write_bytes(saving / name, data)
    fsync_dir(saving)
    if folder.exists():
        os.replace(folder, previous)
    os.replace(saving, folder)
    fsync_dir(folder.parent)
    if previous.exists():
        shutil.rmtree(previous)
    return folder


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"checkpoint file {path} is not valid JSON (truncated or corrupt?): {e}") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} is missing")
    try:
        return safetensors_load(path.read_bytes())
    except SafetensorError as e:
        raise ValueError(f"checkpoint file {path} is not a valid safetensors file (truncated?): {e}") from None


def load_checkpoint(folder: str | os.PathLike, model_config: GPTConfig | None = None,
                    device: str | torch.device = "cpu") -> dict:
    """Read a training checkpoint back, checking every file.

    Returns a dict with "model" (a ``GPT``, in train mode), "optimizer" (a state
    dict), "rng" (name -> uint8 tensor) and "trainer_state". A missing file raises
    FileNotFoundError, a corrupt one or a model config other than ``model_config``
    a ValueError, each naming the file.
    """
    folder = Path(folder)
    recover_checkpoint(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {folder}")
    for name in CHECKPOINT_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"checkpoint file {folder / name} is missing")
    saved_config = GPTConfig.from_dict(_read_json(folder / "config.json"))
    if model_config is not None and saved_config != model_config:
        ours, theirs = model_config.to_dict(), saved_config.to_dict()
        diff = ", ".join(f"{k}: checkpoint {theirs[k]!r}, requested {ours[k]!r}" for k in ours if ours[k] != theirs[k])
        raise ValueError(f"{folder / 'config.json'} does not match the model config ({diff})")
    model = load_model(folder, device=device).train()
    optimizer = unflatten_optimizer_state(_read_safetensors(folder / "optimizer.safetensors"),
                                          _read_json(folder / "optimizer.json"))
    return {"model": model, "optimizer": optimizer, "rng": _read_safetensors(folder / "rng.safetensors"),
            "trainer_state": _read_json(folder / "trainer_state.json")}



# --- RNG states -----------------------------------------------------------------------


def gather_rng_states(device: torch.device, world_size: int = 1) -> dict[str, torch.Tensor]:
    """Every process's RNG states (dropout draws from them), gathered on all ranks:
    "cpu.rank<r>" and, on CUDA, "cuda.rank<r>", as uint8 tensors. With several
    processes this is a collective: every rank must call it."""
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    states = {}
    for kind, state in mine.items():
        gathered = [state]
        if world_size > 1:
            comm = state.to(device)  # NCCL only moves GPU tensors
            gathered = [torch.empty_like(comm) for _ in range(world_size)]
            dist.all_gather(gathered, comm)
        for r, s in enumerate(gathered):
            states[f"{kind}.rank{r}"] = s.cpu()
    return states


def restore_rng_state(states: dict[str, torch.Tensor], device: torch.device, rank: int = 0) -> None:
    """Set this process's RNG states to those ``gather_rng_states`` saved for ``rank``."""
    if f"cpu.rank{rank}" not in states:
        raise ValueError(f"the checkpoint has no RNG state for rank {rank}: resume with as many "
                         f"processes as wrote it ({len([k for k in states if k.startswith('cpu.')])})")
    torch.set_rng_state(states[f"cpu.rank{rank}"])
    if device.type == "cuda" and f"cuda.rank{rank}" in states:
        torch.cuda.set_rng_state(states[f"cuda.rank{rank}"], device)
