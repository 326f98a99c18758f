"""A GPT as a text classifier: a new output head, freezing, and the last-token logits (chapter 5).

The vocabulary-sized output head is replaced by a ``num_classes``-way head, most of
the network is frozen, and the model is trained on the logits of each text's last
real token (``classification_loss``). ``save_classifier`` / ``load_classifier``
keep the head's classes with the weights.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..config import GPTConfig, check_int
from ..files import atomic_write_bytes
from ..model import GPT, eval_mode, resolve_device
from ..weights import save_model
from .shared import PAD_ID
from .spam import SPAM_LABELS


def add_classification_head(model: GPT, num_classes: int = 2) -> GPT:
    """Replace the output head (emb_dim -> vocab_size) by a fresh
    emb_dim -> ``num_classes`` Linear layer; the model then outputs (B, T, num_classes)."""
    check_int("num_classes", num_classes, 2)
    weight = model.tok_emb.weight
    model.out_head = nn.Linear(model.config.emb_dim, num_classes).to(device=weight.device, dtype=weight.dtype)
    # The new head is no longer the token embedding: say so, so save_model stores it.
    model.config = replace(model.config, tie_embeddings=False)
    return model


def freeze_for_finetuning(model: GPT, trainable_blocks: int = 1) -> GPT:
    """Freeze everything except the last ``trainable_blocks`` transformer
    blocks, the final LayerNorm and the output head.

    Early layers of a pretrained model hold general features of language that a
    small labelled set would only disturb; training the top of the network is
    faster and usually as accurate. ``trainable_blocks=0`` trains the head and
    final norm only. Call it after ``add_classification_head``: a head still tied to
    the token embedding would unfreeze the embedding with it.
    """
    n_blocks = len(model.blocks)
    check_int("trainable_blocks", trainable_blocks, 0, n_blocks, note=" (the model's blocks)")
    model.requires_grad_(False)
    for module in [*model.blocks[n_blocks - trainable_blocks:], model.final_norm, model.out_head]:
        module.requires_grad_(True)
    return model


def last_token_logits(model: GPT, input_ids: torch.Tensor, pad_id: int = PAD_ID) -> torch.Tensor:
    """The classifier's output for each text: the logits at its last real token.

    input_ids: (B, T), right-padded with ``pad_id``. Returns (B, num_classes).

    Why the last token: under the causal mask it is the only position that has seen
    the whole text. Why the last *real* token and not position -1 (the book's simpler
    choice): with right padding, position -1 is a pad for every text shorter than T,
    so its output would depend on how much padding the batch happened to add. The
    causal mask keeps the last real token from seeing the pads after it, so its
    logits are the same whether the text is alone or padded in any batch.
    """
    logits = model(input_ids)  # (B, T, num_classes)
    # Padding is only on the right and no real token equals pad_id (see spam.ClassificationDataset).
    last = ((input_ids != pad_id).sum(dim=1) - 1).clamp(min=0)  # (B,)
    return logits[torch.arange(len(input_ids), device=logits.device), last]  # (B, num_classes)


def check_pad_id(model: GPT, pad_id: int) -> None:
    """Raise unless ``pad_id`` is a token id of the model's vocabulary: a pad id of
    another tokenizer (GPT-2's 50256 for a 1,024-token model) would never match."""
    vocab_size = model.tok_emb.num_embeddings
    if not 0 <= pad_id < vocab_size:
        raise ValueError(f"pad_id {pad_id} is not a token of this model's {vocab_size:,}-token vocabulary; "
                         f"pass the pad id the data was padded with (tokenizer.eot_token)")


def classification_loss(model: GPT, batch: Sequence[torch.Tensor], pad_id: int = PAD_ID) -> torch.Tensor:
    """Cross-entropy of the last real token's logits against the labels.
    batch: ``(input_ids (B, T), labels (B,))`` from a ``spam.ClassificationDataset``,
    right-padded with ``pad_id`` (GPT-2's ``<|endoftext|>`` by default)."""
    check_pad_id(model, pad_id)
    input_ids, labels = (t.to(model.device) for t in batch)
    return F.cross_entropy(last_token_logits(model, input_ids, pad_id), labels)


@torch.no_grad()
def classification_accuracy(model: GPT, loader, max_batches: int | None = None, pad_id: int = PAD_ID) -> float:
    """The fraction of texts whose highest logit is their label (batches padded with ``pad_id``)."""
    check_pad_id(model, pad_id)
    correct = total = 0
    with eval_mode(model):
        for i, (input_ids, labels) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            predicted = last_token_logits(model, input_ids.to(model.device), pad_id).argmax(dim=-1)  # (B,)
            correct += int((predicted == labels.to(model.device)).sum())
            total += len(labels)
    if total == 0:
        raise ValueError("classification_accuracy got an empty loader")
    return correct / total


@torch.no_grad()
def classify(model: GPT, tokenizer, text: str, labels: Sequence[str] = SPAM_LABELS,
             max_length: int | None = None) -> str:
    """The label a fine-tuned classifier gives ``text`` ("spam" or "ham" by default).

    The text is cut to ``max_length`` tokens (default and at most: the context length),
    as its training data was.
    """
    if not isinstance(text, str):
        raise TypeError(f"classify expects the text as a str, got {type(text).__name__}")
    if len(labels) != model.out_head.out_features:
        raise ValueError(f"the model has {model.out_head.out_features} classes but {len(labels)} labels were given")
    limit = min(max_length or model.config.context_length, model.config.context_length)
    ids = tokenizer.encode(text)[:limit]
    if not ids:
        raise ValueError("classify got an empty text")
    with eval_mode(model):
        logits = last_token_logits(model, torch.tensor([ids], device=model.device), tokenizer.eot_token)
    return labels[int(logits.argmax(dim=-1))]


def save_classifier(model: GPT, folder: str | os.PathLike, labels: Sequence[str] = SPAM_LABELS,
                    max_length: int | None = None) -> Path:
    """Save a classifier with ``save_model``, plus ``classifier.json`` naming its
    classes (and the text length it was trained on), which ``load_classifier`` needs to
    rebuild the head."""
    if len(labels) != model.out_head.out_features:
        raise ValueError(f"the model has {model.out_head.out_features} classes but {len(labels)} labels were given")
    folder = save_model(model, folder)
    info = {"num_classes": len(labels), "labels": list(labels), "max_length": max_length}
    atomic_write_bytes(folder / "classifier.json", json.dumps(info, indent=2).encode())
    return folder


def load_classifier(folder: str | os.PathLike, device: str | torch.device | None = "auto") -> tuple[GPT, dict]:
    """Load a classifier written by ``save_classifier``.

    Returns ``(model, info)``; ``info`` has "num_classes", "labels" and "max_length".
    """
    folder = Path(folder)
    if not (folder / "classifier.json").is_file():
        raise FileNotFoundError(f"no classifier.json in {folder}; expected a folder written by save_classifier")
    info = json.loads((folder / "classifier.json").read_text())
    config = GPTConfig.from_dict(json.loads((folder / "config.json").read_text()))
    model = add_classification_head(GPT(config), info["num_classes"])
    try:
        model.load_state_dict(load_file(folder / "model.safetensors"))
    except (SafetensorError, RuntimeError) as e:  # corrupt file / names or shapes that do not match
        raise ValueError(f"{folder} does not hold a valid classifier of its config.json: {e}") from None
    return model.to(resolve_device(device)).eval(), info
