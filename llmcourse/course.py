"""The course model: one small GPT that really learns, with the course's own tokenizer
(chapters 2-5).

Most of GPT-2 small's parameters would sit in its 50,257-row embedding table, and a
model that small learns almost nothing from a short story. The course model is sized for
a laptop CPU instead:

* ``course_tokenizer``: a ``BPETokenizer`` with ``VOCAB_SIZE`` ids, trained (chapter 2)
  on the training part of tinyshakespeare only, so the validation text is new to it too.
* ``COURSE_MODEL`` and ``course_train_config``: the GPT and the run that pretrains it on
  tinyshakespeare (chapter 4) in a few minutes on two CPU cores.
* ``course_model``: the trained model, from the cache (``<llmcourse cache>/course``) or
  trained (and resumed, if a run was interrupted) when it is not there yet.
* ``nats_per_char``, ``unigram_nats_per_char``, ``bigram_nats_per_char``: the model's
  validation loss in nats per character, a unit that does not depend on the tokenizer,
  and the two simplest models of the same tokens to compare it with.

``llmcourse train --preset shakespeare`` runs the same training from the command line.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .checkpoints import recover_checkpoint
from .config import GPTConfig
from .files import cache_dir, read_text
from .model import GPT, eval_mode
from .tokenizer import BPETokenizer
from .train import TrainConfig, TrainResult, load_token_ids, split_train_val, train
from .weights import load_gpt

DATA = "tinyshakespeare.txt"
VOCAB_SIZE = 1024  # 256 bytes, 767 merges and <|endoftext|>
TOKENIZER_TEXT = 0.85  # the tokenizer learns from the first 85% of the characters: all inside the training split

COURSE_MODEL = GPTConfig(vocab_size=VOCAB_SIZE, context_length=128, emb_dim=192, n_heads=4, n_layers=4,
                         drop_rate=0.0, qkv_bias=False)


def course_folder() -> Path:
    return cache_dir() / "course"


def course_tokenizer_file() -> Path:
    """The course tokenizer's file, trained and saved on first use (a few seconds)."""
    text = read_text(DATA)
    key = hashlib.sha256(f"{VOCAB_SIZE} {TOKENIZER_TEXT}".encode() + text.encode()).hexdigest()[:16]
    path = course_folder() / f"tokenizer-{VOCAB_SIZE}-{key}.json"
    if not path.is_file():
        BPETokenizer.train(text[:int(len(text) * TOKENIZER_TEXT)], VOCAB_SIZE).save(path)
    return path


def course_tokenizer() -> BPETokenizer:
    """The course's ``BPETokenizer``: ``VOCAB_SIZE`` ids learned from Shakespeare."""
    return BPETokenizer.load(course_tokenizer_file())


def course_train_config(**overrides) -> TrainConfig:
    """The pretraining run of the course model; ``overrides`` change any field."""
    config = TrainConfig(
        batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=50, max_steps=800, weight_decay=0.1,
        eval_interval=200, eval_steps=20, sample_prompt="ROMEO:\n", sample_tokens=40,
        tokenizer=str(course_tokenizer_file()), device="cpu", progress=False,
    )
    return replace(config, **overrides)


def _run_folder(model_config: GPTConfig, config: TrainConfig) -> Path:
    """One folder per (model, run) pair, so a changed setting trains a new model."""
    settings = {"model": asdict(model_config), "train": {**asdict(config), "out_dir": None, "progress": None}}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return course_folder() / f"shakespeare-{key}"


def _trainer_state(folder: Path) -> dict | None:
    state = folder / "trainer_state.json"
    return json.loads(state.read_text()) if state.is_file() else None


def course_model(model_config: GPTConfig = COURSE_MODEL, config: TrainConfig | None = None,
                 progress: bool = False) -> tuple[GPT, dict]:
    """The trained course model (eval mode) and its training history.

    Loaded from the cache when this exact model and run finished before; otherwise
    trained, continuing from the last checkpoint if an earlier run was interrupted.
    """
    config = config or course_train_config()
    folder = _run_folder(model_config, config)
    config = replace(config, out_dir=str(folder), progress=progress)
    recover_checkpoint(folder)
    state = _trainer_state(folder)
    if state is None or state["step"] < config.max_steps:
        result: TrainResult = train(model_config, config, [DATA], resume=state is not None)
        return result.model, result.history
    return load_gpt(folder, device=config.device).eval(), state["history"]


# --- measuring what it learned ----------------------------------------------------


def course_splits(config: TrainConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train ids, validation ids) of tinyshakespeare, split as training splits them."""
    config = config or course_train_config()
    ids = load_token_ids([DATA], config.token_cache_dir, config.tokenizer)
    return split_train_val(ids, config.val_fraction)


def chars_of(tokenizer: BPETokenizer, ids: torch.Tensor) -> int:
    """How many characters of text the token ids stand for."""
    return len(tokenizer.decode(ids.tolist()))


@torch.no_grad()
def nats_per_char(model: GPT, tokenizer: BPETokenizer, ids: torch.Tensor, batch_size: int = 16) -> float:
    """The model's loss on the tokens of ``ids``, in nats per character: ids are cut into
    windows of the context length, each token is predicted from the tokens before it in
    its window, and the summed loss is divided by the characters the predicted tokens
    stand for (a unit that does not depend on how the text was tokenized)."""
    T = model.config.context_length
    n = (len(ids) - 1) // T
    x = ids[: n * T].long().view(n, T)
    y = ids[1: n * T + 1].long().view(n, T)
    total = 0.0
    with eval_mode(model):
        for i in range(0, n, batch_size):
            logits = model(x[i: i + batch_size].to(model.device))
            total += torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), y[i: i + batch_size].flatten().to(model.device), reduction="sum").item()
    return total / chars_of(tokenizer, y.flatten())


def unigram_probabilities(tokenizer: BPETokenizer, train_ids: torch.Tensor) -> torch.Tensor:
    """P(token), (n_vocab,): each token's frequency in the training split, add-one smoothed
    so that a token never seen in training keeps some probability."""
    counts = torch.bincount(train_ids.long(), minlength=tokenizer.n_vocab).double() + 1
    return counts / counts.sum()


def unigram_nats_per_char(tokenizer: BPETokenizer, train_ids: torch.Tensor, val_ids: torch.Tensor) -> float:
    """The validation loss of the best model that ignores context (``unigram_probabilities``),
    in nats per character."""
    log_p = torch.log(unigram_probabilities(tokenizer, train_ids))
    return -log_p[val_ids.long()[1:]].sum().item() / chars_of(tokenizer, val_ids[1:])


def bigram_nats_per_char(tokenizer: BPETokenizer, train_ids: torch.Tensor, val_ids: torch.Tensor,
                         weight: float = 0.7) -> float:
    """The validation loss of a model that looks one token back: P(next | previous) counted
    on the training split, mixed with ``unigram_probabilities`` (``weight`` on the bigram)
    so that pairs never seen in training keep some probability, in nats per character."""
    train = train_ids.tolist()
    pairs = Counter(zip(train, train[1:]))
    previous = Counter(train)
    p_unigram = unigram_probabilities(tokenizer, train_ids).tolist()
    total = 0.0
    val = val_ids.tolist()
    for prev, nxt in zip(val, val[1:]):
        p_bigram = pairs[(prev, nxt)] / previous[prev] if previous[prev] else 0.0
        total -= math.log(weight * p_bigram + (1 - weight) * p_unigram[nxt])
    return total / chars_of(tokenizer, val_ids[1:])
