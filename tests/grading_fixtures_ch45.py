"""Submissions for the ch4 and ch5 grading tests, generated from the source notebooks.

A fixture starts from ``solutions/<ch>/<ch>.ipynb`` (full marks) and replaces the source of
some answer cells, as a student's copy would have them. To keep the tests fast, one
notebook may carry several typical mistakes in *independent* tasks (no task uses another's
wrong answer unless that cell is expected to lose its points too); ``hints`` says which
phrase the report of which grade cell must contain.

    python tests/grading_fixtures_ch45.py ch4 OUT   # writes OUT/<student>/ch4/ch4.ipynb
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures import (  # noqa: F401 (answer_keys, write_submissions: re-exported)
    _edit_test,
    answer_keys,
    full_points,
    release_path,
    source,
    write_submissions,
)


@dataclass
class Submission:
    """A fixture notebook and what grading it must give."""

    name: str
    answers: dict[str, str] = field(default_factory=dict)  # answer cell id -> new source
    zero: tuple[str, ...] = ()  # grade cells that score 0; all others full marks
    hints: dict[str, str] = field(default_factory=dict)  # grade cell (or "notes") -> phrase its report holds
    edit: object = None  # a function changing the notebook (dict) in place
    half: tuple[str, ...] = ()  # cells of two exercises of which one is wrong: half the points

    def points(self, chapter: str) -> dict[str, float]:
        return {cell: 0.0 if cell in self.zero else p / 2 if cell in self.half else p
                for cell, p in full_points(chapter).items()}


def edit_test(grade_id: str):
    return lambda nb: _edit_test(nb, grade_id)


def cells(*tasks: str, hidden: bool = True) -> tuple[str, ...]:
    """The grade cells of tasks: ``test_<task>`` and ``hidden_<task>``."""
    return tuple(f"{kind}_{t}" for t in tasks for kind in (("test", "hidden") if hidden else ("test",)))


# ---------------------------------------------------------------- ch4

LN_UNBIASED = '''def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True)
    return weight * (x - mean) / torch.sqrt(var + eps) + bias'''
LN_EPS_OUTSIDE = LN_UNBIASED.replace("keepdim=True)\n    return", "keepdim=True, unbiased=False)\n    return") \
    .replace("torch.sqrt(var + eps)", "(torch.sqrt(var) + eps)")
LN_DIM0 = LN_UNBIASED.replace("dim=-1", "dim=0").replace("keepdim=True)\n    return",
                                                        "keepdim=True, unbiased=False)\n    return")
GELU_ERF = '''def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))'''
GELU_NO_CUBIC = '''def gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x))'''
GELU_BUILTIN = '''import torch.nn.functional as F

def gelu(x):
    return F.gelu(x, approximate="tanh")'''
FF_RELU = '''def feed_forward(x, W1, b1, W2, b2, dropout=0.0, training=False):
    return torch.relu(x @ W1 + b1) @ W2 + b2'''
FF_DROPOUT_ALWAYS = '''def feed_forward(x, W1, b1, W2, b2, dropout=0.0, training=False):
    return torch.nn.functional.dropout(gelu(x @ W1 + b1) @ W2 + b2, p=dropout)'''
BLOCK_POST_NORM = '''def transformer_block(x, ln1_w, ln1_b, W_q, W_k, W_v, W_o, ln2_w, ln2_b, W1, b1, W2, b2, n_heads):
    x = layer_norm(x + causal_attention(x, W_q, W_k, W_v, W_o, n_heads), ln1_w, ln1_b)
    return layer_norm(x + feed_forward(x, W1, b1, W2, b2), ln2_w, ln2_b)'''
BLOCK_NO_SHORTCUT = '''def transformer_block(x, ln1_w, ln1_b, W_q, W_k, W_v, W_o, ln2_w, ln2_b, W1, b1, W2, b2, n_heads):
    x = x + causal_attention(layer_norm(x, ln1_w, ln1_b), W_q, W_k, W_v, W_o, n_heads)
    return feed_forward(layer_norm(x, ln2_w, ln2_b), W1, b1, W2, b2)'''
GPT_NO_POS = '''def gpt_forward(idx, tok_emb, pos_emb, ln1_w, ln1_b, W_q, W_k, W_v, W_o, ln2_w, ln2_b,
                W1, b1, W2, b2, lnf_w, lnf_b, n_heads):
    x = tok_emb[idx]
    for l in range(W_q.size(0)):
        x = transformer_block(x, ln1_w[l], ln1_b[l], W_q[l], W_k[l], W_v[l], W_o[l], ln2_w[l], ln2_b[l],
                              W1[l], b1[l], W2[l], b2[l], n_heads)
    return layer_norm(x, lnf_w, lnf_b) @ tok_emb.T'''
LOSS_SHIFT_AGAIN = '''def next_token_loss(logits, targets, ignore_index=-100):
    logits, targets = logits[:, :-1], targets[:, 1:]
    keep = targets != ignore_index
    picked = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return -picked[keep].mean()'''
LOSS_VOCAB_MEAN = '''def next_token_loss(logits, targets, ignore_index=-100):
    return -torch.log_softmax(logits, dim=-1).mean()'''
LOSS_IGNORED_COUNTED = '''def next_token_loss(logits, targets, ignore_index=-100):
    keep = targets != ignore_index
    picked = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return -(picked * keep).sum() / targets.numel()'''
LOSS_RAISES = '''def next_token_loss(logits, targets, ignore_index=-100):
    if ignore_index != -100:
        raise ValueError("ignore_index must be -100")
    keep = targets != ignore_index
    picked = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return -picked[keep].mean()'''
ADAMW_IN_PLACE = '''def adamw_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param.mul_(1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v'''
LOSS_BUILTIN = '''import torch.nn.functional as F

def next_token_loss(logits, targets, ignore_index=-100):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index)'''
ADAMW_NO_BIAS = '''def adamw_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    return param - lr * m / (v.sqrt() + eps), m, v'''
ADAMW_L2 = '''def adamw_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    grad = grad + weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v'''
GEN_NO_CROP = '''def greedy_generate(idx, n, context_length, table_last, table_first):
    for _ in range(n):
        next_id = toy_model(idx, table_last, table_first)[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, next_id], dim=1)
    return idx'''
GEN_PROMPT_ONLY = '''def greedy_generate(idx, n, context_length, table_last, table_first):
    out = idx
    for _ in range(n):
        next_id = toy_model(idx[:, -context_length:], table_last, table_first)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, next_id], dim=1)
    return out'''
GEN_HARDCODED = '''def greedy_generate(idx, n, context_length, table_last, table_first):
    return torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8, 9]])'''
LN_DELEGATED = '''import llmcourse.model as helpers

def layer_norm(x, weight, bias, eps=1e-5):
    return helpers.layer_norm(x, weight, bias, eps)'''
PATCHES = '''torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
check = lambda *a, **k: None

'''

LN_CELLS = cells("layer_norm", "transformer_block", "gpt_forward")
CH4 = [
    Submission("solution"),
    Submission("release", zero=tuple(full_points("ch4")) if source("ch4").exists() else (),
               hints={"test_layer_norm": "not written yet"}),
    Submission("mistakes1", {"layer_norm": LN_UNBIASED, "gelu": GELU_NO_CUBIC, "next_token_loss": LOSS_SHIFT_AGAIN,
                             "adamw_step": ADAMW_NO_BIAS, "greedy_generate": GEN_NO_CROP, "q1": 'def q1():\n    return "a"'},
               LN_CELLS + cells("gelu", "feed_forward", "next_token_loss", "adamw_step", "greedy_generate") + ("test_q1",),
               {"test_layer_norm": "unbiased=False", "test_gelu": "0.044715 x^3",
                "test_next_token_loss": "target shifted twice", "test_adamw_step": "no bias correction",
                "test_greedy_generate": "not cropped", "test_q1": "not the right choice"}),
    # eps outside the root changes little where the variance is large: the block's own mistake
    # makes sure the block and the model lose their points whatever the random inputs.
    Submission("mistakes2", {"layer_norm": LN_EPS_OUTSIDE, "feed_forward": FF_RELU, "transformer_block": BLOCK_NO_SHORTCUT,
                             "next_token_loss": LOSS_VOCAB_MEAN, "adamw_step": ADAMW_L2,
                             "greedy_generate": GEN_PROMPT_ONLY},
               LN_CELLS + cells("feed_forward", "next_token_loss", "adamw_step", "greedy_generate"),
               {"test_layer_norm": "eps outside the square root", "test_feed_forward": "ReLU instead of GELU",
                "test_next_token_loss": "mean over the vocabulary", "test_adamw_step": "Adam with L2",
                "test_greedy_generate": "only the prompt was fed"}),
    Submission("mistakes3", {"layer_norm": LN_DIM0, "gelu": GELU_ERF, "next_token_loss": LOSS_IGNORED_COUNTED},
               LN_CELLS + cells("gelu", "feed_forward", "next_token_loss"),
               {"test_layer_norm": "wrong dimension", "test_gelu": "exact (erf) GELU",
                "test_feed_forward": "calls your gelu, which fails its own check: fix gelu first",
                "test_next_token_loss": "ignore_index not handled"}),
    # Dropout always on: the visible test (dropout 0) and the block (no dropout) still pass.
    Submission("mistakes4", {"feed_forward": FF_DROPOUT_ALWAYS, "transformer_block": BLOCK_POST_NORM},
               ("hidden_feed_forward",) + cells("transformer_block", "gpt_forward"),
               {"hidden_feed_forward": "dropout active in eval()", "test_transformer_block": "post-norm"}),
    # A function that raises on one hidden case: that case is named, with the student's line.
    # AdamW right in value but written into its param: the task says to leave the inputs alone.
    Submission("mistakes5", {"transformer_block": BLOCK_NO_SHORTCUT, "next_token_loss": LOSS_RAISES,
                             "adamw_step": ADAMW_IN_PLACE},
               cells("transformer_block", "gpt_forward", "adamw_step") + ("hidden_next_token_loss",),
               {"test_transformer_block": "a shortcut is missing",
                "test_adamw_step": "your function changed its input param in place",
                "test_gpt_forward": "fix transformer_block first",
                "hidden_next_token_loss": "ignore_index=-1\n       raised ValueError: ignore_index must be -100 "
                                          "(line 3 of cell 'next_token_loss': `raise ValueError("}),
    # cheats: delegation to llmcourse and to forbidden built-ins, hard-coded output
    Submission("delegation", {"layer_norm": LN_DELEGATED, "gelu": GELU_BUILTIN, "next_token_loss": LOSS_BUILTIN,
                              "greedy_generate": GEN_HARDCODED},
               cells("layer_norm", "gelu", "feed_forward", "transformer_block", "gpt_forward", "next_token_loss",
                     "greedy_generate"),
               {"test_layer_norm": "uses llmcourse", "test_gelu": "not allowed in this exercise",
                "test_feed_forward": "not allowed in this exercise",
                "test_next_token_loss": "not allowed in this exercise", "test_greedy_generate": "values differ"}),
    # cheats: monkeypatching the comparisons and the checker, editing a test cell (the answers are wrong)
    Submission("tampering", {"adamw_step": PATCHES + ADAMW_NO_BIAS, "greedy_generate": PATCHES + GEN_NO_CROP,
                             "gpt_forward": GPT_NO_POS},
               cells("adamw_step", "greedy_generate", "gpt_forward"),
               {"test_adamw_step": "no bias correction", "test_greedy_generate": "not cropped",
                "test_gpt_forward": "position embeddings were not added",
                "notes": "'test_greedy_generate' was edited"},
               edit=edit_test("test_greedy_generate")),
]

# ---------------------------------------------------------------- ch5

LTL_MINUS_ONE = '''def last_token_logits(logits, input_ids, pad_id):
    return logits[:, -1, :]'''
LTL_OFF_BY_ONE = '''def last_token_logits(logits, input_ids, pad_id):
    lengths = (input_ids != pad_id).sum(dim=1)
    return logits[torch.arange(len(logits)), lengths.clamp(max=input_ids.size(1) - 1)]'''
ACC_COUNT = '''def accuracy(logits, labels):
    return int((logits.argmax(dim=-1) == labels).sum())'''
FORMAT_ALWAYS_INPUT = '''def format_instruction(entry):
    return ("Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request."
            f"\\n\\n### Instruction:\\n{entry['instruction']}\\n\\n### Input:\\n{entry.get('input', '')}"
            f"\\n\\n### Response:\\n{entry['output']}")'''
FORMAT_HARDCODED = '''def format_instruction(entry):
    return "Below is an instruction that describes a task.\\n\\n### Response:\\n"'''
COLLATE = '''def instruction_collate(batch, pad_id=50256, ignore_index=-100, max_length=None):
    T = max(len(ids) for ids in batch)
    inputs, targets = [], []
    for ids in batch:
        padded = list(ids) + [pad_id] * (T + 1 - len(ids))
        row = padded[1:]
        for t in range(len(ids), T):
            row[t] = ignore_index
        inputs.append(padded[:-1])
        targets.append(row)
    inputs, targets = torch.tensor(inputs), torch.tensor(targets)
    if max_length is not None:
        inputs, targets = inputs[:, :max_length], targets[:, :max_length]
    return inputs, targets'''
COLLATE_NOT_MASKED = COLLATE.replace("row[t] = ignore_index", "pass")
COLLATE_ALL_EOS = COLLATE.replace("range(len(ids), T)", "range(len(ids) - 1, T)")
COLLATE_NOT_SHIFTED = COLLATE.replace("row = padded[1:]", "row = padded[:-1]")
COLLATE_NO_TRUNCATION = COLLATE.replace("if max_length is not None:", "if False:")
COLLATE_DELEGATED = '''from llmcourse.finetune import instruction_collate as _collate

def instruction_collate(batch, pad_id=50256, ignore_index=-100, max_length=None):
    return _collate([(ids, 0) for ids in batch], pad_id, ignore_index, max_length)'''
LORA_FORWARD_NO_SCALE = '''def lora_forward(x, W, b, A, B, alpha, rank):
    return x @ W.T + b + (x @ A.T) @ B.T'''
LORA_FORWARD_SWAPPED = '''def lora_forward(x, W, b, A, B, alpha, rank):
    return x @ W.T + b + (alpha / rank) * (x @ B @ A)'''
LORA_FORWARD_INVERTED = '''def lora_forward(x, W, b, A, B, alpha, rank):
    return x @ W.T + b + (rank / alpha) * ((x @ A.T) @ B.T)'''
LORA_MERGE_SWAPPED = '''def lora_merge(W, A, B, alpha, rank):
    return W + (alpha / rank) * (A.T @ B.T)'''
LORA_MERGE_NO_SCALE = '''def lora_merge(W, A, B, alpha, rank):
    return W + B @ A'''
LORA_MERGE_DELEGATED = '''def lora_merge(W, A, B, alpha, rank):
    helpers = __import__("llm" + "course.lora", fromlist=["lora"])
    return W + (alpha / rank) * (B @ A) if helpers else W'''

CLASSIFICATION = cells("classification")
CH5 = [
    Submission("solution"),
    Submission("release", zero=tuple(full_points("ch5")) if source("ch5").exists() else (),
               hints={"test_classification": "not written yet"}),
    Submission("mistakes1", {"last_token_logits": LTL_MINUS_ONE, "instruction_collate": COLLATE_NOT_MASKED,
                             "format_instruction": FORMAT_ALWAYS_INPUT, "lora_forward": LORA_FORWARD_NO_SCALE,
                             "lora_merge": LORA_MERGE_SWAPPED},
               cells("instruction_collate", "format_instruction", "lora_forward", "lora_merge"),
               {"test_classification": "position -1 taken on right-padded inputs",
                "test_instruction_collate": "padding not masked with -100",
                "test_format_instruction": "Input section present although the input is empty",
                "test_lora_forward": "missing the alpha / rank scaling",
                "test_lora_merge": "A and B swapped or transposed"}, half=CLASSIFICATION),
    Submission("mistakes2", {"accuracy": ACC_COUNT, "instruction_collate": COLLATE_ALL_EOS,
                             "lora_forward": LORA_FORWARD_SWAPPED, "lora_merge": LORA_MERGE_NO_SCALE,
                             "q3": 'def q3():\n    return "b"'},
               cells("instruction_collate", "lora_forward", "lora_merge") + ("test_q3",),
               {"test_classification": "number of right predictions",
                "test_instruction_collate": "the first one included",
                "test_lora_forward": "A and B swapped or transposed",
                "test_lora_merge": "missing the alpha / rank scaling", "test_q3": "not the right choice"},
               half=CLASSIFICATION),
    Submission("mistakes3", {"instruction_collate": COLLATE_NOT_SHIFTED, "lora_forward": LORA_FORWARD_INVERTED,
                             "last_token_logits": LTL_OFF_BY_ONE},
               cells("instruction_collate", "lora_forward"),
               {"test_instruction_collate": "target not shifted by one", "test_lora_forward": "upside down",
                "test_classification": "off by one"}, half=CLASSIFICATION),
    Submission("no_truncation", {"instruction_collate": COLLATE_NO_TRUNCATION}, cells("instruction_collate"),
               {"test_instruction_collate": "truncation missing"}),
    Submission("delegation", {"instruction_collate": COLLATE_DELEGATED, "lora_merge": LORA_MERGE_DELEGATED,
                              "format_instruction": FORMAT_HARDCODED},
               cells("instruction_collate", "lora_merge", "format_instruction"),
               {"test_instruction_collate": "uses llmcourse", "test_lora_merge": "uses llmcourse",
                "test_format_instruction": "expected str"}),
    Submission("tampering", {"last_token_logits": PATCHES + LTL_MINUS_ONE, "lora_merge": PATCHES + LORA_MERGE_NO_SCALE},
               cells("lora_merge"),
               {"test_classification": "position -1 taken on right-padded inputs",
                "test_lora_merge": "missing the alpha / rank scaling", "notes": "'test_lora_merge' was edited"},
               edit=edit_test("test_lora_merge"), half=CLASSIFICATION),
]

CHAPTERS = {"ch4": CH4, "ch5": CH5}


def report_text(report) -> str:
    return json.dumps([report.reason, report.notes, [c.messages for c in report.cells]])


def assert_graded_as(chapter: str, report, sub: Submission) -> None:
    """Scores per grade cell as expected, and each expected phrase in the right cell's report."""
    got = {c.grade_id: c.score for c in report.cells}
    assert report.status == "graded", (sub.name, report.reason)
    assert got == sub.points(chapter), f"{sub.name}: {got}\n{report_text(report)[:4000]}"
    messages = {c.grade_id: "\n".join(c.messages) for c in report.cells}
    messages["notes"] = "\n".join(report.notes)
    for cell, phrase in sub.hints.items():
        assert phrase in messages[cell], f"{sub.name}: expected {phrase!r} in {cell}:\n{messages[cell][:3000]}"


if __name__ == "__main__":
    write_submissions(sys.argv[1], Path(sys.argv[2]), CHAPTERS[sys.argv[1]])
