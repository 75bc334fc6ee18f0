"""A disk that fills up, without privileges: writes under one folder raise ``ENOSPC`` at a chosen byte.

:class:`FullDisk` wraps the file objects that :meth:`pathlib.Path.open` returns for writing under
``folder`` (every write of the suite's run folder goes through it: atomic temporary files, CSVs,
JSON, the manifest, checkpoints and ``model.zip`` written from memory). Once ``budget`` bytes of
the matching files are written, the write that crosses it writes what fits and raises ``OSError``
``ENOSPC``, and so does every later write under the folder until :meth:`FullDisk.free` (space freed).
:func:`install_from_env` installs one in a child process (``FULL_DISK=<folder>:<prefix>:<skip>:<budget>``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import IO, Any

_REAL_OPEN = Path.open


class FullDisk:
    """Fail writes under ``folder`` once the disk is "full".

    :param folder: the folder whose writes are watched (it may not exist yet).
    :param budget: bytes of matching files written before the disk is full.
    :param prefix: only files whose name starts with it count (``""``: every file).
    :param skip: matching files written in full before counting starts (``2`` with the prefix
        ``.checkpoint.pt.``: the third checkpoint write fails).
    """

    def __init__(self, folder: Path, budget: int, prefix: str = "", skip: int = 0) -> None:
        self.folder, self.budget, self.prefix, self.skip = Path(folder).absolute(), budget, prefix, skip
        self.written = 0
        self.full = False
        self.snapshot: dict[str, bytes] | None = None  # the folder's files when the disk filled up

    def install(self) -> FullDisk:
        """Patch :meth:`pathlib.Path.open` (undo with :meth:`free`)."""
        disk = self

        def watched_open(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> IO[Any]:
            handle = _REAL_OPEN(path, mode, *args, **kwargs)
            writing = any(flag in mode for flag in "wax+")
            if writing and Path(path).absolute().is_relative_to(disk.folder):
                return _Handle(handle, disk, Path(path).name.startswith(disk.prefix))  # type: ignore[return-value]
            return handle

        Path.open = watched_open  # type: ignore[method-assign]
        return self

    def free(self) -> None:
        """Space freed: writes succeed again."""
        Path.open = _REAL_OPEN  # type: ignore[method-assign]

    def _fill(self) -> None:
        self.full = True
        self.snapshot = files(self.folder)


def files(folder: Path) -> dict[str, bytes]:
    """The bytes of every file under ``folder`` but the lock and temporary files, by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock" and not p.name.startswith(".")
    }


class _Handle:
    """A file object that stops writing when its :class:`FullDisk` is full."""

    def __init__(self, handle: IO[Any], disk: FullDisk, counted: bool) -> None:
        self._handle, self._disk, self._counted = handle, disk, counted
        if counted and disk.skip > 0:
            disk.skip -= 1
            self._counted = False

    def write(self, data: Any) -> int:
        disk = self._disk
        if disk.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if not self._counted:
            return self._handle.write(data)
        room = disk.budget - disk.written
        if len(data) <= room:
            disk.written += len(data)
            return self._handle.write(data)
        self._handle.write(data[: max(room, 0)])
        disk.written = disk.budget
        self._handle.flush()
        disk._fill()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def install_from_env() -> FullDisk | None:
    """Install the :class:`FullDisk` that ``FULL_DISK=<folder>:<prefix>:<skip>:<budget>`` describes, if set."""
    spec = os.environ.get("FULL_DISK")
    if not spec:
        return None
    folder, prefix, skip, budget = spec.rsplit(":", 3)
    return FullDisk(Path(folder), int(budget), prefix, int(skip)).install()
