"""Instruction fine-tuning: Alpaca-style prompts, padding and masking, responses (chapter 5).

Instruction/response records are written in the Alpaca prompt format, encoded,
padded and masked by ``instruction_collate``, and trained with the same next-token
loss as pretraining (``instruction_loss``); ``generate_responses`` then answers
held-out instructions, for ``rouge`` and ``judge`` to score.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..files import atomic_write_bytes, read_text
from ..generate import completion_ids, split_eos
from ..model import GPT, IGNORE_INDEX
from .shared import PAD_ID, seeded_split

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


def check_instruction_record(entry, need_output: bool) -> None:
    """Raise unless ``entry`` is a dict with a str "instruction" (and "output" when
    ``need_output``) and, if it has one, a str "input"."""
    if not isinstance(entry, Mapping):
        raise TypeError(f"expected an instruction record (a dict), got {type(entry).__name__}")
    for key in ("instruction", "output") if need_output else ("instruction",):
        if not isinstance(entry.get(key), str):
            raise ValueError(f"an instruction record needs a str {key!r}, got {entry.get(key)!r}")
    if not isinstance(entry.get("input", ""), str):  # "input" may be left out
        raise ValueError(f"an instruction record's 'input' must be a str, got {entry['input']!r}")


def format_prompt(entry: Mapping, preamble: str = ALPACA_PREAMBLE) -> str:
    """The Alpaca-style prompt for an instruction record, up to and including
    the response header: what the model sees before it answers.

    The "### Input:" section appears only when the record's input is not empty.
    ``preamble=""`` leaves the preamble out (45 tokens of a 128-token context in the
    course tokenizer); the model must then be tuned and asked without it, too.
    """
    check_instruction_record(entry, need_output=False)
    text = f"{preamble}\n\n" if preamble else ""
    text += f"### Instruction:\n{entry['instruction']}"
    if entry.get("input"):
        text += f"\n\n### Input:\n{entry['input']}"
    return text + "\n\n### Response:\n"


def format_instruction(entry: Mapping, preamble: str = ALPACA_PREAMBLE) -> str:
    """A whole training text in the Alpaca format: the prompt, then the output."""
    check_instruction_record(entry, need_output=True)
    return format_prompt(entry, preamble) + entry["output"]


def load_instruction_data() -> list[dict]:
    """The 1,100 instruction/input/output records of ``instruction-data.json``."""
    return json.loads(read_text("instruction-data.json"))


def instruction_splits(seed: int = 123, fractions: Sequence[float] = (0.85, 0.05, 0.10)) -> dict[str, list[dict]]:
    """The instruction records split 85/5/10: train (935), val (55), test (110)."""
    return seeded_split(load_instruction_data(), fractions, seed)


class InstructionDataset(Dataset):
    """Instruction records as token ids, ready for ``instruction_collate``.

    Items are ``(token_ids, prompt_length)``: the ids of ``format_instruction(entry)``
    and how many of them belong to the prompt, which prompt masking needs. Prompt and
    output are encoded separately and joined, so that count is exact (BPE could
    otherwise merge across the boundary). ``preamble`` as in ``format_prompt``.
    """

    def __init__(self, records: Sequence[Mapping], tokenizer, preamble: str = ALPACA_PREAMBLE):
        self.items = []
        for entry in records:
            check_instruction_record(entry, need_output=True)
            prompt = tokenizer.encode(format_prompt(entry, preamble))
            self.items.append((prompt + tokenizer.encode(entry["output"]), len(prompt)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.items[index]


def instruction_collate(
    batch: Sequence[tuple[Sequence[int], int]],
    pad_id: int = PAD_ID,
    ignore_index: int = IGNORE_INDEX,
    max_length: int | None = None,
    mask_prompt: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of instruction examples and build its next-token targets.

    batch: ``(token_ids, prompt_length)`` pairs, as ``InstructionDataset`` yields.
    Each sequence gets one end-of-text token (``pad_id``: GPT-2's ``<|endoftext|>``)
    and is right-padded with ``pad_id`` to the batch's longest sequence + 1; then
    inputs = seq[:-1] and targets = seq[1:]. In the targets, every padding position
    becomes ``ignore_index`` except the first end-of-text token: the model must learn
    to emit it, or it would never stop answering. With ``mask_prompt``, the targets
    inside the prompt are ``ignore_index`` too, so only the response is learned.
    Sequences are cut to ``max_length`` tokens (at most the model's context length).

    Returns ``(inputs, targets)``, LongTensors of shape (B, T) with T = the longest
    token_ids, at most max_length. With pad 0, ``[(1, 2, 3), 1]`` and ``[(4,), 1]``:
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
    if max_length is not None:
        inputs, targets = inputs[:, :max_length], targets[:, :max_length]
    return inputs.to(device), targets.to(device)


def instruction_dataloader(records: Sequence[Mapping], tokenizer, batch_size: int = 8, shuffle: bool = False,
                           max_length: int | None = None, mask_prompt: bool = False,
                           seed: int = 123, preamble: str = ALPACA_PREAMBLE) -> DataLoader:
    """Batches ``(inputs, targets)`` of instruction records, each padded only to
    its own longest example by ``instruction_collate`` with the tokenizer's
    ``<|endoftext|>`` (shuffled with a seeded generator)."""
    collate = partial(instruction_collate, pad_id=tokenizer.eot_token, max_length=max_length,
                      mask_prompt=mask_prompt)
    return DataLoader(InstructionDataset(records, tokenizer, preamble), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=collate, generator=torch.Generator().manual_seed(seed))


def instruction_loss(model: GPT, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """The pretraining loss (``next_token_loss``) on an ``instruction_collate`` batch;
    the ignore_index targets (padding, masked prompts) do not count. Computed by the model
    from its hidden states (``linear_cross_entropy``)."""
    inputs, targets = (t.to(model.device) for t in batch)
    return model(inputs, targets=targets)


def generate_responses(model: GPT, tokenizer, records: Sequence[Mapping], max_new_tokens: int = 256,
                       batch_size: int = 8, preamble: str = ALPACA_PREAMBLE) -> list[dict]:
    """The model's answer to each record's prompt, greedy, stopped at end-of-text.

    Returns copies of the records with a "model_response" key added, and
    "ended": whether the model ended its answer itself (an end-of-text token within
    ``max_new_tokens``). ``preamble`` must be the one the model was tuned with.
    """
    results = []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        prompts = [format_prompt(entry, preamble) for entry in chunk]
        for entry, ids in zip(chunk, completion_ids(model, tokenizer, prompts, max_new_tokens)):  # greedy
            answer, ended = split_eos(ids, tokenizer.eot_token)
            results.append({**entry, "model_response": tokenizer.decode(answer).strip(), "ended": ended})
    return results


def save_responses(records: Sequence[Mapping], path: str | os.PathLike) -> Path:
    """Write records (with their model responses) as a JSON list, atomically."""
    path = Path(path)
    atomic_write_bytes(path, json.dumps(list(records), indent=2, ensure_ascii=False).encode("utf-8"))
    return path
