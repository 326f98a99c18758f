"""Chapters 1-2: the course's data files and next-token (input, target) pairs.

* ``DATA_FILES`` lists every public file the course uses, with its URL,
  sha256 and licence. ``fetch(name)`` finds a verified copy: in the data
  directory (``LLMCOURSE_DATA_DIR``), then in the cache
  (``LLMCOURSE_CACHE_DIR``, default ``~/.cache/llmcourse``), else downloads it.
* ``NextTokenDataset`` and ``create_dataloader`` turn a text into the
  self-supervised training pairs of chapter 1: the target of every position is
  the next token.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

# --- The registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    """Chapter 1: one public data file: where it comes from and how to check it.

    ``zip_member`` is set when ``url`` points to a zip archive holding the file;
    ``sha256`` is then the hash of the extracted file (an archive's own bytes
    may differ between mirrors).
    """

    url: str
    sha256: str
    license: str
    description: str
    zip_member: str | None = None


_SMS_ZIP = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"

DATA_FILES: dict[str, DataFile] = {
    "the-verdict.txt": DataFile(
        url="https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
        sha256="b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
        license="public domain",
        description='"The Verdict", a 1908 short story by Edith Wharton (about 5,100 GPT-2 tokens)',
    ),
    "tinyshakespeare.txt": DataFile(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        license="public domain",
        description="about 1.1 MB of Shakespeare's plays, a small pretraining corpus",
    ),
    "SMSSpamCollection": DataFile(
        url=_SMS_ZIP,
        zip_member="SMSSpamCollection",
        sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
        license="CC BY 4.0 (Almeida and Gómez Hidalgo, UCI Machine Learning Repository)",
        description="SMS Spam Collection v.1: 5,574 'label<TAB>text' lines, 4,827 ham and 747 spam",
    ),
    "instruction-data.json": DataFile(
        url="https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",
        sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
        license="Apache-2.0",
        description="1,100 instruction/input/output records for instruction fine-tuning",
    ),
    "gpt2.tiktoken": DataFile(
        # Shipped as whisper/assets/gpt2.tiktoken in the openai-whisper sdist on PyPI (20250625).
        url="https://raw.githubusercontent.com/openai/whisper/main/whisper/assets/gpt2.tiktoken",
        sha256="306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
        license="MIT",
        description="GPT-2's 50,256 byte-pair merge ranks in tiktoken's format",
    ),
}


class ChecksumError(ValueError):
    """A data file's bytes do not match the sha256 the registry records."""


def data_dir() -> Path | None:
    """The directory of ready-made copies, from ``LLMCOURSE_DATA_DIR`` (None if unset)."""
    value = os.environ.get("LLMCOURSE_DATA_DIR")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Where downloads are kept: ``LLMCOURSE_CACHE_DIR``, else ``~/.cache/llmcourse``."""
    value = os.environ.get("LLMCOURSE_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "llmcourse"


# --- Fetching -------------------------------------------------------------------------


def sha256_of(path: str | os.PathLike) -> str:
    """Chapter 1: the sha256 of a file, in hex.

    Remembered per (path, size, modification time), so checking the same
    unchanged file again costs one ``stat``.
    """
    path = Path(path).resolve()
    stat = path.stat()
    return _sha256_of_version(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of_version(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        # Chunks keep memory flat for files of any size.
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, name: str) -> None:
    expected = DATA_FILES[name].sha256
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"{name}: the copy at {path} has the wrong sha256\n"
            f"  expected {expected}\n  actual   {actual}\n"
            f"Replace it with the file from {DATA_FILES[name].url}"
        )


def fetch(name: str) -> Path:
    """Chapter 1: the path of a verified copy of the course data file ``name``.

    Looks in the data directory (``LLMCOURSE_DATA_DIR``), then the cache, then
    downloads from the file's public URL into the cache. Every copy is checked
    against the registry's sha256: a wrong copy in the data directory raises
    ``ChecksumError``; a wrong copy in the cache is downloaded again.
    """
    if not isinstance(name, str) or name not in DATA_FILES:
        raise ValueError(f"unknown data file {name!r}; known files: {', '.join(sorted(DATA_FILES))}")
    local_dir = data_dir()
    if local_dir is not None and (local_dir / name).is_file():
        _verify(local_dir / name, name)
        return local_dir / name
    cached = cache_dir() / name
    if cached.is_file():
        try:
            _verify(cached, name)
            return cached
        except ChecksumError:
            cached.unlink()  # the cache is ours: a stale or damaged copy is replaced
    try:
        _download(name, cached)
    except OSError as exc:  # urllib's URLError and timeouts are OSErrors
        looked = f"{local_dir / name} and {cached}" if local_dir else f"{cached} (LLMCOURSE_DATA_DIR is not set)"
        raise FileNotFoundError(
            f"could not get data file {name!r}.\n"
            f"  looked in: {looked}\n"
            f"  download from {DATA_FILES[name].url} failed: {exc}\n"
            f"Offline? Put a copy of {name} in a folder and set LLMCOURSE_DATA_DIR to that folder."
        ) from exc
    return cached


def _download(name: str, target: Path) -> None:
    """Download ``name`` to ``target`` via a temporary file in the same
    directory, verified before an atomic rename: a failure leaves nothing behind."""
    entry = DATA_FILES[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        if entry.zip_member is not None:
            _extract_in_place(Path(tmp), name)
        _verify(Path(tmp), name)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _extract_in_place(path: Path, name: str) -> None:
    """Replace the downloaded zip archive at ``path`` by the member that is data file ``name``."""
    entry = DATA_FILES[name]
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(entry.zip_member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{name}: the download from {entry.url} is not a zip archive holding {entry.zip_member}: {exc}") from exc
    path.write_bytes(data)


def read_text(name: str) -> str:
    """Chapter 1: the contents of data file ``name`` as UTF-8 text."""
    return fetch(name).read_text(encoding="utf-8")


# --- Next-token pairs -----------------------------------------------------------------


class NextTokenDataset(Dataset):
    """Chapters 1-2: sliding windows over token ids, each with its next-token targets.

    Window ``k`` starts at ``k * stride``: its input is ``ids[k*stride : k*stride + max_length]``
    and its target is the same window shifted one token right, so the label
    of every position is the token that follows it. ``dataset[k]`` is
    ``(input, target)``, two LongTensors of shape (max_length,).
    """

    def __init__(self, token_ids: Sequence[int] | torch.Tensor, max_length: int, stride: int):
        for arg, value in (("max_length", max_length), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be an int >= 1, got {value!r}")
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
    """Chapter 2: batches of next-token pairs from a text (or its token ids).

    A string is encoded with ``tokenizer`` (default: GPT-2's), its special
    tokens such as ``<|endoftext|>`` allowed. Each batch is ``(inputs,
    targets)``, both LongTensors of shape (batch_size, max_length). With
    ``seed``, the shuffle order is the same on every run.
    """
    if isinstance(text_or_ids, str):
        if tokenizer is None:
            # Imported here: the tokenizer module itself fetches its files through this one.
            from llmcourse.tokenizer import gpt2_tokenizer

            tokenizer = gpt2_tokenizer()
        token_ids = tokenizer.encode(text_or_ids, allowed_special="all")
    elif isinstance(text_or_ids, (Sequence, torch.Tensor)):
        token_ids = text_or_ids
    else:
        raise TypeError(f"expected a str or a sequence of token ids, got {type(text_or_ids).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
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
