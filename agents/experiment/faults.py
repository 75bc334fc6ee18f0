"""Why a run stopped, told apart: a failure of the environment (resumable) or of the config or code (not).

A failure of the *environment* is one the machine causes and a person can remove: the operating
system refused an operation (any ``OSError``: no space left, a read-only or vanished file system,
an I/O error, a lost connection), memory ran out (``MemoryError``, CUDA or CPU allocator
out-of-memory), torch could not finish writing a file, or W&B failed. Training that stops for
such a reason leaves a run folder whose last good checkpoint ``resume=true`` continues once the
cause is gone. Every other exception is a failure of the configuration or the code: resuming would
only repeat it, so ``resume`` refuses the folder. Signals are handled before any of this
(:mod:`agents.experiment.interrupt`: a checkpoint, then a resumable stop).

The ``FAILED`` marker of a run folder records which kind stopped it (:func:`mark_failed`,
:func:`read_marker`); a marker written before kinds existed reads as a code failure.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.experiment.atomic import DiskFullError, atomic_write_text, format_bytes, free_bytes, mount_point

log = logging.getLogger(__name__)

FAILED = "FAILED"  # marker of a run folder whose training raised: its kind and cause
ENVIRONMENT, CODE = "environment", "code"
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed", "inline_container.cc", "unexpected pos")
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "not enough memory")
_OS_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "an input/output error (a failing disk or network file system)",
    errno.ENOENT: "it vanished (was the folder or its file system removed or unmounted?)",
    errno.ESTALE: "its network file system handle went stale (was it unmounted?)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOMEM: "out of memory",
}


class RunFolderError(ValueError):
    """A run folder that cannot be used as it is: no checkpoint or model file that verifies and
    loads, or files from an incompatible version of the suite. Nothing in the folder was changed."""


class EnvironmentFailureError(RuntimeError):
    """Training stopped because the environment failed; ``resume=true`` continues from the last good checkpoint.

    :param run_dir: the run folder.
    :param cause: the failure (see :func:`is_environmental`).
    :param last_good: where the last good checkpoint is and how many frames it holds, in words
        (``None``: there is none yet; resuming starts the run again).
    """

    def __init__(self, run_dir: Path, cause: str, last_good: str | None) -> None:
        kept = f"the last good checkpoint ({last_good}) is kept" if last_good else f"{run_dir} holds no good checkpoint"
        super().__init__(f"training stopped: {cause}; {kept}; resume=true continues once the cause is gone")
        self.run_dir, self.cause, self.last_good = run_dir, cause, last_good

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (sweep launchers send errors between processes)
        return type(self), (self.run_dir, self.cause, self.last_good)


def is_environmental(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised ``from``) is a failure of the environment."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _environmental(current):
            return True
        current = current.__cause__
    return False


def _environmental(error: BaseException) -> bool:
    if isinstance(error, (OSError, MemoryError)):
        return True
    if type(error).__module__.split(".")[0] == "wandb":
        return True
    text = str(error)
    if isinstance(error, RuntimeError):
        return type(error).__name__ == "OutOfMemoryError" or any(
            marker in text for marker in (*_TORCH_WRITE_FAILED, *_OUT_OF_MEMORY)
        )
    return False


def describe(error: BaseException, where: Path | None = None) -> str:
    """``error`` in words a person understands: the cause and the file, no traceback.

    :param where: the folder the failing work wrote into, for free space when the error names no file.
    """
    if isinstance(error, DiskFullError):
        return str(error)
    if isinstance(error, OSError):
        filename = error.filename
        cause = _OS_CAUSES.get(error.errno or 0, error.strerror or str(error))
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            place = Path(filename) if filename else where
            if place is not None:
                target = f" writing {filename}" if filename else f" under {place}"
                return f"{cause}{target} ({_free_on(place)})"
        return f"{cause}: {filename}" if filename else f"{cause} ({type(error).__name__}: {error})"
    if isinstance(error, MemoryError) or any(marker in str(error) for marker in _OUT_OF_MEMORY):
        return f"out of memory ({_last_line(error)})" if _last_line(error) else "out of memory"
    if any(marker in str(error) for marker in _TORCH_WRITE_FAILED):
        place = where or Path.cwd()
        written = f"torch could not finish writing a file under {place} ({_last_line(error)})"
        return f"{written}; is the disk full? {_free_on(place)}"
    if error.__cause__ is not None and is_environmental(error.__cause__):
        return describe(error.__cause__, where)
    return f"{type(error).__name__}: {_last_line(error)}"


def _free_on(place: Path) -> str:
    """``1.8 MB free on /mnt/runs``: the space left on ``place``'s file system."""
    free = free_bytes(place)
    return f"{'unknown' if free is None else format_bytes(free)} free on {mount_point(place)}"


def _last_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else ""


@dataclass(frozen=True)
class Marker:
    """What a run folder's ``FAILED`` marker says.

    :param kind: :data:`ENVIRONMENT` (resumable) or :data:`CODE` (refused).
    :param cause: the failure in one line.
    """

    kind: str
    cause: str

    @property
    def resumable(self) -> bool:
        """Whether ``resume`` continues the folder (an environmental failure)."""
        return self.kind == ENVIRONMENT


def mark_failed(run_dir: Path, error: BaseException) -> Marker:
    """Write ``run_dir/FAILED``: the kind of failure (:func:`is_environmental`) and its cause.

    A full disk may refuse the marker too: that is logged, and the folder then resumes as one
    stopped by a kill.
    """
    environmental = is_environmental(error)
    marker = Marker(ENVIRONMENT if environmental else CODE, " ".join(describe(error, run_dir).split()))
    then = (
        "resume=true continues from the last good checkpoint once the cause is gone"
        if environmental
        else "refused (resuming would repeat the failure); start a new run folder"
    )
    try:
        atomic_write_text(run_dir / FAILED, f"kind: {marker.kind}\ncause: {marker.cause}\nresume: {then}\n")
    except OSError as failure:
        log.warning("could not write %s (%s)", run_dir / FAILED, describe(failure, run_dir))
    else:
        log.error("training failed (%s: %s); %s marks %s", marker.kind, marker.cause, FAILED, run_dir)
    return marker


def read_marker(run_dir: Path) -> Marker | None:
    """The ``FAILED`` marker of ``run_dir``, or ``None`` if it has none."""
    path = run_dir / FAILED
    if not path.is_file():
        return None
    text = path.read_text()
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    if fields.get("kind") in (ENVIRONMENT, CODE) and "cause" in fields:
        return Marker(fields["kind"], fields["cause"])
    return Marker(CODE, " ".join(text.split()))  # a marker from before kinds: the exception's last line


def clear_marker(run_dir: Path) -> None:
    """Remove the ``FAILED`` marker of an environmental failure when its run continues."""
    (run_dir / FAILED).unlink(missing_ok=True)
