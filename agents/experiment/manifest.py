"""Verified writes of a run folder's checkpoints and model file, and the manifest that checks them.

:func:`write_verified` writes a file's bytes to a temporary name, ``fsync``s them, reads them back
and compares their SHA-256, records size, checksum and frames in ``manifest.json``, and only then
renames the file into place, shifting the ``keep - 1`` files before it to ``<stem>.1<suffix>``,
``<stem>.2<suffix>``, ... (the oldest is replaced). So the last good file is never removed before
its successor is verified on disk, and a disk that fills up on the way leaves every earlier file as
it was.

:func:`damage` checks a file's bytes against the manifest. A file is verified by checksum, never by
name, so a crash between two renames leaves files that still verify. A family with no entry in the
manifest (a run folder from before manifests) is not judged here: its files are checked by loading.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from agents.experiment.atomic import atomic_path, atomic_write_text, format_bytes, write_durably
from agents.experiment.faults import RunFolderError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1  # of the manifest, and of the run folder's layout it describes


@dataclass(frozen=True)
class Entry:
    """One verified write.

    :param name: the name written under (the family: ``checkpoint.pt``, ``model.zip``).
    :param sha256: hex digest of its bytes.
    :param bytes: its size.
    :param frames: training frames it holds (``None``: adopted from a folder without a manifest).
    """

    name: str
    sha256: str
    bytes: int
    frames: int | None


def kept_name(name: str, index: int) -> str:
    """The name of the ``index``-th file before the newest of ``name``'s family (0: ``name`` itself)."""
    if index == 0:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{index}.{suffix}" if dot else f"{name}.{index}"


def family(run_dir: Path, name: str) -> list[Path]:
    """The files of ``name``'s family in ``run_dir``, newest first (``name``, then index 1, 2, ...)."""
    stem, dot, suffix = name.rpartition(".")
    found = {0: run_dir / name} if (run_dir / name).is_file() else {}
    pattern = f"{stem}.*.{suffix}" if dot else f"{name}.*"
    for path in run_dir.glob(pattern):
        index = path.name[len(stem) + 1 : len(path.name) - len(suffix) - 1] if dot else path.suffix[1:]
        if index.isdigit() and int(index) > 0 and path.is_file():
            found[int(index)] = path
    return [found[index] for index in sorted(found)]


def sha256(data: bytes | memoryview) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read(run_dir: Path) -> list[Entry] | None:
    """The entries of ``run_dir``'s manifest; ``None`` when it has none or it cannot be read (logged).

    :raises RunFolderError: the manifest comes from a newer version of the suite.
    """
    path = run_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        version = data["format"]
        entries = [Entry(**entry) for entry in data["files"]] if version == FORMAT else []
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("%s is damaged (%s: %s); checking the files by loading them", path, type(error).__name__, error)
        return None
    if version != FORMAT:
        raise RunFolderError(
            f"{path} comes from an incompatible version of the suite (run folder format {version!r}, "
            f"this suite reads {FORMAT}); use the version that wrote it"
        )
    return entries


def damage(path: Path, data: bytes, entries: list[Entry] | None, name: str) -> str | None:
    """Why ``data`` (the bytes of ``path``, of ``name``'s family) is damaged, or ``None`` if it is not known to be.

    :param entries: the manifest (:func:`read`); ``None`` or no entry of the family: not judged.
    """
    known = [entry for entry in entries or [] if entry.name == name]
    if not known:
        return None
    digest = sha256(data)
    if any(entry.sha256 == digest and entry.bytes == len(data) for entry in known):
        return None
    sizes = sorted({entry.bytes for entry in known})
    written = " or ".join(dict.fromkeys(format_bytes(size) for size in sizes))
    if all(len(data) < size for size in sizes):
        return f"{path} is damaged: truncated to {format_bytes(len(data))} ({written} written)"
    return (
        f"{path} is damaged: its checksum matches none recorded in {MANIFEST} "
        f"({format_bytes(len(data))} on disk, {written} written)"
    )


def write_verified(run_dir: Path, name: str, data: bytes | memoryview, frames: int, keep: int = 1) -> None:
    """Write ``data`` as ``run_dir/name``, verified on disk and recorded in the manifest, keeping ``keep`` files.

    :param frames: training frames the file holds (recorded).
    :param keep: files of the family kept: the new one and the ``keep - 1`` newest before it.
    :raises DiskFullError: no space for the file (everything written before is unchanged).
    :raises OSError: the bytes read back differ from those written, or another failure of the disk.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    target = run_dir / name
    digest = sha256(data)
    with atomic_path(target) as tmp:
        write_durably(tmp, data)
        if sha256(tmp.read_bytes()) != digest:
            raise OSError(errno.EIO, "the bytes read back differ from those written", str(target))
        _record(run_dir, name, Entry(name, digest, len(data), frames))
        older = family(run_dir, name)[: keep - 1]
        for index in range(len(older) - 1, -1, -1):  # oldest first: nothing is overwritten but the oldest
            os.replace(older[index], run_dir / kept_name(name, index + 1))
    log.debug("wrote %s (%d frames, %s, sha256 %s)", target, frames, format_bytes(len(data)), digest[:12])


def _record(run_dir: Path, name: str, new: Entry) -> None:
    """Write the manifest with ``new`` and the entries of the family's files still on disk.

    A family with no entries yet adopts its files as they are (a folder from before manifests).
    """
    entries = read(run_dir) or []
    known = {entry.sha256: entry for entry in entries if entry.name == name}
    kept: dict[str, Entry] = {}
    for path in family(run_dir, name):
        digest = sha256(path.read_bytes())
        if digest in known or not known:
            kept[digest] = known.get(digest, Entry(name, digest, path.stat().st_size, None))
    kept[new.sha256] = new
    others = [entry for entry in entries if entry.name != name]
    files = [asdict(entry) for entry in [*others, *kept.values()]]
    atomic_write_text(run_dir / MANIFEST, json.dumps({"format": FORMAT, "files": files}, indent=1) + "\n")
