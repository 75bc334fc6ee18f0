"""The last good state of a run folder: the newest checkpoint that verifies and loads.

:func:`newest_checkpoint` tries ``checkpoint.pt``, then ``checkpoint.1.pt``, ... (see
:mod:`agents.experiment.manifest`); a file whose checksum differs from the one written, or that does
not load, is skipped with the reason, and the first good one is used. Training resumes from it,
and evaluation uses its policy when ``model.zip`` is damaged (:mod:`agents.experiment.run_folder`).
:func:`set_aside` renames the damaged files (nothing is deleted) so that the next checkpoint never
keeps a damaged file in place of a good one.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.experiment import checkpoint, manifest
from agents.experiment.faults import RunFolderError

log = logging.getLogger(__name__)

DAMAGED = ".damaged"  # suffix of a damaged file set aside
_DAMAGE = (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, UnicodeDecodeError)  # unreadable bytes
_DAMAGE_TEXT = ("PytorchStreamReader", "central directory", "zip archive", "unexpected EOF", "truncated")


@dataclass
class Found:
    """The checkpoint used and the newer ones skipped.

    :param state: what :func:`agents.experiment.checkpoint.load` returned.
    :param path: its file.
    :param skipped: ``(file, reason)`` of each newer file that was damaged or did not load.
    """

    state: dict[str, Any]
    path: Path
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        """Training frames it holds."""
        return int(self.state["num_timesteps"])


def newest_checkpoint(run_dir: Path) -> Found | None:
    """The newest checkpoint of ``run_dir`` that verifies against the manifest and loads.

    Each skipped file is logged with its reason and the one used instead.

    :returns: ``None`` when the folder holds no checkpoint file.
    :raises RunFolderError: it holds checkpoint files but none verifies and loads (each named with
        its reason), or its manifest comes from a newer version of the suite.
    """
    files = manifest.family(run_dir, checkpoint.CHECKPOINT)
    if not files:
        return None
    entries = manifest.read(run_dir)
    judged = any(entry.name == checkpoint.CHECKPOINT for entry in entries or [])
    skipped: list[tuple[Path, str]] = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as error:
            skipped.append((path, f"{path} cannot be read ({type(error).__name__}: {error})"))
            continue
        damage = manifest.damage(path, data, entries, checkpoint.CHECKPOINT)
        if damage is None:
            try:
                found = Found(checkpoint.load(path, data), path, skipped)
            except RunFolderError as error:
                damage = str(error)
            except Exception as error:  # torch's and pickle's many ways to fail on bad bytes
                damage = unreadable(path, error, verified=judged)
            else:
                for _, reason in skipped:
                    log.warning("%s; using %s (%d frames) instead", reason, path.name, found.frames)
                return found
        skipped.append((path, damage))
    reasons = "; ".join(reason for _, reason in skipped)
    raise RunFolderError(
        f"no checkpoint of {run_dir} can be used: {reasons}; nothing was changed: "
        "put back a good copy of one of them, or start a new run folder"
    )


def unreadable(path: Path, error: BaseException, verified: bool) -> str:
    """Why ``path`` did not load, in words: damaged bytes, or a file of an incompatible version.

    :param verified: its bytes match the manifest (then they are as written: the version differs).
    """
    text = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
    if not verified and (isinstance(error, _DAMAGE) or any(marker in str(error) for marker in _DAMAGE_TEXT)):
        return f"{path} is damaged ({text})"
    return f"{path} cannot be read by this version of the suite ({text})"


def set_aside(paths: list[Path]) -> None:
    """Rename each damaged file to ``<name>.damaged`` (``.damaged.1``, ... if taken): kept, out of the way."""
    for path in paths:
        if not path.is_file():
            continue
        target = path.with_name(path.name + DAMAGED)
        index = 0
        while target.exists():
            index += 1
            target = path.with_name(f"{path.name}{DAMAGED}.{index}")
        path.rename(target)
        log.warning("set %s aside as %s", path.name, target.name)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Remove the temporary files of writes a killed process left behind (only while holding the folder)."""
    for name in (checkpoint.CHECKPOINT, "model.zip", manifest.MANIFEST):
        for path in run_dir.glob(f".{name}.*.tmp*"):
            path.unlink(missing_ok=True)
            log.info("removed %s, the unfinished write of a stopped process", path.name)


def last_good(run_dir: Path) -> str | None:
    """The newest checkpoint file the manifest verifies, in words (``<run>/checkpoint.pt, 64 frames``)."""
    try:
        entries = manifest.read(run_dir) or []
        frames = {entry.sha256: entry.frames for entry in entries if entry.name == checkpoint.CHECKPOINT}
        for path in manifest.family(run_dir, checkpoint.CHECKPOINT):
            digest = manifest.sha256(path.read_bytes())
            if digest in frames:
                return f"{path}, {frames[digest]} frames"
    except (RunFolderError, OSError):  # an unreadable folder: nothing to say
        return None
    return None
