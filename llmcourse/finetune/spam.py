"""The SMS Spam Collection as classifier training data (chapter 5).

Messages are loaded from the course's copy of the corpus, balanced (as many ham as
spam), split, and padded into fixed-length token ids: what ``classifier`` trains on.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..config import check_int
from ..files import read_text
from .shared import seeded_split

SPAM_LABELS = ("ham", "spam")  # class 0 and class 1


def load_sms_spam() -> list[tuple[str, int]]:
    """The SMS Spam Collection as ``(message, label)`` pairs, label 0 = ham, 1 = spam."""
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
    """Undersample every class to the size of the smallest one.

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
    """The balanced SMS spam data (747 ham, 747 spam) split 70/10/20 into
    train (1,045), val (149) and test (300) ``(message, label)`` lists."""
    return seeded_split(balance_classes(load_sms_spam(), seed), fractions, seed)


class ClassificationDataset(Dataset):
    """Labelled texts as fixed-length token ids, right-padded with ``pad_id``.

    Every text is cut or padded to ``max_length`` tokens (default: the longest text),
    so batches stack without a collate function. Build the val and test sets with the
    train set's ``max_length``. Items are ``(input_ids (max_length,), label ())``.
    ``pad_id`` defaults to the tokenizer's ``<|endoftext|>`` (``tokenizer.eot_token``):
    a special token that ``encode`` never produces for ordinary text, which is what
    lets ``last_token_logits`` find where the padding starts.
    """

    def __init__(self, examples: Sequence[tuple[str, int]], tokenizer, max_length: int | None = None,
                 pad_id: int | None = None):
        if not examples:
            raise ValueError("ClassificationDataset needs at least one (text, label) example")
        encoded = [tokenizer.encode(text) for text, _ in examples]
        if any(not ids for ids in encoded):
            raise ValueError("ClassificationDataset got an empty text: it has no token to classify")
        if max_length is None:
            max_length = max(len(ids) for ids in encoded)
        check_int("max_length", max_length)
        pad_id = tokenizer.eot_token if pad_id is None else pad_id
        self.max_length, self.pad_id = max_length, pad_id
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
    """Train/val/test loaders over ``spam_splits``, all padded to one length with the
    tokenizer's ``<|endoftext|>`` (pass ``pad_id=tokenizer.eot_token`` to the losses).

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
