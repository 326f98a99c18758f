"""The size of a GPT model: ``GPTConfig``, its named presets, and the argument checks.

Chapters 1 and 4 use it. The bottom layer of the package: it imports nothing from the
rest of ``llmcourse``, and every module that builds or describes a model takes a
``GPTConfig`` from here.

* ``check_int``: the one check of integer arguments (sizes, counts, ranks) that every
  public function and config uses, so the messages read alike.
* ``GPTConfig``: every size of a GPT model in one frozen dataclass.
* ``PRESETS``: GPT-2's four published sizes; ``TINY``: a model small enough to train
  on a laptop CPU in minutes.
* ``model_config_from``: a preset by name, or a JSON file of ``GPTConfig`` fields.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path


def check_int(name: str, value, minimum: int = 1, maximum: int | None = None, note: str = "") -> int:
    """Return ``value`` if it is an int (not a bool) from ``minimum`` to ``maximum``
    (no upper bound when None); otherwise raise a ValueError naming ``name``.
    ``note`` is added after the bound, e.g. " or None"."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ValueError(f"{name} must be an int {bound}{note}, got {value!r}")
    return value


def config_from_dict(cls, d: dict):
    """Build the config dataclass ``cls`` from a dict read from a file, naming unknown fields."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; expected some of {sorted(known)}")
    return cls(**d)


@dataclass(frozen=True)
class GPTConfig:
    """Every size of a GPT model in one place.

    The defaults are GPT-2 small (124M parameters). ``context_length`` is the longest
    sequence the model reads (one position embedding per token). ``ff_dim`` defaults
    to 4 * emb_dim, as in GPT-2 and the 2017 transformer.
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = True
    ff_dim: int | None = None
    layer_norm_eps: float = 1e-5
    tie_embeddings: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            check_int(f"GPTConfig.{name}", getattr(self, name))
        if self.emb_dim % self.n_heads:
            raise ValueError(
                f"GPTConfig.emb_dim ({self.emb_dim}) must be divisible by n_heads "
                f"({self.n_heads}): each head gets emb_dim // n_heads channels"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"GPTConfig.drop_rate must be in [0, 1), got {self.drop_rate!r}")
        if self.ff_dim is None:
            object.__setattr__(self, "ff_dim", 4 * self.emb_dim)
        else:
            check_int("GPTConfig.ff_dim", self.ff_dim)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GPTConfig:
        """A GPT-2 size by name (see ``PRESETS``), optionally changed, e.g. ``context_length=256``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        """Rebuild a config saved with ``to_dict``; unknown fields are an error."""
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "gpt2-small": GPTConfig(emb_dim=768, n_layers=12, n_heads=12),  # 124M
    "gpt2-medium": GPTConfig(emb_dim=1024, n_layers=24, n_heads=16),  # 355M
    "gpt2-large": GPTConfig(emb_dim=1280, n_layers=36, n_heads=20),  # 774M
    "gpt2-xl": GPTConfig(emb_dim=1600, n_layers=48, n_heads=25),  # 1558M
}

# A model for quick runs on a laptop CPU (about 7M parameters, most of them the
# 50,257 x 128 token embedding): a few hundred steps take minutes.
TINY = GPTConfig(context_length=128, emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.1)


def model_config_from(name_or_path: str | os.PathLike) -> GPTConfig:
    """A model size by name ("tiny", "gpt2-small", ...) or from a JSON file of
    ``GPTConfig`` fields, e.g. ``{"emb_dim": 256, "n_layers": 6, "n_heads": 8}``
    (fields left out keep GPT-2 small's values)."""
    name = str(name_or_path)
    if name == "tiny":
        return TINY
    if name in PRESETS:
        return PRESETS[name]
    path = Path(name)
    if not path.is_file():
        raise ValueError(
            f"a model config is a preset name ({', '.join(['tiny', *sorted(PRESETS)])}) "
            f"or a JSON file of GPTConfig fields; {name!r} is neither"
        )
    try:
        return GPTConfig.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
