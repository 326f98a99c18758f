"""Checks of the chapter 5 assignment: classification outputs, instruction data, LoRA.

References come from ``llmcourse.finetune`` and ``llmcourse.lora``; the small wrappers
here adapt them to plain functions of tensors, lists and strings (what a notebook
defines and the grader can call).
"""
from __future__ import annotations

import math

import torch

from .checks import Case, Check, Mistake, randint, randn, register, register_quiz

# ---------------------------------------------------------------- last-token logits and accuracy

def reference_last_token_logits(logits, input_ids, pad_id):
    """``llmcourse.finetune.last_token_logits`` on given logits (a "model" that returns them)."""
    from ..finetune import last_token_logits

    return last_token_logits(lambda ids: logits, input_ids, pad_id)


def _right_padded(gen, lengths, T, pad_id, vocab=100):
    ids = torch.full((len(lengths), T), pad_id, dtype=torch.long)
    for row, n in enumerate(lengths):
        real = torch.randint(0, vocab - 1, (n,), generator=gen)
        ids[row, :n] = real + (real >= pad_id).long()  # no real token equals pad_id
    return ids


def _ltl_args(gen, lengths, T, C, pad_id, dtype=torch.float32):
    return (randn(gen, len(lengths), T, C, dtype=dtype), _right_padded(gen, lengths, T, pad_id), pad_id)


def _ltl_cases(gen, kind):
    if kind == "visible":
        return [Case(_ltl_args(gen, [3, 6, 2], 6, 2, 50), "3 texts of 3, 6 and 2 tokens, right-padded to 6, pad_id 50")]
    return [Case(_ltl_args(gen, [1, 4, 7, 2], 7, 3, 0), "4 texts, one of a single token, pad_id 0, 3 classes"),
            Case(_ltl_args(gen, [5, 5], 5, 2, 99, torch.float64), "no padding at all, float64"),
            Case(_ltl_args(gen, [2], 9, 4, 7), "one text of 2 tokens padded to 9")]


def _ltl_position_minus_one(logits, input_ids, pad_id):
    return logits[:, -1, :]


def _ltl_first_pad(logits, input_ids, pad_id):
    last = (input_ids != pad_id).sum(dim=1).clamp(max=input_ids.size(1) - 1)
    return logits[torch.arange(len(input_ids)), last]


register(Check(
    id="ch5.last_token_logits", function_name="last_token_logits", reference=reference_last_token_logits,
    draw_cases=_ltl_cases,
    mistakes=(
        Mistake(_ltl_position_minus_one, "position -1 taken on right-padded inputs: for a text shorter than "
                "the batch, position -1 is a pad; take the logits at each text's last real token"),
        Mistake(_ltl_first_pad, "off by one: a text of n real tokens has its last one at index n - 1"),
    ), rtol=0, atol=0))


def reference_accuracy(logits, labels):
    """The fraction of rows whose highest logit is the label, as a Python float."""
    return (logits.argmax(dim=-1) == labels).double().mean().item()


def _acc_args(gen, B, C, dtype=torch.float32):
    # B is a power of two, so every fraction k / B is exact in float32 and float64 alike.
    logits = randn(gen, B, C, dtype=dtype)
    labels = torch.randint(0, C, (B,), generator=gen)
    right = torch.rand(B, generator=gen) < 0.6
    labels = torch.where(right, logits.argmax(dim=-1), labels)
    return (logits, labels)


def _acc_cases(gen, kind):
    if kind == "visible":
        return [Case(_acc_args(gen, 8, 2), "logits (8, 2), labels (8,)")]
    logits, _ = _acc_args(gen, 4, 3)
    return [Case(_acc_args(gen, 32, 5), "logits (32, 5)"),
            Case((logits, logits.argmax(dim=-1)), "every prediction right: 1.0"),
            Case(_acc_args(gen, 16, 2, torch.float64), "float64 logits (16, 2)")]


register(Check(
    id="ch5.accuracy", function_name="accuracy", reference=reference_accuracy, draw_cases=_acc_cases,
    mistakes=(
        Mistake(lambda logits, labels: int((logits.argmax(dim=-1) == labels).sum()),
                "that is the number of right predictions; accuracy is their fraction"),
    ), rtol=0, atol=0))


# ---------------------------------------------------------------- instruction collate

def reference_instruction_collate(batch, pad_id=50256, ignore_index=-100, max_length=None):
    """``llmcourse.finetune.instruction_collate`` on plain lists of token ids (no prompt masking)."""
    from ..finetune import instruction_collate

    return instruction_collate([(ids, 0) for ids in batch], pad_id, ignore_index, max_length)


def _collate_variant(batch, pad_id=50256, ignore_index=-100, max_length=None, *, mask=True,
                     keep_first=True, shift=True, truncate=True):
    T = max(len(ids) for ids in batch)
    inputs = torch.full((len(batch), T), pad_id, dtype=torch.long)
    targets = torch.full((len(batch), T), pad_id if not mask else ignore_index, dtype=torch.long)
    for row, ids in enumerate(batch):
        n = len(ids)
        inputs[row, :n] = torch.tensor(ids)
        if shift:
            targets[row, :n - 1] = torch.tensor(ids[1:])
            if keep_first:
                targets[row, n - 1] = pad_id
        else:
            targets[row, :n] = torch.tensor(ids)
    if truncate and max_length is not None:
        inputs, targets = inputs[:, :max_length], targets[:, :max_length]
    return inputs, targets


def _collate_args(gen, lengths, pad_id=50256, ignore_index=-100, max_length=None):
    batch = [[randint(gen, 0, 1000) for _ in range(n)] for n in lengths]
    return (batch, pad_id, ignore_index, max_length)


def _collate_cases(gen, kind):
    if kind == "visible":
        return [Case(_collate_args(gen, [5, 2, 3]), "3 sequences of 5, 2 and 3 ids"),
                Case(_collate_args(gen, [7, 4], max_length=5), "max_length=5, longest 7")]
    return [Case(_collate_args(gen, [1, 6, 6, 3], pad_id=0, ignore_index=-1), "pad_id 0, ignore_index -1, "
                 "a sequence of one id"),
            Case(_collate_args(gen, [4, 4]), "equal lengths: each row keeps one end-of-text target"),
            Case(_collate_args(gen, [9, 2, 5], max_length=3), "max_length=3"),
            Case(_collate_args(gen, [3, 1], max_length=10), "max_length longer than the batch"),
            Case((_collate_args(gen, [4, 2, 3])[0],), "only the batch given: pad_id, ignore_index and "
                 "max_length at their defaults (50256, -100, None)",
                 hint="check the defaults: pad_id=50256, ignore_index=-100, max_length=None",
                 base="max_length longer than the batch")]


register(Check(
    id="ch5.instruction_collate", function_name="instruction_collate", reference=reference_instruction_collate,
    draw_cases=_collate_cases,
    mistakes=(
        Mistake(lambda *a: _collate_variant(*a, mask=False),
                "padding not masked with -100 (ignore_index): padding targets must not count in the loss"),
        Mistake(lambda *a: _collate_variant(*a, keep_first=False),
                "every end-of-text target was masked, the first one included: keep the first end-of-text "
                "token of each sequence as a target, or the model never learns to stop"),
        Mistake(lambda *a: _collate_variant(*a, shift=False),
                "target not shifted by one: targets[t] must be the token after inputs[t]"),
        Mistake(lambda *a: _collate_variant(*a, truncate=False),
                "truncation missing: cut inputs and targets to max_length tokens"),
    ), rtol=0, atol=0))


# ---------------------------------------------------------------- the Alpaca prompt format

_WORDS = ("summarize", "the", "text", "translate", "into", "French", "a", "list", "of", "three", "colors",
          "rewrite", "sentence", "in", "passive", "voice", "cat", "sat", "on", "mat", "What", "is", "capital",
          "Spain", "Madrid", "red,", "green,", "blue.", "give", "an", "example", "verb")


def reference_format_instruction(entry):
    from ..finetune import format_instruction

    return format_instruction(entry)


def _sentence(gen, low=2, high=8):
    return " ".join(_WORDS[randint(gen, 0, len(_WORDS))] for _ in range(randint(gen, low, high)))


def _entry(gen, with_input=True, drop_key=False):
    entry = {"instruction": _sentence(gen).capitalize() + ".", "input": _sentence(gen) if with_input else "",
             "output": _sentence(gen, 1, 10)}
    if drop_key:
        del entry["input"]
    return (entry,)


def _format_cases(gen, kind):
    if kind == "visible":
        return [Case(_entry(gen), "an entry with an input"), Case(_entry(gen, False), "an entry whose input is empty")]
    return [Case(_entry(gen), "another entry with an input"), Case(_entry(gen, False), "another empty input"),
            Case(_entry(gen, False, drop_key=True), "an entry with no 'input' key")]


def _format_always_input(entry):
    from ..finetune import ALPACA_PREAMBLE

    return (f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{entry['instruction']}\n\n### Input:\n{entry.get('input', '')}"
            f"\n\n### Response:\n{entry['output']}")


register(Check(
    id="ch5.format_instruction", function_name="format_instruction", reference=reference_format_instruction,
    draw_cases=_format_cases,
    mistakes=(Mistake(_format_always_input, "Input section present although the input is empty: leave out "
                      "the whole '### Input:' section when there is no input"),),
))


# ---------------------------------------------------------------- LoRA

def _lora_layer(W, b, A, B, alpha, rank):
    from ..lora import LoRALinear

    out_f, in_f = W.shape
    linear = torch.nn.Linear(in_f, out_f).to(W.dtype)
    with torch.no_grad():
        linear.weight.copy_(W)
        linear.bias.copy_(b)
        layer = LoRALinear(linear, rank, alpha)
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    return layer


def reference_lora_forward(x, W, b, A, B, alpha, rank):
    """``llmcourse.lora.LoRALinear`` with the given weights: x (..., in) -> (..., out)."""
    with torch.no_grad():
        return _lora_layer(W, b, A, B, alpha, rank)(x)


def reference_lora_merge(W, A, B, alpha, rank):
    """The weight of ``LoRALinear.merged()``: W + (alpha / rank) B A, (out, in)."""
    return _lora_layer(W, torch.zeros(W.size(0), dtype=W.dtype), A, B, alpha, rank).merged().weight.detach()


def _lora_weights(gen, d_in, d_out, r, dtype=torch.float32):
    # B is random, not zero as at the start of training, so that the update shows.
    return (randn(gen, d_out, d_in, dtype=dtype, scale=1 / math.sqrt(d_in)), randn(gen, d_out, dtype=dtype, scale=0.1),
            randn(gen, r, d_in, dtype=dtype, scale=1 / math.sqrt(d_in)), randn(gen, d_out, r, dtype=dtype, scale=0.5))


def _lora_forward_cases(gen, kind):
    def case(shape, d_out, r, alpha, dtype=torch.float32):
        W, b, A, B = _lora_weights(gen, shape[-1], d_out, r, dtype)
        return (randn(gen, *shape, dtype=dtype), W, b, A, B, alpha, r)

    if kind == "visible":
        return [Case(case((2, 3, 6), 6, 2, 4.0), "x (2, 3, 6), a 6 x 6 layer, rank 2, alpha 4")]
    return [Case(case((4, 5), 7, 3, 8.0), "x (4, 5), a 5 -> 7 layer, rank 3, alpha 8"),
            Case(case((1, 2, 8), 8, 1, 1.0), "rank 1, alpha 1"),
            Case(case((2, 4), 3, 2, 16.0, torch.float64), "float64, a 4 -> 3 layer")]


def _lora_merge_cases(gen, kind):
    def case(d_in, d_out, r, alpha, dtype=torch.float32):
        W, _, A, B = _lora_weights(gen, d_in, d_out, r, dtype)
        return (W, A, B, alpha, r)

    if kind == "visible":
        return [Case(case(5, 5, 2, 8.0), "a 5 x 5 weight, rank 2, alpha 8")]
    return [Case(case(6, 4, 3, 2.0), "a 6 -> 4 layer (W is 4 x 6), rank 3"),
            Case(case(3, 3, 1, 16.0, torch.float64), "float64, rank 1, alpha 16")]


def _forward_variant(x, W, b, A, B, alpha, rank, *, scale=lambda alpha, rank: alpha / rank, swap=False):
    delta = (B @ A).T if swap else B @ A  # (out, in)
    return x @ (W + scale(alpha, rank) * delta).T + b


def _merge_variant(W, A, B, alpha, rank, *, scale=lambda alpha, rank: alpha / rank, swap=False):
    delta = (B @ A).T if swap else B @ A
    return W + scale(alpha, rank) * delta


_NO_SCALE = "missing the alpha / rank scaling of the low-rank update"
_UPSIDE_DOWN = "the scaling is upside down: it is alpha / rank"
_SWAPPED = ("A and B swapped or transposed: the update of the (out, in) weight is B @ A, so the output gains "
            "(x @ A.T) @ B.T")
register(Check(
    id="ch5.lora_forward", function_name="lora_forward", reference=reference_lora_forward, draw_cases=_lora_forward_cases,
    mistakes=(
        Mistake(lambda *a: _forward_variant(*a, scale=lambda alpha, rank: 1.0), _NO_SCALE),
        Mistake(lambda *a: _forward_variant(*a, scale=lambda alpha, rank: rank / alpha), _UPSIDE_DOWN),
        Mistake(lambda *a: _forward_variant(*a, swap=True), _SWAPPED),
        Mistake(lambda x, W, b, A, B, alpha, rank: x @ W.T + b, "the LoRA update is missing: add (alpha / rank) "
                "(x @ A.T) @ B.T to the frozen layer's output"),
    ), rtol=1e-5, atol=1e-5))
register(Check(
    id="ch5.lora_merge", function_name="lora_merge", reference=reference_lora_merge, draw_cases=_lora_merge_cases,
    mistakes=(
        Mistake(lambda *a: _merge_variant(*a, scale=lambda alpha, rank: 1.0), _NO_SCALE),
        Mistake(lambda *a: _merge_variant(*a, scale=lambda alpha, rank: rank / alpha), _UPSIDE_DOWN),
        Mistake(lambda *a: _merge_variant(*a, swap=True), _SWAPPED),
    ), rtol=1e-5, atol=1e-5))


# ---------------------------------------------------------------- concept questions

register_quiz("ch5.q1", "ch5.q2", "ch5.q3")
