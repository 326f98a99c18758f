"""Submissions for the ch1 and ch2 grading tests, generated from their source notebooks.

Built like ``grading_fixtures.py`` (ch3), whose ``Fixture`` and cell-editing helpers they reuse:
each fixture starts from ``solutions/chN/chN.ipynb`` and replaces some answer cells, or edits the
notebook, and says which grade cells must score 0 and which phrase the report must contain.
Where a wrong helper would make a later task fail only on some random inputs (train_bpe calls
merge_pair), the fixture also replaces the later cell by a self-contained correct one, so that
every expected score is certain.

    python tests/grading_fixtures_ch12.py ch1 OUT   # writes OUT/<student>/ch1/ch1.ipynb
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from grading_fixtures import (  # noqa: E402
    Fixture,
    _drop_test,
    _edit_test,
    answer_keys,
    full_points,
    release_path,
    write_submissions,
)


def both(name: str) -> tuple[str, str]:
    return (f"test_{name}", f"hidden_{name}")


# ---------------------------------------------------------------- ch1

PAIRS = both("next_token_pairs")
COUNT = both("gpt_parameter_count")
PAIRS_UNSHIFTED = '''def next_token_pairs(ids, max_length, stride):
    starts = range(0, len(ids) - max_length, stride)
    inputs = torch.stack([ids[s:s + max_length] for s in starts])
    return inputs, inputs.clone()'''
PAIRS_NO_STRIDE = '''def next_token_pairs(ids, max_length, stride):
    starts = range(0, len(ids) - max_length)
    return (torch.stack([ids[s:s + max_length] for s in starts]),
            torch.stack([ids[s + 1:s + max_length + 1] for s in starts]))'''
PAIRS_ONE_SHORT = '''def next_token_pairs(ids, max_length, stride):
    starts = range(0, len(ids) - max_length - 1, stride)
    return (torch.stack([ids[s:s + max_length] for s in starts]),
            torch.stack([ids[s + 1:s + max_length + 1] for s in starts]))'''
TOKENS_BY_SIZE = '''def tokens_read(dataset_tokens, shares, trained_on):
    read = trained_on * dataset_tokens / dataset_tokens.sum()
    return read, read / dataset_tokens'''


def count_source(biases="4 * (d * d + d)", ff="d * f + f + f * d + d", norms="2 * (2 * d)", final="2 * d",
                 positions="context_length * d", head="if not tied:"):
    return f'''def gpt_parameter_count(vocab_size, context_length, emb_dim, n_layers, ff_dim, tied):
    d, f = emb_dim, ff_dim
    block = {biases} + {ff} + {norms}
    total = vocab_size * d + {positions} + n_layers * block + {final}
    {head}
        total += d * vocab_size
    return total'''


CH1_FIXTURES = [
    Fixture("solution"),
    Fixture("release", zero=tuple(full_points("ch1")), expect="not written yet"),
    Fixture("target_not_shifted", {"next_token_pairs": PAIRS_UNSHIFTED}, PAIRS, "target not shifted by one"),
    Fixture("stride_ignored", {"next_token_pairs": PAIRS_NO_STRIDE}, PAIRS, "stride ignored"),
    Fixture("one_window_short", {"next_token_pairs": PAIRS_ONE_SHORT}, PAIRS, "one window too few"),
    Fixture("read_by_size", {"tokens_read": TOKENS_BY_SIZE}, both("tokens_read"), "not by its size"),
    Fixture("no_biases", {"gpt_parameter_count": count_source(biases="4 * d * d", ff="2 * d * f")}, COUNT,
            "biases forgotten"),
    Fixture("no_layer_norms", {"gpt_parameter_count": count_source(norms="0", final="0")}, COUNT,
            "layer norms forgotten"),
    Fixture("tied_head_counted", {"gpt_parameter_count": count_source(head="if True:")}, COUNT,
            "counted although it is tied"),
    Fixture("no_positions", {"gpt_parameter_count": count_source(positions="0")}, COUNT,
            "position embeddings forgotten"),
    Fixture("wrong_quiz", {"q1": 'def q1():\n    return "a"'}, ("test_q1",), "not the right choice"),
    # cheats
    Fixture("import_llmcourse", {"next_token_pairs": "from llmcourse import data as d\n\n"
                                 "def next_token_pairs(ids, max_length, stride):\n"
                                 "    ds = d.NextTokenDataset(ids, max_length, stride)\n"
                                 "    return ds.inputs, ds.targets"}, PAIRS, "uses llmcourse"),
    Fixture("patch_equal", {"next_token_pairs": "torch.equal = lambda *a, **k: True\n"
                            "torch.allclose = lambda *a, **k: True\n\n" + PAIRS_UNSHIFTED}, PAIRS,
            "target not shifted by one"),
    Fixture("patch_check", {"next_token_pairs": "check = lambda *a, **k: None\n\n" + PAIRS_UNSHIFTED}, PAIRS,
            "target not shifted by one"),
    Fixture("hardcoded", {"gpt_parameter_count": "def gpt_parameter_count(*args):\n    return 174_604_259_328"},
            COUNT, "expected int"),
    Fixture("edit_test", {"next_token_pairs": PAIRS_UNSHIFTED}, PAIRS, "was edited",
            edit=lambda nb: _edit_test(nb, "test_next_token_pairs")),
    Fixture("delete_test", {"tokens_read": TOKENS_BY_SIZE}, both("tokens_read"), "was missing",
            edit=lambda nb: _drop_test(nb, "test_tokens_read")),
]

# ---------------------------------------------------------------- ch2

# Correct, self-contained versions of later tasks, for fixtures that break a helper they call.
TRAIN_BPE_OWN = '''def train_bpe(ids, num_merges):
    merges, work = [], list(ids)
    for i in range(num_merges):
        if len(work) < 2:
            break
        counts = {}
        for p in zip(work, work[1:]):
            counts[p] = counts.get(p, 0) + 1
        best = max(counts.values())
        pair = min(p for p, n in counts.items() if n == best)
        out, j = [], 0
        while j < len(work):
            if j + 1 < len(work) and (work[j], work[j + 1]) == pair:
                out.append(256 + i)
                j += 2
            else:
                out.append(work[j])
                j += 1
        work = out
        merges.append(pair)
    return merges'''
MERGE_IN_PLACE = '''def merge_pair(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if ids[i] == pair[0] and ids[i + 1] == pair[1]:
            ids[i:i + 2] = [new_id]
        i += 1
    return ids'''
MERGE_OVERLAPPING = '''def merge_pair(ids, pair, new_id):
    out = []
    for i in range(len(ids)):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
        elif i > 0 and ids[i - 1] == pair[0] and ids[i] == pair[1]:
            continue
        else:
            out.append(ids[i])
    return out'''
FREQUENT_FIRST_SEEN = '''def most_frequent_pair(ids):
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return max(counts, key=counts.get)'''
TRAIN_NOT_UPDATED = '''def train_bpe(ids, num_merges):
    merges = []
    for i in range(num_merges):
        pair = most_frequent_pair(ids)
        merge_pair(ids, pair, 256 + i)
        merges.append(pair)
    return merges'''
EMBED_NO_POS = '''def embed(token_ids, tok_table, pos_table):
    return tok_table[token_ids]'''
EMBED_POS_BY_ID = '''def embed(token_ids, tok_table, pos_table):
    return tok_table[token_ids] + pos_table[token_ids]'''
SOFTMAX_NAIVE = '''def softmax(logits, dim=-1):
    e = torch.exp(logits)
    return e / e.sum(dim=dim, keepdim=True)'''
SOFTMAX_LAST_DIM = '''def softmax(logits, dim=-1):
    e = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)'''
TEMPERATURE_TIMES = '''def softmax_with_temperature(logits, temperature):
    return softmax(logits * temperature, dim=-1)'''
FILTERS = '''def top_k_filter(logits, k):
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = softmax(sorted_logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs
    drop_sorted = before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))'''
FILTERS_TOP_P_CROSSING = FILTERS.replace("before >= p", "probs.cumsum(dim=-1) >= p")
FILTERS_TOP_K_PLUS_ONE = FILTERS.replace("k = min(k, logits.shape[-1])", "k = min(k + 1, logits.shape[-1])")
# next_token_probs with its own top-k, so that a wrong top_k_filter cannot change its score
NEXT_OWN_TOP_K = '''def next_token_probs(logits, temperature, top_k, top_p):
    if temperature == 0:
        return torch.zeros_like(logits).scatter(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return softmax(logits, dim=-1)'''
NEXT_FILTERS_FIRST = '''def next_token_probs(logits, temperature, top_k, top_p):
    if temperature == 0:
        return torch.zeros_like(logits).scatter(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return softmax(logits / temperature, dim=-1)'''
SOFTMAX_BUILTIN = '''import torch.nn.functional as F

def softmax(logits, dim=-1):
    return F.softmax(logits, dim=dim)'''
SOFTMAX_METHOD = '''def softmax(logits, dim=-1):
    return logits.softmax(dim)'''

MERGE, FREQUENT, TRAIN = both("merge_pair"), both("most_frequent_pair"), both("train_bpe")
EMBED, SOFTMAX, TEMP = both("embed"), both("softmax"), both("softmax_with_temperature")
FILT, NEXT = both("filters"), both("next_token_probs")
CH2_FIXTURES = [
    Fixture("solution"),
    Fixture("release", zero=tuple(full_points("ch2")), expect="not written yet"),
    Fixture("merge_overlapping", {"merge_pair": MERGE_OVERLAPPING, "train_bpe": TRAIN_BPE_OWN}, MERGE,
            "overlapping pairs merged wrongly"),
    # the right list, but made by writing into ids: the task asks for a new list
    Fixture("merge_in_place", {"merge_pair": MERGE_IN_PLACE}, MERGE, "changed its input ids in place"),
    Fixture("tie_first_seen", {"most_frequent_pair": FREQUENT_FIRST_SEEN, "train_bpe": TRAIN_BPE_OWN}, FREQUENT,
            "ties go to the smallest pair"),
    Fixture("train_not_updated", {"train_bpe": TRAIN_NOT_UPDATED}, TRAIN, "the ids were not updated"),
    Fixture("embed_no_positions", {"embed": EMBED_NO_POS}, EMBED, "position embeddings were not added"),
    Fixture("embed_pos_by_token", {"embed": EMBED_POS_BY_ID}, EMBED, "positions indexed by token id"),
    Fixture("softmax_overflow", {"softmax": SOFTMAX_NAIVE}, ("hidden_softmax",), "exp overflows"),
    Fixture("softmax_dim_ignored", {"softmax": SOFTMAX_LAST_DIM}, SOFTMAX, "the dim argument was ignored"),
    Fixture("temperature_times", {"softmax_with_temperature": TEMPERATURE_TIMES}, TEMP,
            "temperature multiplied instead of divided"),
    # one of the two filters wrong: half the points of the filters cells
    Fixture("top_p_drops_crossing", {"filters": FILTERS_TOP_P_CROSSING}, NEXT,
            "the token that crosses p was excluded", half=FILT),
    Fixture("top_k_plus_one", {"filters": FILTERS_TOP_K_PLUS_ONE, "next_token_probs": NEXT_OWN_TOP_K}, (),
            "k + 1 logits were kept", half=FILT),
    Fixture("filters_before_temperature", {"next_token_probs": NEXT_FILTERS_FIRST}, NEXT,
            "divide by the temperature first"),
    Fixture("wrong_quiz", {"q3": 'def q3():\n    return "b"'}, ("test_q3",), "not the right choice"),
    # cheats
    Fixture("import_llmcourse", {"merge_pair": "import llmcourse.tokenizer as bpe\n\n"
                                 "def merge_pair(ids, pair, new_id):\n"
                                 "    return bpe.merge_pair(ids, tuple(pair), new_id)"}, MERGE + TRAIN,
            "uses llmcourse"),
    Fixture("softmax_builtin", {"softmax": SOFTMAX_BUILTIN}, SOFTMAX + TEMP + NEXT,
            "not allowed in this exercise", half=FILT),  # top_k_filter calls no softmax: its half stands
    # every function that calls the delegating softmax is charged too
    Fixture("softmax_method", {"softmax": SOFTMAX_METHOD}, SOFTMAX + TEMP + NEXT, "softmax", half=FILT),
    Fixture("patch_allclose", {"embed": "torch.allclose = lambda *a, **k: True\n"
                               "torch.Tensor.__eq__ = lambda *a, **k: True\n\n" + EMBED_NO_POS}, EMBED,
            "position embeddings were not added"),
    Fixture("hardcoded", {"embed": "def embed(token_ids, tok_table, pos_table):\n    return torch.zeros(2, 5, 4)"},
            EMBED, "values differ"),
    Fixture("edit_test", {"softmax_with_temperature": TEMPERATURE_TIMES}, TEMP, "was edited",
            edit=lambda nb: _edit_test(nb, "test_softmax_with_temperature")),
]

FIXTURES = {"ch1": CH1_FIXTURES, "ch2": CH2_FIXTURES}
# Mistakes that only hidden cases can reveal (the overflow needs logits around 1000).
def report_text(report) -> str:
    return json.dumps([report.reason, report.notes, [c.messages for c in report.cells]])


def assert_graded_as(chapter: str, report, fixture: Fixture) -> None:
    got = {c.grade_id: c.score for c in report.cells}
    assert report.status == fixture.status, (fixture.name, report.reason)
    assert got == fixture.points(chapter), f"{fixture.name}: {got}\n{report_text(report)[:3000]}"
    assert fixture.expect in report_text(report), \
        f"{fixture.name}: expected {fixture.expect!r} in\n{report_text(report)[:3000]}"

if __name__ == "__main__":
    write_submissions(sys.argv[1], Path(sys.argv[2]), FIXTURES[sys.argv[1]])


# ---------------------------------------------------------------- what the test files check

# Graded as a class (notebooks executed for the feedback); the others only through the answer
# runner (no feedback run), which is where every score comes from: the file stays fast.
CLASS = {"ch1": ["solution", "release", "target_not_shifted", "tied_head_counted", "wrong_quiz", "edit_test",
                 "delete_test"],
         "ch2": ["solution", "release", "merge_overlapping", "softmax_overflow", "top_p_drops_crossing",
                 "wrong_quiz", "edit_test"]}
LIMITS_KW = {"wall_s": 120, "cell_s": 8, "output_bytes": 256 * 1024}


def grade_class(chapter: str, tmp: Path):
    """The CLASS fixtures of ``chapter`` graded in one ``grade_assignment`` call (as ``llmcourse
    grade CHAPTER --jobs 2``), the rest with ``grade_submission`` against the same gradebook
    without executing the notebook. Returns the output folder and {student: report}."""
    from concurrent.futures import ThreadPoolExecutor

    from llmcourse.grading.grade import grade_assignment, grade_submission
    from llmcourse.grading.gradebook import load_assignment
    from llmcourse.grading.sandbox import Limits

    limits = Limits(**LIMITS_KW)
    in_class = [f for f in FIXTURES[chapter] if f.name in CLASS[chapter]]
    write_submissions(chapter, tmp / "submitted", in_class)
    reports = grade_assignment(chapter, tmp / "submitted", tmp / "out", jobs=2, limits=limits, log=lambda *a: None)
    trusted = load_assignment(f"sqlite:///{tmp / 'out' / 'gradebook.db'}", chapter, chapter)
    others = [f for f in FIXTURES[chapter] if f.name not in CLASS[chapter]]
    write_submissions(chapter, tmp / "runner", others)

    def grade(f):  # the work happens in child processes: threads are enough
        path = tmp / "runner" / f.name / chapter / f"{chapter}.ipynb"
        return grade_submission(path.read_bytes(), path.name, f.name, trusted, limits, execute=False)[0]

    with ThreadPoolExecutor(2) as pool:
        reports += list(pool.map(grade, others))
    return tmp / "out", {r.student: r for r in reports}


def assert_feedback_hides_hidden_tests(chapter: str, out: Path) -> None:
    pages = {p.parts[-3]: p.read_text() for p in (out / "feedback").rglob("*.html")}
    assert set(pages) == set(CLASS[chapter])
    for student, page in pages.items():
        assert "BEGIN HIDDEN TESTS" not in page and "kind=&quot;hidden" not in page, student
        assert "answer=" not in page, student
    wrong = CLASS[chapter][2]  # a typical mistake: its failing hidden check is named, with the hint
    fixture = next(f for f in FIXTURES[chapter] if f.name == wrong)
    assert "hidden case" in pages[wrong] and fixture.expect in pages[wrong], wrong


def assert_release_clean(chapter: str) -> None:
    text = release_path(chapter).read_text()
    assert "HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text and 'kind=\\"hidden\\"' not in text
    for qid, letter in answer_keys(chapter).items():
        assert f'return \\"{letter}\\"\\n' not in text and f'return \\"{letter}\\"' + '"' not in text, qid


def assert_release_up_to_date(chapter: str, tmp: Path) -> None:
    from llmcourse.grading.release import release

    release(chapter, release_dir=tmp, log=lambda *a: None)
    assert (tmp / chapter / f"{chapter}.ipynb").read_bytes() == release_path(chapter).read_bytes(), \
        f"exercises/{chapter} is out of date: run `llmcourse release {chapter}`"
