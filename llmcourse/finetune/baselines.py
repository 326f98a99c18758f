"""Two classic spam filters to measure a fine-tuned classifier against (chapter 5).

A model's accuracy means little alone: ``digit_rule`` is chapter 1's one hand-made
feature ("five or more digits"), and ``BagOfWords`` is the standard learned text
classifier before neural networks, logistic regression on word counts. Both see the
same splits as the GPT classifier.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..config import check_int


def digit_rule(text: str, min_digits: int = 5) -> int:
    """1 (spam) when the text has at least ``min_digits`` digits, else 0 (ham)."""
    return int(sum(c.isdigit() for c in text) >= min_digits)


def words(text: str) -> list[str]:
    """The lower-cased words and numbers of a text: a bag of words' vocabulary."""
    return re.findall(r"[a-z0-9']+", text.lower())


class BagOfWords:
    """Logistic regression on word counts, fitted to labelled texts.

    The vocabulary is every word seen at least ``min_count`` times in training; a text
    becomes its count of each (log(1 + count), so one repeated word does not dominate),
    and one weight per word and class is fitted by L-BFGS on the cross-entropy plus an
    L2 penalty ``l2`` (without it, a few rare words would get huge weights).
    """

    def __init__(self, examples: Sequence[tuple[str, int]], min_count: int = 2, l2: float = 1e-3,
                 steps: int = 100):
        check_int("min_count", min_count)
        counts = Counter(word for text, _ in examples for word in words(text))
        self.vocabulary = {word: i for i, word in enumerate(sorted(w for w, n in counts.items() if n >= min_count))}
        x = self.features([text for text, _ in examples])  # (N, V)
        y = torch.tensor([label for _, label in examples])  # (N,)
        self.linear = torch.nn.Linear(len(self.vocabulary), int(y.max()) + 1, dtype=torch.float64)
        optimizer = torch.optim.LBFGS(self.linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(self.linear(x), y) + l2 * self.linear.weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), V): log(1 + count) of each vocabulary word in each text."""
        x = torch.zeros(len(texts), len(self.vocabulary), dtype=torch.float64)
        for row, text in enumerate(texts):
            for word, n in Counter(words(text)).items():
                if word in self.vocabulary:
                    x[row, self.vocabulary[word]] = torch.log1p(torch.tensor(float(n)))
        return x

    @torch.no_grad()
    def predict(self, texts: Sequence[str]) -> list[int]:
        """The class with the larger score, for each text."""
        return self.linear(self.features(texts)).argmax(dim=-1).tolist()


def accuracy(predictions: Sequence[int], examples: Sequence[tuple[str, int]]) -> float:
    """The share of ``examples`` whose label equals its prediction."""
    if len(predictions) != len(examples) or not examples:
        raise ValueError(f"expected one prediction per example, got {len(predictions)} for {len(examples)}")
    return sum(p == label for p, (_, label) in zip(predictions, examples)) / len(examples)
