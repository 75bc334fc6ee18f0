"""Which jobs of a sweep failed and why: one line per failed job, printed when the sweep ends.

Each failing job appends ``<job number>\\t<overrides>\\t<status>\\t<reason>`` to ``<sweep dir>/failed_jobs.tsv``
(:func:`record`); ``<status>`` is ``resumable`` for a job stopped by its environment (no space, a vanished
file system, out of memory: rerunning the sweep with ``resume=true`` and the same ``hydra.sweep.dir``
continues it from its last good checkpoint, and returns the finished jobs' results without work) and
``failed`` for a job whose config or code failed. :class:`SweepFailures` (a Hydra callback in
``configs/train.yaml``) clears that file when a sweep starts and remembers the folder, so that
:func:`summary` can read it in the launching process after Hydra returns (or raises for the first
failed job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

FAILED_JOBS = "failed_jobs.tsv"
RESUMABLE, FAILED = "resumable", "failed"  # statuses of a failed job
_sweep_dir: list[Path] = []  # the sweep folder of this process's multirun, set by SweepFailures


class SweepFailures(Callback):
    """Hydra callback: start each sweep with no recorded failures and remember its folder."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Clear ``failed_jobs.tsv`` of an earlier launch into the same folder."""
        folder = Path(config.hydra.sweep.dir)
        _sweep_dir[:] = [folder]
        (folder / FAILED_JOBS).unlink(missing_ok=True)


def record(reason: str, resumable: bool = False) -> None:
    """Append this job's failure (one line) to its sweep's ``failed_jobs.tsv``.

    :param resumable: the job stopped for a reason of its environment; ``resume=true`` continues it.
    """
    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.sweep.dir)
    folder.mkdir(parents=True, exist_ok=True)
    overrides = " ".join(hydra_cfg.overrides.task)
    line = " ".join(reason.split())  # one line
    with (folder / FAILED_JOBS).open("a") as handle:
        handle.write(f"{hydra_cfg.job.num}\t{overrides}\t{RESUMABLE if resumable else FAILED}\t{line}\n")


def summary() -> str | None:
    """The failed jobs of this process's sweep, one line each, or ``None`` if none failed (or no sweep ran)."""
    if not _sweep_dir or not (_sweep_dir[0] / FAILED_JOBS).is_file():
        return None
    rows = [_row(line) for line in (_sweep_dir[0] / FAILED_JOBS).read_text().splitlines() if line]
    lines = [
        f"  job {num} ({overrides}): {'resumable: ' if status == RESUMABLE else ''}{reason}"
        for num, overrides, status, reason in sorted(rows, key=lambda r: int(r[0]))
    ]
    text = f"{len(rows)} job(s) of the sweep in {_sweep_dir[0]} failed:\n" + "\n".join(lines)
    resumable = sum(status == RESUMABLE for _, _, status, _ in rows)
    if resumable:
        text += (
            f"\n{resumable} job(s) can resume: once the cause is gone, rerun the same command with resume=true "
            f"hydra.sweep.dir={_sweep_dir[0]} (finished jobs return their results without work)"
        )
    return text


def _row(line: str) -> tuple[str, str, str, str]:
    """``(job, overrides, status, reason)`` of a line (one without a status, from before statuses: failed)."""
    fields = line.split("\t", 3)
    if len(fields) == 4 and fields[2] in (RESUMABLE, FAILED):
        return fields[0], fields[1], fields[2], fields[3]
    num, overrides, reason = line.split("\t", 2)
    return num, overrides, FAILED, reason
