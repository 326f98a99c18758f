"""Reading a file that a student or a sandbox could have made: the one way grading does it.

Everything under a submission's folder and everything a sandbox leaves in its scratch
folder is hostile until checked: a name can be a symlink to the instructor's solutions, a
FIFO that blocks a reader forever, a device such as ``/dev/zero`` that never ends, a hard
link, or a file of many gigabytes. ``read_untrusted`` walks the path one component at a
time without following symlinks (``O_NOFOLLOW`` at every step, so the file stays inside
the folder it is asked for), opens without blocking (``O_NONBLOCK``), and accepts only a
regular file with a single link and at most ``max_bytes`` bytes (checked on the open
descriptor, so the file cannot be swapped between the check and the read).
"""
from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UntrustedFile(ValueError):
    """A file that is not what it must be (missing, a link, not a regular file, too big)."""


class MissingFile(UntrustedFile):
    """The file (or a folder on its way) does not exist."""


def _size(n: int) -> str:
    return f"{n / 2**20:.3g} MB" if n >= 2**20 else f"{n:,} bytes"


def read_untrusted(folder: str | os.PathLike, parts: str | Sequence[str], max_bytes: int) -> bytes:
    """The bytes of the regular file ``folder/parts...``, or ``UntrustedFile`` saying why not.

    ``folder`` is trusted (the grader made it or was given it); every name in ``parts`` is
    not: each must be a plain name (no ``/``, not ``.`` or ``..``), every folder a real
    folder and the last a regular file of at most ``max_bytes``, none of them a symlink.
    """
    file_fd, shown, info = _open_untrusted(folder, parts)
    try:
        if info.st_nlink != 1:
            raise UntrustedFile(f"{shown} is a hard link ({info.st_nlink} names for one file)")
        if info.st_size > max_bytes:
            raise UntrustedFile(f"{shown} is too large ({_size(info.st_size)}; at most {_size(max_bytes)})")
        os.set_blocking(file_fd, True)
        chunks, left = [], max_bytes + 1  # one byte more than allowed shows a file that grew
        while left > 0 and (chunk := os.read(file_fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(file_fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise UntrustedFile(f"{shown} grew past {_size(max_bytes)} while it was read")
    return data


def untrusted_mtime(folder: str | os.PathLike, parts: str | Sequence[str]) -> float:
    """When the regular file ``folder/parts...`` was last modified (seconds since the epoch),
    found as ``read_untrusted`` finds a file (nothing followed), or ``UntrustedFile``."""
    file_fd, _, info = _open_untrusted(folder, parts)
    os.close(file_fd)
    return info.st_mtime


def _open_untrusted(folder: str | os.PathLike, parts: str | Sequence[str]) -> tuple[int, str, os.stat_result]:
    """A descriptor of the regular file ``folder/parts...`` opened without following a symlink
    or blocking, the path as messages show it, and its ``fstat``; the caller closes it."""
    names = [parts] if isinstance(parts, str) else list(parts)
    shown = "/".join(names)
    for name in names:
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise UntrustedFile(f"{shown!r}: {name!r} is not a plain file name")
    fd = os.open(folder, _DIR_FLAGS)
    try:
        for name in names[:-1]:
            try:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise MissingFile(f"{shown}: there is no {name}") from None
            except OSError:
                raise UntrustedFile(f"{shown}: {name} is not a folder (a symlink or a file?)") from None
            os.close(fd)
            fd = next_fd
        try:
            file_fd = os.open(names[-1], _FILE_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            raise MissingFile(f"{shown} does not exist") from None
        except OSError as e:  # ELOOP: a symlink
            raise UntrustedFile(f"{shown} cannot be opened as a plain file (a symlink?): {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        info = os.fstat(file_fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFile(f"{shown} is not a regular file (a FIFO, a device or a folder)")
    except BaseException:
        os.close(file_fd)
        raise
    return file_fd, shown, info


def untrusted_path(path: str | os.PathLike) -> tuple[Path, str]:
    """``(folder, name)`` for ``read_untrusted`` of a path given whole (a student's own notebook)."""
    path = Path(os.path.abspath(path))
    return path.parent, path.name
