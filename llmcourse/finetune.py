"""Chapter 5: fine-tuning a pretrained GPT, for classification and for instructions.

Pretraining (chapter 4) gives a model that continues text. Fine-tuning adapts it
to one job with a small labelled data set:

* **Classification** (SMS spam): the vocabulary-sized output head is replaced by
  a ``num_classes``-way head, most of the network is frozen, and the model is
  trained on the logits of each message's last real token.
* **Instruction fine-tuning**: instruction/response pairs are written in the
  Alpaca prompt format, padded and masked by a collate function, and trained
  with the same next-token loss as pretraining; responses generated for
  held-out instructions are then scored against the reference answers.

Both share a seeded split (``seeded_split``) and one small training loop
(``finetune``), which takes the loss as an argument.
"""
from __future__ import annotations

import json
import math
import os
import re
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data import read_text
from .generate import generate_text
from .model import IGNORE_INDEX, GPT, GPTConfig, resolve_device
from .weights import atomic_write_bytes, save_model

PAD_ID = 50256  # GPT-2 has no padding token: its <|endoftext|> doubles as one
SPAM_LABELS = ("ham", "spam")  # class 0 and class 1

LossFn = Callable[[nn.Module, Sequence[torch.Tensor]], torch.Tensor]


# --- Shared by both kinds of fine-tuning -------------------------------------------------


def seeded_split(items: Sequence, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 123) -> dict[str, list]:
    """Chapter 5: shuffle ``items`` with a seeded generator and cut them into train/val/test.

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
    """Chapter 5: the mean of ``loss_fn`` over the batches of ``loader`` (or its first
    ``max_batches``), in eval mode (no dropout) and without gradients."""
    was_training = model.training
    model.eval()
    losses = []
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        losses.append(loss_fn(model, batch).item())
    model.train(was_training)
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
    """Chapter 5: the fine-tuning loop, shared by classification and instruction tuning.

    AdamW updates only the parameters that require gradients, so a model frozen by
    ``freeze_for_finetuning`` or wrapped by ``lora.apply_lora`` trains just its
    trainable part. ``loss_fn(model, batch)`` returns the batch's scalar loss.
    Stops after ``epochs`` passes or ``max_steps`` updates, whichever comes first.
    Returns one record per epoch: ``{"epoch", "steps", "train_loss"[, "val_loss"]}``
    (train_loss is the mean over that epoch's batches); ``log`` gets each record too.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
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


# --- Classification fine-tuning: SMS spam ------------------------------------------------


def load_sms_spam() -> list[tuple[str, int]]:
    """Chapter 5: the SMS Spam Collection as ``(message, label)`` pairs, label 0 = ham, 1 = spam."""
    examples = []
    for number, line in enumerate(read_text("SMSSpamCollection").splitlines(), start=1):
        if not line:
            continue
        label, _, message = line.partition("\t")
        if label not in SPAM_LABELS:
            raise ValueError(f"SMSSpamCollection line {number}: expected 'ham' or 'spam' then a tab, got {line[:40]!r}")
        examples.append((message, SPAM_LABELS.index(label)))
    return examples


def balance_classes(examples: Sequence[tuple[str, int]], seed: int = 123) -> list[tuple[str, int]]:
    """Chapter 5: undersample every class to the size of the smallest one.

    SMS spam is 87% ham: a model that always says "ham" would score 87% there. On a
    balanced set, chance is 50%, so accuracy says how much the model learned. The
    kept examples of each class are drawn with a seeded generator, in file order.
    """
    by_class: dict[int, list] = {}
    for example in examples:
        by_class.setdefault(example[1], []).append(example)
    if not by_class:
        raise ValueError("balance_classes got no examples")
    smallest = min(len(group) for group in by_class.values())
    generator = torch.Generator().manual_seed(seed)
    balanced = []
    for label in sorted(by_class):
        keep = torch.randperm(len(by_class[label]), generator=generator)[:smallest].sort().values
        balanced.extend(by_class[label][i] for i in keep.tolist())
    return balanced


def spam_splits(seed: int = 123, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> dict[str, list[tuple[str, int]]]:
    """Chapter 5: the balanced SMS spam data (747 ham, 747 spam) split 70/10/20 into
    train (1,045), val (149) and test (300) ``(message, label)`` lists."""
    return seeded_split(balance_classes(load_sms_spam(), seed), fractions, seed)


class ClassificationDataset(Dataset):
    """Chapter 5: labelled texts as fixed-length token ids, right-padded with ``pad_id``.

    Every text is cut or padded to ``max_length`` tokens (default: the longest text),
    so batches stack without a collate function. Build the val and test sets with the
    train set's ``max_length``. Items are ``(input_ids (max_length,), label ())``.
    ``tokenizer.encode`` must never produce ``pad_id`` for ordinary text (GPT-2's
    ``<|endoftext|>`` is special: tiktoken refuses it inside a text), which is what
    lets ``last_token_logits`` find where the padding starts.
    """

    def __init__(self, examples: Sequence[tuple[str, int]], tokenizer, max_length: int | None = None,
                 pad_id: int = PAD_ID):
        if not examples:
            raise ValueError("ClassificationDataset needs at least one (text, label) example")
        encoded = [tokenizer.encode(text) for text, _ in examples]
        if any(not ids for ids in encoded):
            raise ValueError("ClassificationDataset got an empty text: it has no token to classify")
        if max_length is None:
            max_length = max(len(ids) for ids in encoded)
        elif max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.max_length = max_length
        self.input_ids = torch.tensor(
            [ids[:max_length] + [pad_id] * (max_length - len(ids[:max_length])) for ids in encoded]
        )  # (N, max_length)
        self.labels = torch.tensor([label for _, label in examples])  # (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_ids[index], self.labels[index]


def spam_dataloaders(tokenizer, batch_size: int = 8, max_length: int | None = None, context_length: int = 1024,
                     seed: int = 123, max_train_examples: int | None = None) -> dict[str, DataLoader]:
    """Chapter 5: train/val/test loaders over ``spam_splits``, all padded to one length.

    That length is ``max_length`` (default: the longest training message), at most the
    model's ``context_length``. The train loader reshuffles (seeded) every epoch and
    drops its last incomplete batch, so no update rests on a handful of messages.
    ``max_train_examples`` keeps only the first training examples (quick runs).
    """
    splits = spam_splits(seed)
    if max_train_examples is not None:
        splits["train"] = splits["train"][:max_train_examples]
    if max_length is None:
        max_length = max(len(tokenizer.encode(text)) for text, _ in splits["train"])
    max_length = min(max_length, context_length)
    return {
        name: DataLoader(
            ClassificationDataset(examples, tokenizer, max_length),
            batch_size=batch_size,
            shuffle=name == "train",
            drop_last=name == "train" and len(examples) >= batch_size,
            generator=torch.Generator().manual_seed(seed),
        )
        for name, examples in splits.items()
    }


def add_classification_head(model: GPT, num_classes: int = 2) -> GPT:
    """Chapter 5: replace the output head (emb_dim -> vocab_size) by a fresh
    emb_dim -> ``num_classes`` Linear layer; the model then outputs (B, T, num_classes)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    weight = model.tok_emb.weight
    model.out_head = nn.Linear(model.config.emb_dim, num_classes).to(device=weight.device, dtype=weight.dtype)
    # The new head is no longer the token embedding: say so, so save_model stores it.
    model.config = replace(model.config, tie_embeddings=False)
    return model


def freeze_for_finetuning(model: GPT, trainable_blocks: int = 1) -> GPT:
    """Chapter 5: freeze everything except the last ``trainable_blocks`` transformer
    blocks, the final LayerNorm and the output head.

    Early layers of a pretrained model hold general features of language that a
    small labelled set would only disturb; training the top of the network is
    faster and usually as accurate. ``trainable_blocks=0`` trains the head and
    final norm only. Call it after ``add_classification_head``: a head still tied to
    the token embedding would unfreeze the embedding with it.
    """
    n_blocks = len(model.blocks)
    if isinstance(trainable_blocks, bool) or not isinstance(trainable_blocks, int) or not 0 <= trainable_blocks <= n_blocks:
        raise ValueError(f"trainable_blocks must be an int from 0 to {n_blocks} (the model's blocks), got {trainable_blocks!r}")
    model.requires_grad_(False)
    for module in [*model.blocks[n_blocks - trainable_blocks:], model.final_norm, model.out_head]:
        module.requires_grad_(True)
    return model


def last_token_logits(model: GPT, input_ids: torch.Tensor, pad_id: int = PAD_ID) -> torch.Tensor:
    """Chapter 5: the classifier's output for each text: the logits at its last real token.

    input_ids: (B, T), right-padded with ``pad_id``. Returns (B, num_classes).

    Why the last token: under the causal mask it is the only position that has seen
    the whole text. Why the last *real* token and not position -1 (the book's simpler
    choice): with right padding, position -1 is a pad for every text shorter than T,
    so its output would depend on how much padding the batch happened to add. The
    causal mask keeps the last real token from seeing the pads after it, so its
    logits are the same whether the text is alone or padded in any batch.
    """
    logits = model(input_ids)  # (B, T, num_classes)
    # Padding is only on the right and no real token equals pad_id (see ClassificationDataset).
    last = ((input_ids != pad_id).sum(dim=1) - 1).clamp(min=0)  # (B,)
    return logits[torch.arange(len(input_ids), device=logits.device), last]  # (B, num_classes)


def classification_loss(model: GPT, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chapter 5: cross-entropy of the last real token's logits against the labels.
    batch: ``(input_ids (B, T), labels (B,))`` from a ``ClassificationDataset``."""
    input_ids, labels = (t.to(model.device) for t in batch)
    return F.cross_entropy(last_token_logits(model, input_ids), labels)


@torch.no_grad()
def classification_accuracy(model: GPT, loader, max_batches: int | None = None) -> float:
    """Chapter 5: the fraction of texts whose highest logit is their label."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for i, (input_ids, labels) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        predicted = last_token_logits(model, input_ids.to(model.device)).argmax(dim=-1)  # (B,)
        correct += int((predicted == labels.to(model.device)).sum())
        total += len(labels)
    model.train(was_training)
    if total == 0:
        raise ValueError("classification_accuracy got an empty loader")
    return correct / total


@torch.no_grad()
def classify(model: GPT, tokenizer, text: str, labels: Sequence[str] = SPAM_LABELS,
             max_length: int | None = None) -> str:
    """Chapter 5: the label a fine-tuned classifier gives ``text`` ("spam" or "ham" by default).

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
    was_training = model.training
    model.eval()
    logits = last_token_logits(model, torch.tensor([ids], device=model.device))  # (1, num_classes)
    model.train(was_training)
    return labels[int(logits.argmax(dim=-1))]


def save_classifier(model: GPT, folder: str | os.PathLike, labels: Sequence[str] = SPAM_LABELS,
                    max_length: int | None = None) -> Path:
    """Chapter 5: save a classifier with ``save_model``, plus ``classifier.json`` naming its
    classes (and the text length it was trained on), which ``load_classifier`` needs to
    rebuild the head."""
    if len(labels) != model.out_head.out_features:
        raise ValueError(f"the model has {model.out_head.out_features} classes but {len(labels)} labels were given")
    folder = save_model(model, folder)
    info = {"num_classes": len(labels), "labels": list(labels), "max_length": max_length}
    atomic_write_bytes(folder / "classifier.json", json.dumps(info, indent=2).encode())
    return folder


def load_classifier(folder: str | os.PathLike, device: str | torch.device | None = "auto") -> tuple[GPT, dict]:
    """Chapter 5: load a classifier written by ``save_classifier``.

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


# --- Instruction fine-tuning -------------------------------------------------------------

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


def _check_entry(entry, need_output: bool) -> None:
    if not isinstance(entry, Mapping):
        raise TypeError(f"expected an instruction record (a dict), got {type(entry).__name__}")
    for key in ("instruction", "output") if need_output else ("instruction",):
        if not isinstance(entry.get(key), str):
            raise ValueError(f"an instruction record needs a str {key!r}, got {entry.get(key)!r}")
    if not isinstance(entry.get("input", ""), str):  # "input" may be left out
        raise ValueError(f"an instruction record's 'input' must be a str, got {entry['input']!r}")


def format_prompt(entry: Mapping) -> str:
    """Chapter 5: the Alpaca-style prompt for an instruction record, up to and including
    the response header: what the model sees before it answers.

    The "### Input:" section appears only when the record's input is not empty.
    """
    _check_entry(entry, need_output=False)
    text = f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{entry['instruction']}"
    if entry.get("input"):
        text += f"\n\n### Input:\n{entry['input']}"
    return text + "\n\n### Response:\n"


def format_instruction(entry: Mapping) -> str:
    """Chapter 5: a whole training text in the Alpaca format: the prompt, then the output."""
    _check_entry(entry, need_output=True)
    return format_prompt(entry) + entry["output"]


def load_instruction_data() -> list[dict]:
    """Chapter 5: the 1,100 instruction/input/output records of ``instruction-data.json``."""
    return json.loads(read_text("instruction-data.json"))


def instruction_splits(seed: int = 123, fractions: Sequence[float] = (0.85, 0.05, 0.10)) -> dict[str, list[dict]]:
    """Chapter 5: the instruction records split 85/5/10: train (935), val (55), test (110)."""
    return seeded_split(load_instruction_data(), fractions, seed)


class InstructionDataset(Dataset):
    """Chapter 5: instruction records as token ids, ready for ``instruction_collate``.

    Items are ``(token_ids, prompt_length)``: the ids of ``format_instruction(entry)``
    and how many of them belong to the prompt, which prompt masking needs. Prompt and
    output are encoded separately and joined, so that count is exact (BPE could
    otherwise merge across the boundary).
    """

    def __init__(self, records: Sequence[Mapping], tokenizer):
        self.items = []
        for entry in records:
            _check_entry(entry, need_output=True)
            prompt = tokenizer.encode(format_prompt(entry))
            self.items.append((prompt + tokenizer.encode(entry["output"]), len(prompt)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.items[index]


def instruction_collate(
    batch: Sequence[tuple[Sequence[int], int]],
    pad_id: int = PAD_ID,
    ignore_index: int = IGNORE_INDEX,
    allowed_max_length: int | None = None,
    mask_prompt: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chapter 5: pad a batch of instruction examples and build its next-token targets.

    batch: ``(token_ids, prompt_length)`` pairs, as ``InstructionDataset`` yields.
    Each sequence gets one end-of-text token (``pad_id``: GPT-2's ``<|endoftext|>``)
    and is right-padded with ``pad_id`` to the batch's longest sequence + 1; then
    inputs = seq[:-1] and targets = seq[1:]. In the targets, every padding position
    becomes ``ignore_index`` except the first end-of-text token: the model must learn
    to emit it, or it would never stop answering. With ``mask_prompt``, the targets
    inside the prompt are ``ignore_index`` too, so only the response is learned.
    Sequences are cut to ``allowed_max_length`` (the model's context length).

    Returns ``(inputs, targets)``, LongTensors of shape (B, T) with T = the longest
    token_ids, at most allowed_max_length. With pad 0, ``[(1, 2, 3), 1]`` and ``[(4,), 1]``:
    inputs ``[[1, 2, 3], [4, 0, 0]]``, targets ``[[2, 3, 0], [0, -100, -100]]``.
    """
    if not batch:
        raise ValueError("instruction_collate got an empty batch")
    for ids, prompt_length in batch:
        if len(ids) == 0 or not 0 <= prompt_length <= len(ids):
            raise ValueError(
                f"each item must be (token_ids, prompt_length) with 1+ ids and 0 <= prompt_length <= "
                f"len(token_ids); got {len(ids)} ids and prompt_length {prompt_length!r}"
            )
    T = max(len(ids) for ids, _ in batch)
    inputs = torch.full((len(batch), T), pad_id, dtype=torch.long)  # (B, T)
    targets = torch.full((len(batch), T), ignore_index, dtype=torch.long)  # (B, T)
    for row, (ids, prompt_length) in enumerate(batch):
        n = len(ids)
        ids = torch.as_tensor(ids, dtype=torch.long)
        inputs[row, :n] = ids
        targets[row, :n - 1] = ids[1:]
        targets[row, n - 1] = pad_id  # the one end-of-text token the model learns to predict
        if mask_prompt:
            # targets[t] is token t + 1: the prompt's tokens 1..P-1 sit at t = 0..P-2.
            targets[row, :max(prompt_length - 1, 0)] = ignore_index
    if allowed_max_length is not None:
        inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]
    return inputs.to(device), targets.to(device)


def instruction_dataloader(records: Sequence[Mapping], tokenizer, batch_size: int = 8, shuffle: bool = False,
                           allowed_max_length: int | None = None, mask_prompt: bool = False,
                           seed: int = 123) -> DataLoader:
    """Chapter 5: batches ``(inputs, targets)`` of instruction records, each padded only to
    its own longest example by ``instruction_collate`` (shuffled with a seeded generator)."""
    collate = partial(instruction_collate, allowed_max_length=allowed_max_length, mask_prompt=mask_prompt)
    return DataLoader(InstructionDataset(records, tokenizer), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=collate, generator=torch.Generator().manual_seed(seed))


def instruction_loss(model: GPT, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chapter 5: the pretraining loss (``next_token_loss``) on an ``instruction_collate`` batch;
    the ignore_index targets (padding, masked prompts) do not count. Computed by the model
    from its hidden states (``linear_cross_entropy``)."""
    inputs, targets = (t.to(model.device) for t in batch)
    return model(inputs, targets=targets)


def generate_responses(model: GPT, tokenizer, records: Sequence[Mapping], max_new_tokens: int = 256,
                       batch_size: int = 8) -> list[dict]:
    """Chapter 5: the model's answer to each record's prompt, greedy, stopped at end-of-text.

    Returns copies of the records with a "model_response" key added.
    """
    results = []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        prompts = [format_prompt(entry) for entry in chunk]
        answers = generate_text(model, tokenizer, prompts, max_new_tokens)  # greedy, stops at eos
        results.extend({**entry, "model_response": answer.strip()} for entry, answer in zip(chunk, answers))
    return results


def save_responses(records: Sequence[Mapping], path: str | os.PathLike) -> Path:
    """Chapter 5: write records (with their model responses) as a JSON list, atomically."""
    path = Path(path)
    atomic_write_bytes(path, json.dumps(list(records), indent=2, ensure_ascii=False).encode("utf-8"))
    return path


# --- Scoring responses -------------------------------------------------------------------


def _words(text: str) -> list[str]:
    # rouge_score's default tokenizer (without stemming): lowercase, runs of a-z and 0-9.
    return re.findall(r"[a-z0-9]+", text.lower())


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Chapter 5: the length of the longest common subsequence of ``a`` and ``b``
    (dynamic programming, one row at a time: O(len(a) * len(b)) time)."""
    row = [0] * (len(b) + 1)  # row[j] = LCS of the part of a seen so far and b[:j]
    for x in a:
        previous = row[:]
        for j, y in enumerate(b, start=1):
            row[j] = previous[j - 1] + 1 if x == y else max(previous[j], row[j - 1])
    return row[-1]


def rouge_l_f1(candidate: str, reference: str) -> float:
    """Chapter 5: ROUGE-L F1 of a response against a reference answer.

    With L = the longest common subsequence of their words (lowercased), precision is
    L / len(candidate), recall L / len(reference), and F1 their harmonic mean. It
    rewards the right words in the right order, without asking for them to be adjacent.
    """
    if not isinstance(candidate, str) or not isinstance(reference, str):
        raise TypeError("rouge_l_f1 expects two strings")
    cand, ref = _words(candidate), _words(reference)
    common = lcs_length(cand, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def mean_rouge_l(records: Sequence[Mapping], response_key: str = "model_response") -> float:
    """Chapter 5: the mean ROUGE-L F1 of each record's response against its "output"."""
    if not records:
        raise ValueError("mean_rouge_l got no records")
    return sum(rouge_l_f1(r[response_key], r["output"]) for r in records) / len(records)


def judge_prompt(entry: Mapping, response_key: str = "model_response") -> str:
    """Chapter 5: the request that asks a larger model to grade one response from 0 to 100."""
    _check_entry(entry, need_output=True)
    return (
        f"Given the input `{format_prompt(entry)}` and correct output `{entry['output']}`, "
        f"score the model response `{entry[response_key]}` on a scale from 0 to 100, "
        f"where 100 is the best score. Respond with the integer number only."
    )


def ollama_chat(url: str, payload: dict, timeout: float = 120.0) -> str:
    """Send one chat request to an Ollama-style server (``POST /api/chat``, no
    streaming) and return the reply's text."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["message"]["content"]


def judge_responses(records: Sequence[Mapping], url: str = "http://localhost:11434/api/chat",
                    model: str = "llama3", request_fn: Callable[[str, dict], str] = ollama_chat,
                    response_key: str = "model_response") -> list[int | None]:
    """Chapter 5: scores from 0 to 100 given by a larger model acting as the judge.

    Needs a local chat server (Ollama by default); nothing calls it unless asked.
    ``request_fn(url, payload)`` sends one request and returns the reply text. A reply
    without an integer scores None.
    """
    scores = []
    for entry in records:
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": judge_prompt(entry, response_key)}],
            "stream": False,
            "options": {"seed": 123, "temperature": 0},  # the same grade on every run
        }
        match = re.search(r"\d+", request_fn(url, payload))
        scores.append(int(match.group()) if match else None)
    return scores
