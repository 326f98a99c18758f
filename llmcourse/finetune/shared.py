"""What classification and instruction fine-tuning share (chapter 5).

The padding id, a seeded train/val/test split, and one small training loop
(``finetune``) that takes the loss as an argument, with its evaluation.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..config import check_int
from ..model import eval_mode
from ..tokenizer import GPT2_ENDOFTEXT_ID

PAD_ID = GPT2_ENDOFTEXT_ID  # GPT-2 has no padding token: its <|endoftext|> doubles as one

LossFn = Callable[[nn.Module, Sequence[torch.Tensor]], torch.Tensor]


def seeded_split(items: Sequence, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 123) -> dict[str, list]:
    """Shuffle ``items`` with a seeded generator and cut them into train/val/test.

    The train part gets ``int(n * fractions[0])`` items, val ``int(n * fractions[1])``,
    test the rest; the same seed always gives the same split.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test) summing to 1, got {fractions!r}")
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [items[i] for i in order]
    n_train, n_val = int(len(items) * fractions[0]), int(len(items) * fractions[1])
    return {
        "train": shuffled[:n_train],
        "val": shuffled[n_train:n_train + n_val],
        "test": shuffled[n_train + n_val:],
    }


@torch.no_grad()
def evaluate_loss(model: nn.Module, loader, loss_fn: LossFn, max_batches: int | None = None) -> float:
    """The mean of ``loss_fn`` over the batches of ``loader`` (or its first
    ``max_batches``), in eval mode (no dropout) and without gradients."""
    losses = []
    with eval_mode(model):
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            losses.append(loss_fn(model, batch).item())
    if not losses:
        raise ValueError("evaluate_loss got an empty loader")
    return sum(losses) / len(losses)


def finetune(
    model: nn.Module,
    train_loader,
    loss_fn: LossFn,
    epochs: int = 1,
    lr: float = 5e-5,
    weight_decay: float = 0.1,
    val_loader=None,
    max_steps: int | None = None,
    log: Callable[[dict], None] | None = None,
) -> list[dict]:
    """The fine-tuning loop, shared by classification and instruction tuning.

    AdamW updates only the parameters that require gradients, so a model frozen by
    ``classifier.freeze_for_finetuning`` or wrapped by ``lora.apply_lora`` trains just its
    trainable part. ``loss_fn(model, batch)`` returns the batch's scalar loss.
    Stops after ``epochs`` passes or ``max_steps`` updates, whichever comes first.
    Returns one record per epoch: ``{"epoch", "steps", "train_loss"[, "val_loss"]}``
    (train_loss is the mean over that epoch's batches); ``log`` gets each record too.
    """
    check_int("epochs", epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: every parameter has requires_grad=False")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    history, step = [], 0
    for epoch in range(1, epochs + 1):
        model.train()
        total, batches = 0.0, 0
        for batch in train_loader:
            loss = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches, step = total + loss.item(), batches + 1, step + 1
            if max_steps is not None and step >= max_steps:
                break
        record = {"epoch": epoch, "steps": step, "train_loss": total / max(batches, 1)}
        if val_loader is not None:
            record["val_loss"] = evaluate_loss(model, val_loader, loss_fn)
        history.append(record)
        if log is not None:
            log(record)
        if max_steps is not None and step >= max_steps:
            break
    return history
