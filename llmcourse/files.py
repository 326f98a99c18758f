"""Files on disk: the course's data files, and writing any file safely.

Chapter 1 introduces the data; every later chapter reads it through here. The bottom
layer of the package, with ``config``: it imports nothing from the rest of ``llmcourse``.

* ``DATA_FILES`` lists every public file the course uses, with its URL, sha256 and
  licence. ``fetch(name)`` finds a verified copy: in the data directory
  (``LLMCOURSE_DATA_DIR``), then in the cache (``LLMCOURSE_CACHE_DIR``, default
  ``~/.cache/llmcourse``), else downloads it.
* ``atomic_write_bytes`` writes a file so that a reader (or a process killed
  mid-write) sees the old file or the new one, never half of one, with the
  permissions asked for (default: its owner's alone). Downloads, tokenizers, models,
  checkpoints and the grader's outputs are all written with it.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

# --- Writing files -------------------------------------------------------------------


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o600,
                       folder_mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one,
    never a half-written one: write a temporary file beside it, fsync, rename.

    The file gets the permissions ``mode`` (default 0600: only its owner reads it), set on the
    temporary file before any byte is written, so no one else ever reads more than ``mode``
    allows. Missing parent folders are made, with ``folder_mode`` when given (else as the
    umask says); folders that exist are left as they are.
    """
    path = Path(path)
    make_folders(path.parent, folder_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # make the rename itself durable


def make_folders(path: str | os.PathLike, mode: int | None = None) -> None:
    """Make folder ``path`` and its missing parents. With ``mode``, each folder made here gets
    exactly those permissions (never more while it is made: the umask only narrows
    ``mkdir``'s); folders that already exist are not changed."""
    path = Path(path)
    if mode is None:
        path.mkdir(parents=True, exist_ok=True)
        return
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode)
        except FileExistsError:  # made meanwhile by someone else: theirs
            continue
        os.chmod(folder, mode)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- The registry of data files --------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    """One public data file: where it comes from and how to check it.

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
    """The sha256 of a file, in hex.

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


def _check_sha256(name: str, actual: str, where: str) -> None:
    expected = DATA_FILES[name].sha256
    if actual != expected:
        raise ChecksumError(
            f"{name}: {where} has the wrong sha256\n"
            f"  expected {expected}\n  actual   {actual}\n"
            f"Replace it with the file from {DATA_FILES[name].url}"
        )


def fetch(name: str) -> Path:
    """The path of a verified copy of the course data file ``name``.

    Looks in the data directory (``LLMCOURSE_DATA_DIR``), then the cache, then
    downloads from the file's public URL into the cache. Every copy is checked
    against the registry's sha256: a wrong copy in the data directory raises
    ``ChecksumError``; a wrong copy in the cache is downloaded again.
    """
    if not isinstance(name, str) or name not in DATA_FILES:
        raise ValueError(f"unknown data file {name!r}; known files: {', '.join(sorted(DATA_FILES))}")
    local_dir = data_dir()
    if local_dir is not None and (local_dir / name).is_file():
        _check_sha256(name, sha256_of(local_dir / name), f"the copy at {local_dir / name}")
        return local_dir / name
    cached = cache_dir() / name
    if cached.is_file():
        try:
            _check_sha256(name, sha256_of(cached), f"the copy at {cached}")
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
    """Download ``name`` (the course's files are a few MB at most, so in memory), take
    it out of its zip archive if it comes in one, check its sha256, and only then write
    it to ``target``: a failure leaves nothing behind."""
    entry = DATA_FILES[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with urllib.request.urlopen(entry.url, timeout=60) as response:
        shutil.copyfileobj(response, buffer)
    data = buffer.getvalue()
    if entry.zip_member is not None:
        try:
            with zipfile.ZipFile(buffer) as archive:
                data = archive.read(entry.zip_member)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ValueError(f"{name}: the download from {entry.url} is not a zip archive "
                             f"holding {entry.zip_member}: {exc}") from exc
    _check_sha256(name, hashlib.sha256(data).hexdigest(), f"the download from {entry.url}")
    atomic_write_bytes(target, data)


def read_text(name: str) -> str:
    """The contents of data file ``name`` as UTF-8 text."""
    return fetch(name).read_text(encoding="utf-8")
