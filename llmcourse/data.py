"""Next-token (input, target) pairs: the self-supervised training data of chapters 1-2.

``NextTokenDataset`` cuts a token stream into windows whose target at every position
is the next token; ``create_dataloader`` batches them from a text. The course's data
files themselves (registry, download, checks) are in ``files``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .config import check_int
from .tokenizer import gpt2_tokenizer


class NextTokenDataset(Dataset):
    """Sliding windows over token ids, each with its next-token targets.

    Window ``k`` starts at ``k * stride``: its input is ``ids[k*stride : k*stride + max_length]``
    and its target is the same window shifted one token right, so the label
    of every position is the token that follows it. ``dataset[k]`` is
    ``(input, target)``, two LongTensors of shape (max_length,).
    """

    def __init__(self, token_ids: Sequence[int] | torch.Tensor, max_length: int, stride: int):
        check_int("max_length", max_length)
        check_int("stride", stride)
        ids = torch.as_tensor(token_ids)
        if ids.ndim != 1 or (ids.numel() and (ids.is_floating_point() or ids.is_complex())):
            raise ValueError(f"token_ids must be a 1-D sequence of ints, got shape {tuple(ids.shape)} of {ids.dtype}")
        ids = ids.long()
        if len(ids) < max_length + 1:
            raise ValueError(
                f"got {len(ids)} tokens, but one window of max_length={max_length} "
                f"needs {max_length + 1} (its inputs plus the next token)"
            )
        # unfold makes views, not copies: (n_windows, max_length) with row k = ids[k*stride : k*stride+max_length].
        self.inputs = ids[:-1].unfold(0, max_length, stride)
        self.targets = ids[1:].unfold(0, max_length, stride)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]


def create_dataloader(
    text_or_ids: str | Sequence[int] | torch.Tensor,
    *,
    tokenizer=None,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
) -> DataLoader:
    """Batches of next-token pairs from a text (or its token ids).

    A string is encoded with ``tokenizer`` (default: GPT-2's), its special
    tokens such as ``<|endoftext|>`` allowed. Each batch is ``(inputs,
    targets)``, both LongTensors of shape (batch_size, max_length). With
    ``seed``, the shuffle order is the same on every run.
    """
    if isinstance(text_or_ids, str):
        if tokenizer is None:
            tokenizer = gpt2_tokenizer()
        token_ids = tokenizer.encode(text_or_ids, allowed_special="all")
    elif isinstance(text_or_ids, (Sequence, torch.Tensor)):
        token_ids = text_or_ids
    else:
        raise TypeError(f"expected a str or a sequence of token ids, got {type(text_or_ids).__name__}")
    check_int("batch_size", batch_size)
    dataset = NextTokenDataset(token_ids, max_length=max_length, stride=stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"only {len(dataset)} windows for batch_size={batch_size} with drop_last=True, "
            f"so there would be no batches; use more text, a smaller batch_size, or drop_last=False"
        )
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
    )
