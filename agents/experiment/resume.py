"""Which state a run folder continues from: its lock, its config, its ``FAILED`` marker, its last good checkpoint.

:func:`previous_run` decides, before anything is written, whether :func:`agents.experiment.run.train`
starts a run or continues one (and from which checkpoint: :func:`agents.experiment.recovery.newest_checkpoint`),
or refuses the folder; :func:`exclusive` holds the folder for one process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from agents.experiment import faults, recovery
from agents.experiment.config import ConfigError, TrainConfig, config_dict, typed_config

log = logging.getLogger(__name__)

RESUME_MAY_CHANGE = ("resume", "progress_bar", "logger")  # keys a resumed run may set differently


def previous_run(cfg: TrainConfig, run_dir: Path, resume: bool) -> recovery.Found | None:
    """The checkpoint to continue from, or ``None`` for a fresh run.

    :raises ConfigError: the folder holds a run and ``resume`` is false, a run of another config,
        or a run that failed for a reason of the config or code.
    :raises RunFolderError: no checkpoint file of the folder verifies and loads.
    """
    marker = faults.read_marker(run_dir)
    if marker is not None and not marker.resumable:
        raise ConfigError(
            f"cannot resume {run_dir}: its training failed ({marker.cause}), a failure of the config or the code "
            "that resuming would repeat; start a new run folder"
        )
    holds_run = (run_dir / "config.yaml").is_file()
    if not holds_run:
        return None
    if not resume:
        raise holds_run_error(run_dir)
    check_same_config(cfg, run_dir)
    found = recovery.newest_checkpoint(run_dir)
    if marker is not None:
        log.warning("%s stopped because of its environment (%s); resuming it", run_dir, marker.cause)
    if found is None:
        log.info("%s has no checkpoint yet; starting it again from the beginning", run_dir)
    return found


def holds_run_error(run_dir: Path) -> ConfigError:
    """The refusal of a folder that holds a run when ``resume`` is false."""
    return ConfigError(f"{run_dir} already holds a run; pass resume=true to continue it, or use another folder")


@contextlib.contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir/.lock`` (released on exit, also if the process dies).

    :raises ConfigError: another process holds it.
    """
    with (run_dir / ".lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ConfigError(f"{run_dir} is in use by another process (lock on {run_dir / '.lock'})") from error
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_same_config(cfg: TrainConfig, run_dir: Path) -> None:
    """Refuse to resume a run folder with a config other than the one it was started with (``cfg``: this call's)."""
    saved_cfg = OmegaConf.load(run_dir / "config.yaml")
    saved = OmegaConf.to_container(saved_cfg, resolve=True)
    with contextlib.suppress(ConfigError):  # compare with the defaults filled in, as `given` has them
        saved = config_dict(typed_config(saved_cfg))
    given = config_dict(cfg)
    for key in RESUME_MAY_CHANGE:
        saved.pop(key, None)
        given.pop(key, None)
    for config in (saved, given):  # a label, not a setting: runs saved before it existed have the core's name
        if isinstance(config.get("model"), dict):
            config["model"].pop("name", None)
    difference = _first_difference(saved, given)
    if difference is not None:
        key, old, new = difference
        raise ConfigError(f"cannot resume {run_dir}: {key} was {old!r} in that run, got {new!r}")


def _first_difference(saved: Any, given: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(saved, dict) and isinstance(given, dict):
        for key in sorted(set(saved) | set(given)):
            found = _first_difference(saved.get(key), given.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if saved == given else (prefix.rstrip("."), saved, given)
