"""Checks of the chapter 2 assignment: BPE, embeddings, softmax and next-token sampling.

Registered on import (``registry.py`` imports every chapter's module). References are
``llmcourse.tokenizer`` and ``llmcourse.generate``, wrapped to return plain tuples and
tensors. Token id lists travel as lists (a JSON round trip turns tuples into lists),
so a student's ``pair`` argument is a list ``[a, b]`` in the notebook and the grader alike.
"""
from __future__ import annotations

import math

import torch

from ..generate import next_token_probs, softmax_with_temperature, top_k_filter, top_p_filter
from ..tokenizer import merge_pair, most_frequent_pair, pair_counts
from .checks import Case, Check, Mistake, draw_showing_mistakes, randint, randn, register, register_quiz
from .policy import SOFTMAX

# The chapter writes softmax by hand, and its sampling steps build on that softmax.
CH2_CONCEPTS = (SOFTMAX,)

# ---------------------------------------------------------------- one BPE step


def reference_merge_pair(ids, pair, new_id):
    return tuple(merge_pair(ids, tuple(pair), new_id))


def _byte_ids(gen: torch.Generator, n: int, alphabet: int = 5) -> list[int]:
    """n ids drawn from a few random byte values, so that pairs repeat."""
    letters = torch.randperm(256, generator=gen)[:alphabet]
    return [int(letters[i]) for i in torch.randint(0, alphabet, (n,), generator=gen)]


def _merge_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        ids = _byte_ids(gen, 20, 4)
        a = ids[3]
        run = [a, a, a]  # an odd run: (a, a) overlaps itself
        ids = ids[:5] + run + ids[5:] + run
        return [Case((ids, [ids[0], ids[1]], 256), f"{len(ids)} ids, pair {[ids[0], ids[1]]}"),
                Case((ids, [a, a], 257), f"{len(ids)} ids with runs of three {a}, pair [{a}, {a}]")]
    ids = _byte_ids(gen, 40, 6) + [300, 301, 300, 301, 301]
    x = randint(gen, 0, 256)
    return [
        Case(([x] * 5, [x, x], 256), f"[{x}] * 5, pair [{x}, {x}]: two merges and one left over",
             hint="overlapping pairs: scan left to right and skip both ids of a merged pair",
             base="ids above 255 (earlier merges), pair [300, 301]"),
        Case((ids, [300, 301], 302), "ids above 255 (earlier merges), pair [300, 301]"),
        Case((ids, [ids[-7], ids[-6]], 400), "a pair that ends the list"),
        Case(([x], [x, x], 256), "a single id: nothing to merge"),
        Case(([], [1, 2], 256), "an empty list"),
    ]


def _merge_overlapping(ids, pair, new_id):
    """Replaces every position where the pair starts, also inside a run (7 7 7 -> new new)."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 1
            if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
                continue
            i += 1
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)


def _merge_keeps_second(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
        else:
            out.append(ids[i])
        i += 1
    return tuple(out)


def _merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if ids[i] == pair[0] and ids[i + 1] == pair[1]:
            return tuple(ids[:i]) + (new_id,) + tuple(ids[i + 2:])
    return tuple(ids)


register(Check(
    id="ch2.merge_pair", function_name="merge_pair", reference=reference_merge_pair, draw_cases=_merge_cases,
    mistakes=(
        Mistake(_merge_overlapping, "overlapping pairs merged wrongly: scan left to right, and after a merge "
                "continue after both ids, so [7, 7, 7] with pair (7, 7) gives [new, 7]"),
        Mistake(_merge_keeps_second, "after merging a pair, skip its second id too (advance by 2): the merged "
                "id replaces both"),
        Mistake(_merge_first_only, "only the first occurrence was merged: replace every occurrence"),
    ),
    concepts=CH2_CONCEPTS, keeps_inputs=True,  # "return a new list"
))

# ---------------------------------------------------------------- the most frequent pair


def reference_most_frequent_pair(ids):
    return tuple(most_frequent_pair(pair_counts(ids)))


def _tied_ids(gen: torch.Generator, n_pairs: int, repeats: int, low: int = 0) -> tuple[list[int], list[tuple[int, int]]]:
    """``repeats`` rounds of ``n_pairs`` distinct pairs of ids in [low, 100), each followed by a
    filler id (100..249) used once: the pairs tie, listed largest first so that the pair seen
    first and the smallest pair disagree."""
    values = torch.randperm(100 - low, generator=gen).add(low)[:2 * n_pairs].tolist()
    pairs = sorted(((values[2 * i], values[2 * i + 1]) for i in range(n_pairs)), reverse=True)
    fillers = iter(torch.randperm(150, generator=gen).add(100).tolist())
    ids = []
    for _ in range(repeats):
        for a, b in pairs:
            ids += [a, b, next(fillers)]
    return ids, pairs


def _frequent_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        ids, _ = _tied_ids(gen, 3, 2)
        x = randint(gen, 0, 10)  # smaller than the other pairs' ids: (x, x) wins the tie
        others, _ = _tied_ids(gen, 2, 2, low=10)
        return [Case((ids,), f"{len(ids)} ids where 3 pairs tie with 2 occurrences each"),
                Case((others[:3] + [x, x, x] + others[3:],),
                     f"a run of three {x}: ({x}, {x}) occurs twice (overlapping), as do two other pairs")]
    ids, _ = _tied_ids(gen, 4, 3)
    x = randint(gen, 0, 50)
    a, b = randint(gen, 60, 130), randint(gen, 130, 200)
    return [
        Case((ids,), "4 pairs tie with 3 occurrences each",
             hint="ties go to the smallest pair: compare the first ids, then the second",
             base="a clear winner: one pair occurs 3 times, no other more than twice"),
        Case(([a, b] * 3 + [x],), "a clear winner: one pair occurs 3 times, no other more than twice"),
        Case(([x, x, x, 200, 201, 200, 201],), "(x, x) twice by overlapping, (200, 201) twice"),
        Case((_byte_ids(gen, 60, 4),), "60 random ids from 4 values"),
        Case(([x, 300],), "two ids: one pair"),
    ]


def _counts(ids):
    return {p: n for p, n in pair_counts(ids).items()}


def _first_seen(ids):
    counts = _counts(ids)  # insertion order: first occurrence
    best = max(counts.values())
    return next(p for p, n in counts.items() if n == best)


def _largest(ids):
    counts = _counts(ids)
    return max(counts, key=lambda p: (counts[p], p))


def _non_overlapping(ids):
    counts, i = {}, 0
    seen_at = {}
    for i in range(len(ids) - 1):
        pair = (ids[i], ids[i + 1])
        if seen_at.get(pair) == i - 1:  # overlaps the previous occurrence: not counted
            continue
        seen_at[pair] = i
        counts[pair] = counts.get(pair, 0) + 1
    return max(counts, key=lambda p: (counts[p], -p[0], -p[1]))


_TIE_RULE = ("ties go to the smallest pair (compare the first ids, then the second), not to the pair "
             "seen first")
register(Check(
    id="ch2.most_frequent_pair", function_name="most_frequent_pair", reference=reference_most_frequent_pair,
    draw_cases=_frequent_cases,
    mistakes=(
        Mistake(_first_seen, _TIE_RULE),
        Mistake(_largest, "ties go to the smallest pair, not the largest"),
        Mistake(_non_overlapping, "overlapping pairs count separately: [7, 7, 7] holds (7, 7) twice"),
    ),
    concepts=CH2_CONCEPTS,
))

# ---------------------------------------------------------------- a tiny BPE trainer


def reference_train_bpe(ids, num_merges):
    """The merges, in order, of the chapter's toy loop: the i-th merge gets id 256 + i."""
    merges, work = [], list(ids)
    for i in range(num_merges):
        if len(work) < 2:
            break
        pair = most_frequent_pair(pair_counts(work))
        work = merge_pair(work, pair, 256 + i)
        merges.append(tuple(pair))
    return tuple(merges)


def _train_variant(ids, num_merges, *, update=True, same_id=False, first_seen=False):
    merges, work = [], list(ids)
    for i in range(num_merges):
        if len(work) < 2:
            break
        pair = _first_seen(work) if first_seen else reference_most_frequent_pair(work)
        new = merge_pair(work, pair, 256 if same_id else 256 + i)
        if update:
            work = new
        merges.append(tuple(pair))
    return tuple(merges)


_TRAIN_MISTAKES = (
    Mistake(lambda ids, n: _train_variant(ids, n, update=False), "the ids were not updated: each merge "
            "must count pairs in the ids produced by the previous merge"),
    Mistake(lambda ids, n: _train_variant(ids, n, same_id=True), "every merge needs a new id: "
            "256 for the first, 257 for the second, ..."),
    Mistake(lambda ids, n: _train_variant(ids, n, first_seen=True), _TIE_RULE),
)


def _train_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        # With a tie to break among the merges, so that each typical mistake shows.
        args = draw_showing_mistakes(lambda: (_byte_ids(gen, 60, 4), 6), reference_train_bpe, _TRAIN_MISTAKES)
        return [Case(args, "60 ids from 4 byte values, 6 merges")]
    return [
        Case((_byte_ids(gen, 120, 6), 12), "120 ids from 6 byte values, 12 merges"),
        Case((_byte_ids(gen, 30, 3), 1), "one merge"),
        Case((_byte_ids(gen, 6, 2), 10), "6 ids, 10 merges asked: stop when fewer than 2 ids are left"),
    ]


register(Check(
    id="ch2.train_bpe", function_name="train_bpe", reference=reference_train_bpe, draw_cases=_train_cases,
    mistakes=_TRAIN_MISTAKES, concepts=CH2_CONCEPTS,
))

# ---------------------------------------------------------------- token + position embeddings


def reference_embed(token_ids, tok_table, pos_table):
    """(B, T) ids -> (B, T, d): the token's row plus its position's row."""
    T = token_ids.size(-1)
    return tok_table[token_ids] + pos_table[:T]


def _embed_cases(gen: torch.Generator, kind: str) -> list[Case]:
    def case(B, T, V, C, d, dtype=torch.float32):
        return (torch.randint(0, V, (B, T), generator=gen), randn(gen, V, d, dtype=dtype),
                randn(gen, C, d, dtype=dtype))

    if kind == "visible":
        return [Case(case(2, 5, 10, 12, 4), "ids (2, 5), tok_table (10, 4), pos_table (12, 4)")]
    return [
        Case(case(3, 7, 50, 7, 8), "ids (3, 7) filling the whole context of 7 positions"),
        Case(case(1, 1, 20, 16, 6), "one token: ids (1, 1)"),
        Case(case(2, 4, 30, 40, 5, torch.float64), "float64 tables: the output keeps their dtype", exact_dtype=True),
    ]


register(Check(
    id="ch2.embed", function_name="embed", reference=reference_embed, draw_cases=_embed_cases,
    mistakes=(
        Mistake(lambda ids, tok, pos: tok[ids], "the position embeddings were not added"),
        Mistake(lambda ids, tok, pos: tok[ids] + pos[ids], "positions indexed by token id: the position row "
                "of token t is row t of pos_table, i.e. pos_table[:T], whatever the token"),
        Mistake(lambda ids, tok, pos: tok[ids] + pos[:ids.size(-1)].flip(0), "positions in reverse order"),
    ),
    concepts=CH2_CONCEPTS,
))

# ---------------------------------------------------------------- softmax


def reference_softmax(logits, dim=-1):
    return torch.softmax(logits, dim=dim)


def _softmax_naive(logits, dim=-1):
    e = torch.exp(logits)
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        return [Case((randn(gen, 3, 5) * 3,), "logits (3, 5)"),
                Case((randn(gen, 4, 6) * 3, 0), "logits (4, 6), dim=0")]
    masked = randn(gen, 3, 8) * 2
    masked[:, 5:] = float("-inf")
    plain = randn(gen, 2, 6) * 5
    return [
        Case((plain,), "logits (2, 6)"),
        Case((plain + 1000,), "the same logits plus 1000",
             hint="exp overflows for large logits (exp(1000) is inf, inf / inf is nan): subtract the largest "
                  "logit first, which does not change the result", base="logits (2, 6)"),
        Case((randn(gen, 2, 3, 4), 1), "logits (2, 3, 4), dim=1"),
        Case((masked,), "logits with -inf entries (filtered tokens get probability 0)"),
        Case((randn(gen, 5, 7, dtype=torch.float64),), "float64 logits: the output keeps the dtype", exact_dtype=True),
    ]


register(Check(
    id="ch2.softmax", function_name="softmax", reference=reference_softmax, draw_cases=_softmax_cases,
    mistakes=(
        Mistake(_softmax_naive, "exp overflows for large logits (exp(1000) is inf, inf / inf is nan): "
                "subtract the largest logit along dim first"),
        Mistake(lambda x, dim=-1: torch.softmax(x, dim=-1), "the dim argument was ignored: normalise along dim"),
        Mistake(lambda x, dim=-1: torch.softmax(x, dim=0 if dim in (-1, x.ndim - 1) else -1),
                "softmax over the wrong dimension: the probabilities must sum to 1 along dim"),
        Mistake(lambda x, dim=-1: torch.exp(x) / torch.exp(x).sum(), "normalised by the sum over the whole "
                "tensor: sum along dim only (keepdim=True)"),
    ),
    concepts=CH2_CONCEPTS, rtol=1e-5, atol=1e-7,
))

# ---------------------------------------------------------------- temperature, top-k, top-p


def _logits(gen: torch.Generator, kind: str) -> list[tuple[torch.Tensor, str]]:
    """Logits of a few shapes (visible: one); every case gets its own parameter after them."""
    if kind == "visible":
        return [(randn(gen, 2, 10) * 2, "logits (2, 10)")]
    return [(randn(gen, 3, 50) * 3, "logits (3, 50)"), (randn(gen, 1, 7), "logits (1, 7)"),
            (randn(gen, 2, 3, 12, dtype=torch.float64), "float64 logits (2, 3, 12)")]


def _with(gen: torch.Generator, kind: str, name: str, values: tuple) -> list[Case]:
    return [Case((x, v), f"{label}, {name}{v}") for (x, label), v in zip(_logits(gen, kind), values)]


def _temperature_cases(gen: torch.Generator, kind: str) -> list[Case]:
    return _with(gen, kind, "temperature ", (0.5,) if kind == "visible" else (2.0, 0.1, 1.3))


register(Check(
    id="ch2.softmax_with_temperature", function_name="softmax_with_temperature",
    reference=softmax_with_temperature, draw_cases=_temperature_cases,
    mistakes=(
        Mistake(lambda x, t: torch.softmax(x * t, dim=-1), "temperature multiplied instead of divided: "
                "p = softmax(logits / T), so T < 1 sharpens and T > 1 flattens"),
        Mistake(lambda x, t: torch.softmax(x, dim=-1) / t, "divide the logits by T before the softmax, "
                "not the probabilities after it"),
    ),
    concepts=CH2_CONCEPTS, rtol=1e-5, atol=1e-7,
))


def _top_k_cases(gen: torch.Generator, kind: str) -> list[Case]:
    cases = _with(gen, kind, "k=", (3,) if kind == "visible" else (10, 1, 7))
    if kind == "hidden":
        tied = torch.tensor([[1.0, 3.0, 2.0, 3.0, 0.5, 3.0]])
        cases.append(Case((tied, 2), "ties: three logits equal the 2nd largest, k=2",
                          hint="ties: every logit equal to the k-th largest is kept", base=cases[0].label))
        cases.append(Case((randn(gen, 2, 5), 9), "k=9 larger than the vocabulary of 5: keep everything"))
    return cases


def _top_k_off_by_one(logits, k):
    return top_k_filter(logits, k + 1) if k < logits.size(-1) else logits.clone()


register(Check(
    id="ch2.top_k_filter", function_name="top_k_filter", reference=top_k_filter, draw_cases=_top_k_cases,
    mistakes=(
        Mistake(_top_k_off_by_one, "off by one: k + 1 logits were kept; the threshold is the k-th largest "
                "(index k - 1 when sorted in descending order)"),
        Mistake(lambda x, k: top_k_filter(x, k - 1) if k > 1 else x.masked_fill(torch.ones_like(x).bool(),
                float("-inf")), "off by one: only k - 1 logits were kept"),
        Mistake(lambda x, k: top_k_filter(x, k).nan_to_num(neginf=0.0), "the other logits must become "
                "-inf (probability 0 after the softmax); 0 is an ordinary logit"),
        Mistake(lambda x, k: -top_k_filter(-x, k), "the k smallest logits were kept: keep the k largest"),
    ),
    concepts=CH2_CONCEPTS, rtol=0, atol=0,
))


def _exact_tie(gen: torch.Generator, p: float, base: str) -> Case:
    """Probabilities 1/2, 1/4, 1/8, 1/8 exactly (exp of ln 4, ln 2, 0 is exact in float32 and
    float64), so every way of summing them reaches p exactly: the tie rule decides."""
    logits = torch.tensor([[0.0, math.log(4), 0.0, math.log(2)]])[:, torch.randperm(4, generator=gen)]
    return Case((logits, p), f"exact tie: probabilities 1/2, 1/4, 1/8, 1/8 and p={p}",
                hint="a token is needed only while the more likely tokens sum to less than p: when they "
                     "already sum to exactly p, drop it", base=base)


def _top_p_cases(gen: torch.Generator, kind: str) -> list[Case]:
    cases = _with(gen, kind, "p=", (0.8,) if kind == "visible" else (0.9, 0.5, 0.3))
    if kind == "visible":
        return cases + [_exact_tie(gen, 0.5, base=cases[0].label)]
    cases.append(Case((randn(gen, 2, 6) + torch.tensor([6.0, 0, 0, 0, 0, 0]), 0.05),
                      "p=0.05, smaller than the top token's probability: keep the top token",
                      hint="the most likely token is always kept, even when its probability alone exceeds p",
                      base=cases[0].label))
    cases.append(Case((randn(gen, 2, 9), 1.0), "p=1.0: keep everything"))
    return cases + [_exact_tie(gen, 0.75, base=cases[0].label)]


def _top_p_variant(logits, p, *, include_crossing=True, sort=True, strict=False):
    if sort:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    else:
        sorted_logits, order = logits, torch.arange(logits.size(-1)).expand_as(logits)
    probs = torch.softmax(sorted_logits, dim=-1)
    cum = probs.cumsum(dim=-1)
    before = cum - probs
    drop_sorted = ((before > p) if strict else (before >= p)) if include_crossing else (cum >= p)
    drop = drop_sorted.scatter(-1, order, drop_sorted) if sort else drop_sorted
    return logits.masked_fill(drop, float("-inf"))


register(Check(
    id="ch2.top_p_filter", function_name="top_p_filter", reference=top_p_filter, draw_cases=_top_p_cases,
    mistakes=(
        Mistake(lambda x, p: _top_p_variant(x, p, include_crossing=False), "the token that crosses p was "
                "excluded: keep the most likely tokens up to and including the one whose cumulative "
                "probability reaches p"),
        Mistake(lambda x, p: _top_p_variant(x, p, sort=False), "the cumulative sum must run over the tokens "
                "sorted from most to least likely, not in vocabulary order"),
        Mistake(lambda x, p: _top_p_variant(x, p, strict=True), "a token whose more likely tokens already "
                "sum to exactly p was kept: the nucleus is complete then (>= p, not > p)"),
        Mistake(lambda x, p: _top_p_variant(x, p).nan_to_num(neginf=0.0), "the other logits must become -inf "
                "(probability 0 after the softmax); 0 is an ordinary logit"),
    ),
    concepts=CH2_CONCEPTS, rtol=0, atol=0,
))


def _probs_filters_first(logits, temperature, top_k, top_p):
    if temperature == 0:
        return next_token_probs(logits, 0, None, None)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.softmax(logits / temperature, dim=-1)


def _probs_p_then_k(logits, temperature, top_k, top_p):
    if temperature == 0:
        return next_token_probs(logits, 0, None, None)
    logits = logits / temperature
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    return torch.softmax(logits, dim=-1)


_PROBS_MISTAKES = (
    Mistake(_probs_filters_first, "divide by the temperature first, then filter: top-p looks at the "
            "probabilities after the temperature"),
    Mistake(_probs_p_then_k, "top-k comes before top-p: top-p's cumulative sum runs over the tokens top-k kept"),
    Mistake(lambda x, t, k, p: torch.softmax(x * t, dim=-1) if t else next_token_probs(x, 0, k, p),
            "temperature multiplied instead of divided"),
)


def _probs_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        # The order of the steps must matter on these logits, so that each typical mistake shows.
        args = draw_showing_mistakes(lambda: (randn(gen, 2, 12) * 1.5, 0.7, 3, 0.8), next_token_probs,
                                     _PROBS_MISTAKES, 1e-5, 1e-7)
        return [Case(args, "logits (2, 12), temperature 0.7, top_k=3, top_p=0.8"),
                Case((randn(gen, 2, 12) * 2, 0.0, None, None), "logits (2, 12), temperature 0: greedy")]
    return [
        Case((randn(gen, 3, 40) * 2, 1.5, None, 0.6), "temperature 1.5, top_p=0.6, no top-k"),
        Case((randn(gen, 3, 40) * 2, 0.5, 5, None), "temperature 0.5, top_k=5, no top-p"),
        Case((randn(gen, 1, 30) * 3, 2.0, 20, 0.4), "temperature 2.0, top_k=20, top_p=0.4"),
        Case((randn(gen, 4, 9, dtype=torch.float64), 0.0, 3, 0.9), "float64, temperature 0 (greedy): "
             "filters change nothing"),
        Case((randn(gen, 2, 8), 1.0, None, None), "temperature 1, no filters: the model's own distribution"),
    ]


register(Check(
    id="ch2.next_token_probs", function_name="next_token_probs", reference=next_token_probs,
    draw_cases=_probs_cases, mistakes=_PROBS_MISTAKES, concepts=CH2_CONCEPTS, rtol=1e-5, atol=1e-7,
))

# ---------------------------------------------------------------- concept questions

register_quiz("ch2.q1", "ch2.q2", "ch2.q3")
