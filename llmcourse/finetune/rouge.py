"""ROUGE-L: how much of a reference answer a response gets, in order (chapter 5).

The longest common subsequence of their words gives precision, recall and their
harmonic mean, F1. Plain Python: it scores any two strings.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence


def _words(text: str) -> list[str]:
    # rouge_score's default tokenizer (without stemming): lowercase, runs of a-z and 0-9.
    return re.findall(r"[a-z0-9]+", text.lower())


def lcs_length(a: Sequence, b: Sequence) -> int:
    """The length of the longest common subsequence of ``a`` and ``b``
    (dynamic programming, one row at a time: O(len(a) * len(b)) time)."""
    row = [0] * (len(b) + 1)  # row[j] = LCS of the part of a seen so far and b[:j]
    for x in a:
        previous = row[:]
        for j, y in enumerate(b, start=1):
            row[j] = previous[j - 1] + 1 if x == y else max(previous[j], row[j - 1])
    return row[-1]


def rouge_l_f1(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of a response against a reference answer.

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
    """The mean ROUGE-L F1 of each record's response against its "output"."""
    if not records:
        raise ValueError("mean_rouge_l got no records")
    return sum(rouge_l_f1(r[response_key], r["output"]) for r in records) / len(records)
