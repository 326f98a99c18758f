"""Feedback a student can trust: a hint is given only where it is the cause, and no wrong
code scores full marks.

A case's own hint (``Case.hint``) is said only when its ``base`` case, which differs from
it in nothing but what the hint is about, passes. Each hinted case is tried here with a
mistake the hint is about (the hint, or the listed mistake's own, is given) and with one it
is not about, which fails the base case too (the hint must not be given). Also: a failed
check says when a function it calls fails its own check, a case that raises names the
student's line, and a forbidden built-in is named as the student wrote it.
"""
from __future__ import annotations

import linecache
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmcourse.grading import run_check
from llmcourse.grading.checks import LIKELY, Raised, clone_args, judge_cases, make_cases
from llmcourse.grading.checks_ch1 import _pairs_unshifted
from llmcourse.grading.checks_ch2 import (
    _largest,
    _merge_overlapping,
    _softmax_naive,
    _top_p_variant,
    reference_merge_pair,
)
from llmcourse.grading.checks_ch4 import reference_next_token_loss
from llmcourse.grading.checks_ch5 import _collate_variant, reference_instruction_collate
from llmcourse.grading.policy import runner_policy
from llmcourse.grading.registry import REGISTRY, get_check
from llmcourse.grading.scan import cell_findings
from llmcourse.grading.scoring import note_failing_helpers

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures_ch12 import MERGE_IN_PLACE  # noqa: E402
from grading_fixtures_ch45 import ADAMW_IN_PLACE  # noqa: E402

# ---------------------------------------------------------------- mistakes, by what they get wrong


def pairs_loop_one_short(ids, max_length, stride):
    """The loop bound one short: ``range(0, len(ids) - max_length - 1, stride)``."""
    starts = range(0, len(ids) - max_length - 1, stride)
    return (torch.stack([ids[i:i + max_length] for i in starts]),
            torch.stack([ids[i + 1:i + max_length + 1] for i in starts]))


def merge_wrong_id(ids, pair, new_id):
    return reference_merge_pair(ids, pair, new_id + 1)


def least_frequent_pair(ids):
    counts: dict = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return min(counts, key=lambda p: (counts[p], p))


def softmax_whole_sum(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum()


def top_k_exactly_k(x, k):
    keep = torch.zeros_like(x, dtype=torch.bool).scatter(-1, x.topk(min(k, x.size(-1)), dim=-1).indices, True)
    return x.masked_fill(~keep, float("-inf"))


def top_k_smallest(x, k):
    return -top_k_exactly_k(-x, k)


def top_p_loses_the_top_token(x, p):
    """Each token is kept while the tokens before it sum to less than p, except the first,
    kept only when its own probability is below p."""
    sorted_x, order = torch.sort(x, dim=-1, descending=True)
    cum = torch.softmax(sorted_x, dim=-1).cumsum(dim=-1)
    keep = cum < p
    keep[..., 1:] |= (cum[..., :-1] < p)
    return x.masked_fill(~keep.scatter(-1, order, keep), float("-inf"))


def sdpa(q, k, v, mask=None, dropout=0.0, training=False, *, fill=float("-inf"), always_drop=False):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, fill)
    weights = torch.softmax(scores, dim=-1)
    if dropout > 0 and (training or always_drop):
        weights = F.dropout(weights, dropout, training=True)
    return weights @ v, weights


def feed_forward(x, W1, b1, W2, b2, dropout=0.0, training=False, *, cubic=0.044715, always_drop=False):
    h = x @ W1 + b1
    h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + cubic * h ** 3)))
    out = h @ W2 + b2
    return F.dropout(out, dropout, training=True) if dropout > 0 and (training or always_drop) else out


def loss_padding_as_token_0(logits, targets, ignore_index=-100):
    return F.cross_entropy(logits.flatten(0, 1), targets.clamp(min=0).flatten())


def loss_raw_logits(logits, targets, ignore_index=-100):
    keep = targets != ignore_index
    return -logits.gather(-1, targets.masked_fill(~keep, 0)[..., None]).squeeze(-1)[keep].mean()


def loss_default_0(logits, targets, ignore_index=0):
    return reference_next_token_loss(logits, targets, ignore_index)


def collate_default_pad_0(batch, pad_id=0, ignore_index=-100, max_length=None):
    return reference_instruction_collate(batch, pad_id, ignore_index, max_length)


# check id, the start of the hinted case's label -> (a mistake the hint is about, one it is not)
HINTED = {
    ("ch1.next_token_pairs", "exactly max_length + 1"): (pairs_loop_one_short, _pairs_unshifted),
    ("ch2.merge_pair", "["): (_merge_overlapping, merge_wrong_id),
    ("ch2.most_frequent_pair", "4 pairs tie"): (_largest, least_frequent_pair),
    ("ch2.softmax", "the same logits plus 1000"): (_softmax_naive, softmax_whole_sum),
    ("ch2.top_k_filter", "ties"): (top_k_exactly_k, top_k_smallest),
    ("ch2.top_p_filter", "exact tie"): (lambda x, p: _top_p_variant(x, p, strict=True),
                                        lambda x, p: _top_p_variant(x, p).nan_to_num(neginf=0.0)),
    ("ch2.top_p_filter", "p=0.05"): (top_p_loses_the_top_token,
                                     lambda x, p: _top_p_variant(x, p).nan_to_num(neginf=0.0)),
    ("ch3.scaled_dot_product_attention", "the same inputs with dropout"):
        (lambda *a: sdpa(*a, always_drop=True), lambda *a: sdpa(*a, fill=0.0)),
    ("ch4.feed_forward", "the same inputs with dropout"):
        (lambda *a: feed_forward(*a, always_drop=True), lambda *a: feed_forward(*a, cubic=0.44715)),
    ("ch4.next_token_loss", "all but one target"): (loss_padding_as_token_0, loss_raw_logits),
    ("ch4.next_token_loss", "ignore_index left at its default"): (loss_default_0, loss_raw_logits),
    ("ch5.instruction_collate", "only the batch given"):
        (collate_default_pad_0, lambda *a: _collate_variant(*a, mask=False)),
}


def _outputs(fn, cases):
    outputs = []
    for case in cases:
        try:
            outputs.append(fn(*clone_args(case.args)))
        except Exception as e:  # noqa: BLE001 -- a mistake may raise, as a student's code would
            outputs.append(Raised(f"{type(e).__name__}: {e}"))
    return outputs


def _hinted(check_id: str, start: str, seed: int):
    """(kind, cases, index of the hinted case, index of its base) for each kind that has it."""
    check = get_check(check_id)
    for kind in ("visible", "hidden"):
        cases = make_cases(check, kind, seed)
        for i, case in enumerate(cases):
            if case.hint and case.label.startswith(start):
                yield kind, cases, i, [c.label for c in cases].index(case.base)


def test_every_hinted_case_is_tried_here():
    """A new hint needs its two mistakes in ``HINTED``."""
    for check in REGISTRY.values():
        for kind in ("visible", "hidden"):
            for case in make_cases(check, kind, 0):
                if case.hint:
                    assert any(check.id == cid and case.label.startswith(start) for cid, start in HINTED), \
                        (check.id, case.label)


@pytest.mark.parametrize("check_id, start", list(HINTED))
@pytest.mark.parametrize("seed", range(3))
def test_a_hint_is_given_only_where_it_is_the_cause(check_id, start, seed):
    check = get_check(check_id)
    cause, other = HINTED[check_id, start]
    found = list(_hinted(check_id, start, seed))
    assert found, (check_id, start)
    for kind, cases, i, base in found:
        hint = cases[i].hint
        results = judge_cases(check, cases, _outputs(cause, cases), kind)
        assert not results[i].passed and results[base].passed, (kind, [r.message for r in results])
        said = [hint] + [m.hint for m in check.mistakes]
        assert LIKELY in results[i].message and any(h in results[i].message for h in said), results[i].message
        results = judge_cases(check, cases, _outputs(other, cases), kind)
        assert not results[i].passed and not results[base].passed, (kind, [r.message for r in results])
        assert hint not in results[i].message, results[i].message


def test_the_dropout_hint_needs_the_same_inputs_to_pass_without_dropout():
    """The issue's cases: a mask filled with 0, a mask after the softmax, sqrt(d_v): none is
    told 'dropout active in eval()'."""
    check = get_check("ch3.scaled_dot_product_attention")

    def mask_after_softmax(q, k, v, mask=None, dropout=0.0, training=False):
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)
        weights = weights * mask if mask is not None else weights
        return weights @ v, weights

    def sqrt_dv(q, k, v, mask=None, dropout=0.0, training=False):
        return sdpa(q * math.sqrt(q.size(-1) / v.size(-1)), k, v, mask)

    for wrong in (lambda *a: sdpa(*a, fill=0.0), mask_after_softmax, sqrt_dv):
        cases = make_cases(check, "hidden", 1)
        results = judge_cases(check, cases, _outputs(wrong, cases), "hidden")
        assert not all(r.passed for r in results)
        assert not any("dropout active in eval()" in r.message for r in results), [r.message for r in results]


# ---------------------------------------------------------------- a function that calls a wrong one

def test_a_check_names_the_wrong_function_it_calls():
    """In the notebook: feed_forward is right but calls a gelu that is not; the check says so."""
    namespace = {"torch": torch, "math": math}
    exec("def gelu(x):\n    return x * torch.sigmoid(1.702 * x)\n\n"  # noqa: S102 -- a student's cell
         "def feed_forward(x, W1, b1, W2, b2, dropout=0.0, training=False):\n"
         "    return gelu(x @ W1 + b1) @ W2 + b2\n", namespace)
    result = run_check("ch4.feed_forward", namespace["feed_forward"])
    assert not result.passed
    assert "your feed_forward calls your gelu, which fails its own check: fix gelu first" in result.message
    exec("def gelu(x):\n    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))\n"
         "\ndef feed_forward(x, W1, b1, W2, b2, dropout=0.0, training=False):\n"
         "    return gelu(x @ W1 + b1) @ W2\n", namespace)  # noqa: S102 -- now gelu is right, b2 forgotten
    result = run_check("ch4.feed_forward", namespace["feed_forward"])
    assert not result.passed and "fix gelu first" not in result.message, result.message


def test_the_grader_names_the_wrong_function_a_failed_one_calls():
    from llmcourse.grading.checks import CheckResult
    from llmcourse.grading.records import CheckCall
    from llmcourse.grading.scan import references

    calls = {name: CheckCall(f"ch4.{name}", "visible") for name in ("gelu", "feed_forward", "layer_norm")}
    results = {calls["gelu"]: CheckResult("ch4.gelu", "visible", False),
               calls["feed_forward"]: CheckResult("ch4.feed_forward", "visible", False),
               calls["layer_norm"]: CheckResult("ch4.layer_norm", "visible", False)}
    cells = [{"id": "gelu", "source": "def gelu(x):\n    return x"},
             {"id": "ff", "source": "def feed_forward(x, W1, b1, W2, b2):\n    return gelu(x @ W1 + b1) @ W2 + b2"}]
    note_failing_helpers(results, {c: get_check(c.check_id) for c in calls.values()}, references(cells))
    assert results[calls["feed_forward"]].notes == [
        "your feed_forward calls your gelu, which fails its own check: fix gelu first (its report says how), "
        "then check feed_forward again"]
    assert not results[calls["gelu"]].notes and not results[calls["layer_norm"]].notes


# ---------------------------------------------------------------- a case that raises

def test_a_case_that_raises_names_the_case_and_the_students_line():
    code = ("def causal_mask(T):\n    if T > 8:\n        raise ValueError('too long')\n"
            "    return torch.ones(T, T, dtype=torch.bool).tril()\n")
    linecache.cache["<cell 5>"] = (len(code), None, code.splitlines(True), "<cell 5>")  # as IPython does
    namespace = {"torch": torch}
    exec(compile(code, "<cell 5>", "exec"), namespace)  # noqa: S102 -- a student's cell
    result = run_check("ch3.causal_mask", namespace["causal_mask"], kind="hidden", seed=0)
    failed = [c for c in result.cases if not c.passed]
    assert [c.label for c in failed] == [c.label for c in make_cases(get_check("ch3.causal_mask"), "hidden", 0)
                                         if c.args[0] > 8]
    assert failed[0].message.startswith("raised ValueError: too long (in causal_mask, line 3: "
                                        "`raise ValueError('too long')`)"), failed[0].message


# ---------------------------------------------------------------- a forbidden built-in, as written

@pytest.mark.parametrize("code, named", [
    ("import torch.nn.functional as F\ndef layer_norm(x, w, b, eps=1e-5):\n"
     "    return F.layer_norm(x, x.shape[-1:], w, b, eps)", "uses F.layer_norm (line 3)"),
    ("import torch\ndef layer_norm(x, w, b, eps=1e-5):\n    return torch.nn.LayerNorm(x.size(-1))(x)",
     "uses torch.nn.LayerNorm (line 3)"),
    ("import torch\ndef layer_norm(x, w, b, eps=1e-5):\n    return getattr(torch, 'layer_' 'norm')(x, x.shape[-1:])",
     "uses 'layer_norm'"),
])
def test_a_forbidden_builtin_is_named_as_the_student_wrote_it(code, named):
    found = cell_findings(code, runner_policy([get_check("ch4.layer_norm")]))
    assert found and found[0].startswith(named) and "LayerNorm" not in found[0].replace(named, ""), found


# ---------------------------------------------------------------- what the cases must catch

def feed_forward_dropout(x, W1, b1, W2, b2, dropout=0.0, training=False, *, where="output", rescale=True):
    h = x @ W1 + b1
    h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
    if training and dropout > 0 and where == "hidden":
        h = F.dropout(h, dropout, training=True)
    out = h @ W2 + b2
    if training and dropout > 0 and where == "output":
        out = F.dropout(out, dropout, training=True) * (1 if rescale else 1 - dropout)
    if training and dropout > 0 and where == "manual":
        out = out * (torch.rand_like(out) >= dropout) / (1 - dropout)
    return out


@pytest.mark.parametrize("variant, expect", [
    ({}, None), ({"where": "manual"}, None),
    ({"where": "none"}, "apply dropout to the output, after the second layer, in training"),
    ({"where": "hidden"}, "0.0% of the outputs are zero, expected about 40%: apply dropout to the output"),
    ({"rescale": False}, "they are unscaled"),
])
def test_feed_forward_dropout_in_training_is_graded(variant, expect):
    """ch4: leaving dropout out, dropping the hidden layer or not rescaling fail; a hand-made mask passes."""
    for seed in range(5):
        result = run_check("ch4.feed_forward", lambda *a: feed_forward_dropout(*a, **variant), "hidden", seed=seed)
        case = next(c for c in result.cases if "training=True (" in c.label)
        if expect is None:
            assert result.passed, result.message
        else:
            assert not case.passed and expect in case.message, result.message


@pytest.mark.parametrize("seed", range(20))
def test_adamw_with_eps_inside_the_square_root_fails_a_visible_case_on_every_draw(seed):
    from llmcourse.grading.checks_ch4 import _adamw_variant

    result = run_check("ch4.adamw_step", lambda *a: _adamw_variant(*a, eps_inside=True), seed=seed)
    assert not result.passed and "eps inside the square root" in result.message, result.message


MERGE_COPY = "def merge_pair(ids, pair, new_id):\n    ids = list(ids)\n" + MERGE_IN_PLACE.split("\n", 1)[1]
ADAMW_COPY = ADAMW_IN_PLACE.replace("param.mul_(1 - lr * weight_decay)", "param = param * (1 - lr * weight_decay)")


def _defined(source: str):
    namespace = {"torch": torch}
    exec(source, namespace)  # noqa: S102 -- a student's cell
    return namespace[source.split("(", 1)[0].removeprefix("def ")]


@pytest.mark.parametrize("check_id, wrong, right, named", [
    ("ch2.merge_pair", MERGE_IN_PLACE, MERGE_COPY, "changed its input ids in place"),
    ("ch4.adamw_step", ADAMW_IN_PLACE, ADAMW_COPY, "changed its input param in place"),
])
def test_a_function_that_changes_its_inputs_fails_where_the_task_forbids_it(check_id, wrong, right, named):
    """In the notebook: the right values, but the inputs written into, fail; a copy passes."""
    for kind in ("visible", "hidden"):
        result = run_check(check_id, _defined(wrong), kind, seed=3)
        assert not result.passed and named in result.message, result.message
        assert run_check(check_id, _defined(right), kind, seed=3).passed


def test_the_grader_sees_inputs_changed_in_the_answer_runner():
    """The same in the sandbox: the runner sends the arguments back, the parent compares them."""
    from llmcourse.grading.records import CheckCall, Report
    from llmcourse.grading.sandbox import Limits
    from llmcourse.grading.scoring import AnswerRunner

    given = {"id": "imports", "source": "import torch", "solution": False}
    calls = [CheckCall("ch2.merge_pair", "hidden"), CheckCall("ch4.adamw_step", "visible")]
    for (merge, adamw), passed in (((MERGE_IN_PLACE, ADAMW_IN_PLACE), False), ((MERGE_COPY, ADAMW_COPY), True)):
        cells = [given, {"id": "merge", "source": merge, "solution": True},
                 {"id": "adamw", "source": adamw, "solution": True}]
        with AnswerRunner(Limits(wall_s=120, cell_s=20)) as runner:
            results = runner.run(cells, calls, Report("s", "chX", "chX"))
        for call, res in results.items():
            assert res.passed is passed, res.message
            if not passed:
                assert "in place: the task asks to leave the inputs as they were" in res.message, res.message


def test_each_exercise_of_a_shared_cell_earns_its_own_share():
    """A right split_heads beside a wrong merge_heads earns split_heads' half of the cell."""
    from llmcourse.grading.checks import CheckResult
    from llmcourse.grading.records import Assignment, CheckCall, GradeCell, Report
    from llmcourse.grading.scoring import score_cells

    split, merge = CheckCall("ch3.split_heads", "visible"), CheckCall("ch3.merge_heads", "visible")
    quiz = (CheckCall("ch3.q1", "visible"), CheckCall("ch3.q1", "hidden", "c"))
    cells = (GradeCell("test_heads", 2.0, False, (split, merge)), GradeCell("test_q1", 1.0, True, quiz))
    results = {split: CheckResult("ch3.split_heads", "visible", True),
               merge: CheckResult("ch3.merge_heads", "visible", False),
               quiz[0]: CheckResult("ch3.q1", "visible", True), quiz[1]: CheckResult("ch3.q1", "hidden", False)}
    report = Report("s", "ch3", "ch3")
    score_cells(Assignment("ch3", "ch3", "", cells, frozenset(), {}, {}), results, report)
    heads, q1 = report.cells
    assert (heads.score, heads.max_score) == (1.0, 2.0)
    assert heads.messages[-1] == "points: split_heads 1/1, merge_heads 0/1"
    assert q1.score == 0.0 and not q1.messages[-1].startswith("points")  # one exercise, two calls: all or nothing


def test_a_call_that_raised_is_not_said_to_have_changed_its_inputs():
    """The runner sends arguments back only for a call that returned: one that raised is reported as raised."""
    from llmcourse.grading.records import CheckCall, Report
    from llmcourse.grading.sandbox import Limits
    from llmcourse.grading.scoring import AnswerRunner

    cells = [{"id": "imports", "source": "import torch", "solution": False},
             {"id": "merge", "source": "def merge_pair(ids, pair, new_id):\n    raise ValueError('not yet')",
              "solution": True}]
    call = CheckCall("ch2.merge_pair", "visible")
    with AnswerRunner(Limits(wall_s=120, cell_s=20)) as runner:
        res = runner.run(cells, [call], Report("s", "chX", "chX"))[call]
    assert not res.passed and "raised ValueError: not yet" in res.message and "in place" not in res.message, \
        res.message
