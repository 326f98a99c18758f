"""LoRA, low-rank adaptation (Hu et al., 2021; chapter 5).

Full fine-tuning updates every weight W (out x in). LoRA freezes W and learns the
update as a product of two thin matrices, B (out x r) and A (r x in), with a rank r
much smaller than in and out:

    y = W x + (alpha / r) * B (A x)

For GPT-2 small's attention projection (768 x 768) at r = 8 that is 12,288
trainable numbers instead of 589,824. B starts at zero, so the wrapped model starts
out computing exactly what the pretrained one did; after training, B A can be added
into W (``merge_lora``), and the model is as fast as before.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .config import check_int

LORA_TARGETS = ("attn.qkv", "attn.out_proj", "ff.fc1", "ff.fc2")  # every Linear inside a block


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update.

    ``lora_A`` (rank, in) starts Kaiming-uniform, as nn.Linear's own weights do;
    ``lora_B`` (out, rank) starts at zero, so at first the output is the Linear's.
    Input (..., in) -> output (..., out).
    """

    def __init__(self, linear: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(linear).__name__}")
        check_int("rank", rank)
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        self.linear = linear
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank  # keeps the update's size steady when the rank changes
        factory = {"device": linear.weight.device, "dtype": linear.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, linear.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(linear.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (x @ self.lora_A.T) @ self.lora_B.T  # (..., in) -> (..., rank) -> (..., out)
        return self.linear(x) + self.scaling * update

    def merged(self) -> nn.Linear:
        """The wrapped Linear with ``scaling * B A`` added into its weight (out, in)."""
        with torch.no_grad():
            self.linear.weight += self.scaling * (self.lora_B @ self.lora_A)
        return self.linear


def count_trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts; a shared (tied) tensor counts once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16,
               targets: Sequence[str] = LORA_TARGETS) -> nn.Module:
    """Freeze the model and wrap the ``targets`` Linear layers of every
    transformer block in a ``LoRALinear``; afterwards only the LoRA matrices train.

    ``targets`` are paths inside a block, e.g. "attn.qkv". Returns the model (changed
    in place); ``count_trainable_parameters`` then gives rank * (in + out) per wrapped layer.
    """
    if not hasattr(model, "blocks"):
        raise TypeError(f"apply_lora expects a GPT with .blocks, got {type(model).__name__}")
    model.requires_grad_(False)
    for block in model.blocks:
        for target in targets:
            parent_name, _, name = target.rpartition(".")
            try:
                parent = block.get_submodule(parent_name)
                layer = getattr(parent, name)
            except AttributeError:
                raise ValueError(f"no layer {target!r} in a transformer block; choose from {LORA_TARGETS}") from None
            if isinstance(layer, LoRALinear):
                raise ValueError(f"{target!r} already has LoRA: merge_lora first, or apply it once")
            setattr(parent, name, LoRALinear(layer, rank, alpha))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its Linear (W <- W + (alpha / r) B A) and
    put the plain ``nn.Linear`` back, so the model has its original structure and
    can be saved with ``save_model``. The merged weights keep their requires_grad (False)."""
    wrapped = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merged())
    return model
