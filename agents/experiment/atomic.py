"""Atomic file writes: write to a unique temporary file beside the target, then rename.

A reader (or a resumed run) sees either the previous file or the complete new one, never a
partial write, even if the process is killed mid-write; concurrent writers never share a
temporary file. A write that finds the disk full raises :class:`DiskFullError`, which says how
much was needed and how much was free where.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space left on the device while writing ``path`` (``errno`` ``ENOSPC``).

    :param path: the file being written.
    :param needed: bytes the whole file needs (``None``: not known).
    :param free: bytes free on its file system when the write failed (``None``: not known).
    """

    def __init__(self, path: Path, needed: int | None, free: int | None) -> None:
        super().__init__(errno.ENOSPC, "No space left on device", str(path))
        self.path, self.needed, self.free = path, needed, free

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (sweep launchers send errors between processes)
        return type(self), (self.path, self.needed, self.free)

    def __str__(self) -> str:
        needs = "" if self.needed is None else f"it needs {format_bytes(self.needed)}; "
        free = "unknown" if self.free is None else format_bytes(self.free)
        return f"no space left on device writing {self.path} ({needs}{free} free on {mount_point(self.path)})"


def format_bytes(size: int) -> str:
    """``size`` bytes for a person: ``512 B``, ``2.7 MB``, ``1.2 GB`` (powers of 1000, as ``df -H``)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def free_bytes(path: Path) -> int | None:
    """Bytes free on the file system holding ``path`` (or its nearest existing folder); ``None``: unknown."""
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing folder)."""
    folder = path.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def write_durably(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` (a new or temporary file) and ``fsync`` it.

    :raises DiskFullError: the file system ran out of space (``ENOSPC`` or ``EDQUOT``).
    """
    try:
        with path.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        if error.errno in _NO_SPACE:
            raise DiskFullError(path, len(data), free_bytes(path)) from error
        raise


@contextlib.contextmanager
def atomic_path(path: Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    The temporary name keeps ``path``'s last suffix (``.zip``, ``.gif``, ...) for writers that
    infer the format from it. Parent folders are created.

    :param durable: ``fsync`` the file before the rename (checkpoints: survive a machine crash).
    :raises DiskFullError: the file system ran out of space (``ENOSPC``, ``EDQUOT``) on the way.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(descriptor)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, DiskFullError):  # name the file being written, not its temporary name
            raise DiskFullError(path, error.needed, free_bytes(path)) from error.__cause__
        if error.errno in _NO_SPACE:
            raise DiskFullError(path, None, free_bytes(path)) from error
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` (missing keys left empty) under the header ``columns`` atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
