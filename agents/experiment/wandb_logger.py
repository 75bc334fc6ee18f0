"""A Weights & Biases run that never stops training: every failure becomes a warning.

W&B runs offline by default (no account, no network; ``wandb sync <run>/wandb/offline-run-*``
uploads later). ``online`` needs an API key; without one, or when the service cannot be
reached, the run falls back to offline logging with a warning. ``none`` (or ``disabled``)
gives an inactive run whose methods do nothing, so callers never branch on the logger.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)
MODES: tuple[str, ...] = ("offline", "online", "none", "disabled")


def _has_api_key() -> bool:
    """Whether an online run could authenticate without prompting (environment or ``~/.netrc``)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbRun:
    """A W&B run, or an inactive stand-in; use :meth:`start` to make one.

    :param run: the ``wandb`` run object, or ``None`` for an inactive run.
    """

    def __init__(self, run: Any = None) -> None:
        self._run = run

    @property
    def active(self) -> bool:
        """Whether calls reach W&B."""
        return self._run is not None

    @property
    def run_id(self) -> str | None:
        """The W&B run id (stored in checkpoints so a resumed run continues the same W&B run)."""
        return None if self._run is None else str(self._run.id)

    @property
    def directory(self) -> Path | None:
        """The folder of the W&B run files (``.../wandb/offline-run-*``), if active."""
        return None if self._run is None else Path(self._run.dir).parent

    @classmethod
    def start(
        cls,
        *,
        mode: str,
        project: str,
        run_dir: Path,
        config: Mapping[str, Any],
        name: str | None = None,
        group: str | None = None,
        job_type: str = "train",
        entity: str | None = None,
        run_id: str | None = None,
        tags: Sequence[str] = (),
        init_timeout: float = 60.0,
    ) -> WandbRun:
        """Start (or, with ``run_id``, resume) a run writing under ``run_dir/wandb``; never raises.

        :param mode: ``offline``, ``online``, ``none`` or ``disabled``.
        :param config: the resolved experiment config, logged as the run's config.
        :param group: runs of one sweep share a group.
        """
        if mode not in MODES:
            log.warning("logger.mode must be one of %s, got %r; logging offline", list(MODES), mode)
            mode = "offline"
        if mode in ("none", "disabled"):
            return cls()
        if mode == "online" and not _has_api_key():
            log.warning("W&B online mode needs an API key (wandb login or WANDB_API_KEY); logging offline instead")
            mode = "offline"
        kwargs = dict(
            project=project, entity=entity, group=group, name=name, job_type=job_type, tags=list(tags),
            config=dict(config), id=run_id, resume="allow" if run_id else None,
        )  # fmt: skip
        for attempt in (mode, "offline") if mode == "online" else (mode,):
            try:
                run = cls._init(attempt, run_dir, init_timeout, kwargs)
            except Exception as error:  # W&B must never stop training
                log.warning("W&B could not start in %s mode (%s: %s)", attempt, type(error).__name__, error)
                continue
            return cls(run)
        log.warning("W&B logging is off for this run")
        return cls()

    @staticmethod
    def _init(mode: str, run_dir: Path, init_timeout: float, kwargs: dict[str, Any]) -> Any:
        import wandb

        run_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")  # no banners or tips on the training console
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, init_timeout=init_timeout)
        return wandb.init(mode=mode, dir=str(run_dir), settings=settings, reinit="create_new", **kwargs)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self._run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as error:  # W&B must never stop training
            log.warning("W&B %s failed (%s: %s); W&B logging is off from here", what, type(error).__name__, error)
            self._run = None

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalars (or W&B media) at ``step`` (frames)."""
        if data:
            self._call("log", lambda: self._run.log(dict(data), step=step))

    def log_table(self, key: str, rows: Sequence[Mapping[str, Any]], step: int | None = None) -> None:
        """Log ``rows`` (dicts with the same keys) as a W&B table."""
        if not rows:
            return

        def table() -> None:
            import wandb

            columns = list(rows[0])
            self._run.log({key: wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])}, step=step)

        self._call("log_table", table)

    def log_image(self, key: str, path: Path, step: int | None = None) -> None:
        """Log an image file (PNG)."""

        def image() -> None:
            import wandb

            self._run.log({key: wandb.Image(str(path))}, step=step)

        self._call("log_image", image)

    def log_gif(self, key: str, path: Path, step: int | None = None) -> None:
        """Log a GIF file as a W&B video."""

        def video() -> None:
            import wandb

            self._run.log({key: wandb.Video(str(path), format="gif")}, step=step)

        self._call("log_gif", video)

    def summary(self, data: Mapping[str, Any]) -> None:
        """Set run summary values (final numbers)."""
        self._call("summary", lambda: self._run.summary.update(dict(data)))

    def finish(self, exit_code: int = 0) -> None:
        """Flush and close the run; later calls do nothing."""
        self._call("finish", lambda: self._run.finish(exit_code=exit_code))
        self._run = None
