"""Loading GPT-2's public weights, and saving and loading our own models (chapter 4).

Weights are read from safetensors files (or, for old checkpoints, with
``torch.load(weights_only=True)``); nothing here unpickles arbitrary objects.
Every file is written with ``files.atomic_write_bytes`` (a temporary file, fsync,
then a rename), so a process killed mid-save leaves the previous file intact.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from .config import GPTConfig
from .files import atomic_write_bytes
from .model import GPT, resolve_device

# Our parameter names and the Hugging Face GPT-2 names they come from, in one table.
# HF's GPT-2 stores its linear layers as Conv1D, with weights of shape (in, out):
# those (transpose=True) are the transpose of nn.Linear's (out, in).
HF_GPT2_NAMES = [
    # (ours, Hugging Face's, transpose)
    ("tok_emb.weight", "wte.weight", False),
    ("pos_emb.weight", "wpe.weight", False),
    ("blocks.{i}.norm1.weight", "h.{i}.ln_1.weight", False),
    ("blocks.{i}.norm1.bias", "h.{i}.ln_1.bias", False),
    ("blocks.{i}.attn.qkv.weight", "h.{i}.attn.c_attn.weight", True),
    ("blocks.{i}.attn.qkv.bias", "h.{i}.attn.c_attn.bias", False),
    ("blocks.{i}.attn.out_proj.weight", "h.{i}.attn.c_proj.weight", True),
    ("blocks.{i}.attn.out_proj.bias", "h.{i}.attn.c_proj.bias", False),
    ("blocks.{i}.norm2.weight", "h.{i}.ln_2.weight", False),
    ("blocks.{i}.norm2.bias", "h.{i}.ln_2.bias", False),
    ("blocks.{i}.ff.fc1.weight", "h.{i}.mlp.c_fc.weight", True),
    ("blocks.{i}.ff.fc1.bias", "h.{i}.mlp.c_fc.bias", False),
    ("blocks.{i}.ff.fc2.weight", "h.{i}.mlp.c_proj.weight", True),
    ("blocks.{i}.ff.fc2.bias", "h.{i}.mlp.c_proj.bias", False),
    ("final_norm.weight", "ln_f.weight", False),
    ("final_norm.bias", "ln_f.bias", False),
    ("out_head.weight", "lm_head.weight", False),
]
# Buffers some GPT-2 files carry (OpenAI's original upload): the causal mask, not weights.
_HF_IGNORED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")


def config_from_hf(hf: dict) -> GPTConfig:
    """Translate a Hugging Face GPT-2 ``config.json`` into a ``GPTConfig``."""
    unsupported = {
        "activation_function": ("gelu_new", hf.get("activation_function", "gelu_new")),
        "scale_attn_weights": (True, hf.get("scale_attn_weights", True)),
        "scale_attn_by_inverse_layer_idx": (False, hf.get("scale_attn_by_inverse_layer_idx", False)),
        "reorder_and_upcast_attn": (False, hf.get("reorder_and_upcast_attn", False)),
        "add_cross_attention": (False, hf.get("add_cross_attention", False)),
    }
    for key, (expected, got) in unsupported.items():
        if got != expected:
            raise ValueError(f"config.json has {key}={got!r}; llmcourse's GPT supports only {expected!r}")
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            context_length=hf.get("n_positions", hf.get("n_ctx")),
            emb_dim=hf["n_embd"],
            n_heads=hf["n_head"],
            n_layers=hf["n_layer"],
            drop_rate=hf.get("resid_pdrop", 0.1),
            qkv_bias=True,
            ff_dim=hf.get("n_inner"),
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            tie_embeddings=hf.get("tie_word_embeddings", True),
        )
    except KeyError as e:
        raise ValueError(f"config.json lacks the GPT-2 field {e.args[0]!r}") from None


def _read_hf_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``save_pretrained`` folder: one safetensors file, a sharded
    safetensors index, or (older uploads) ``pytorch_model.bin`` read with weights_only."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.exists():
        files = [single]
    elif index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / s for s in shards]
    elif (folder / "pytorch_model.bin").exists():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(
            f"{folder} holds no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
        )
    state = {}
    for f in files:
        try:
            state.update(safetensors_load(f.read_bytes()))
        except SafetensorError as e:
            raise ValueError(f"{f} is not a valid safetensors file: {e}") from None
    return state


def load_hf_gpt2(path: str | os.PathLike, device: str | torch.device | None = "auto") -> GPT:
    """Load a Hugging Face GPT-2 checkpoint (a ``save_pretrained`` folder with
    ``config.json`` and ``model.safetensors``, e.g. a download of "openai-community/gpt2")
    into our ``GPT``. Its logits equal ``transformers.GPT2LMHeadModel``'s.

    Missing, unexpected or mis-shaped tensors raise a ValueError naming them.
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"expected a Hugging Face model folder with config.json, got {folder}")
    config = config_from_hf(json.loads((folder / "config.json").read_text()))
    hf_state = {k.removeprefix("transformer."): v for k, v in _read_hf_state_dict(folder).items()}

    model = GPT(config)
    ours = model.state_dict()
    new_state, missing, bad_shape, used = {}, [], [], set()
    for our_pattern, hf_pattern, transpose in HF_GPT2_NAMES:
        layers = range(config.n_layers) if "{i}" in our_pattern else [None]
        for i in layers:
            our_name, hf_name = our_pattern.format(i=i), hf_pattern.format(i=i)
            if our_name == "out_head.weight" and config.tie_embeddings:
                used.add(hf_name)  # tied: the head is the token embedding
                continue
            if hf_name not in hf_state:
                missing.append(hf_name)
                continue
            tensor = hf_state[hf_name].t() if transpose else hf_state[hf_name]
            if tensor.shape != ours[our_name].shape:
                bad_shape.append(f"{hf_name}: expected {tuple(ours[our_name].shape)}"
                                 f"{' (transposed)' if transpose else ''}, got {tuple(hf_state[hf_name].shape)}")
            new_state[our_name] = tensor
            used.add(hf_name)
    unexpected = sorted(k for k in hf_state if k not in used and not _HF_IGNORED.search(k))
    _raise_on_mismatch(folder, missing, unexpected, bad_shape)
    if config.tie_embeddings:
        new_state["out_head.weight"] = new_state["tok_emb.weight"]
    model.load_state_dict(new_state)
    return model.to(resolve_device(device)).eval()


def _raise_on_mismatch(where, missing, unexpected, bad_shape) -> None:
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    if bad_shape:
        problems.append(f"wrong shapes: {'; '.join(bad_shape)}")
    if problems:
        raise ValueError(f"{where} does not match the model's configuration: " + " | ".join(problems))


def save_model(model: GPT, folder: str | os.PathLike) -> Path:
    """Save a model as ``config.json`` + ``model.safetensors`` in ``folder``.

    A tied output head is stored once (as the token embedding). The config is
    embedded in the safetensors metadata too, so a weights file is never paired
    with another model's config.
    """
    folder = Path(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        del state["out_head.weight"]
    config_json = json.dumps(model.config.to_dict(), indent=2)
    atomic_write_bytes(folder / "model.safetensors",
                       safetensors_save(state, metadata={"llmcourse_config": config_json}))
    atomic_write_bytes(folder / "config.json", config_json.encode())
    return folder


def load_model(folder: str | os.PathLike, device: str | torch.device | None = "auto") -> GPT:
    """Load a model saved with ``save_model``. A corrupt file or a config that
    does not match the weights raises a ValueError saying so."""
    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"no model.safetensors in {folder}; expected a folder written by save_model")
    try:
        with safe_open(weights, "pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{weights} is not a valid safetensors file (truncated or corrupt?): {e}") from None
    config = GPTConfig.from_dict(json.loads((folder / "config.json").read_text()))
    if "llmcourse_config" in metadata and json.loads(metadata["llmcourse_config"]) != config.to_dict():
        raise ValueError(f"{folder}/config.json does not match the config the weights were saved with")
    model = GPT(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if config.tie_embeddings:
        del expected["out_head.weight"]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [f"{k}: expected {tuple(expected[k])}, got {tuple(state[k].shape)}"
                 for k in sorted(set(expected) & set(state)) if state[k].shape != expected[k]]
    _raise_on_mismatch(folder, missing, unexpected, bad_shape)
    if config.tie_embeddings:
        state["out_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval()


def load_gpt(folder: str | os.PathLike, device: str | torch.device | None = "auto") -> GPT:
    """Load either kind of model folder: one written by ``save_model`` (or a training
    checkpoint) or a Hugging Face GPT-2 ``save_pretrained`` folder, told apart by
    their ``config.json``."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"expected a model folder with config.json, got {folder}")
    if "n_embd" in json.loads(config_path.read_text()):  # Hugging Face's GPT-2 field names
        return load_hf_gpt2(folder, device)
    return load_model(folder, device)
