"""Training scalars from SB3's logger into the run folder's ``metrics.csv`` and into W&B."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import KVWriter

from agents.experiment.atomic import write_csv
from agents.experiment.wandb_logger import WandbRun


class MetricsLog(KVWriter):
    """An SB3 logger output: one row per dump (``frames`` then every numeric value).

    The CSV is rewritten atomically on each dump (temporary file, then rename), so a kill
    never leaves a half-written file, and keys that first appear late (OOD curves, training
    losses after the first update) get their own columns.

    :param path: the CSV file.
    :param wandb_run: also log each row there, at ``step = frames``.
    :param rows: rows already logged (from a checkpoint, when resuming).
    """

    def __init__(
        self, path: Path, wandb_run: WandbRun | None = None, rows: list[dict[str, float]] | None = None
    ) -> None:
        self.path = path
        self.wandb_run = wandb_run or WandbRun()
        self.rows: list[dict[str, float]] = list(rows or [])
        if self.rows:
            self._write_csv()

    def write(self, key_values: Mapping[str, Any], key_excluded: Mapping[str, Any], step: int = 0) -> None:
        values = {
            key: float(value)
            for key, value in key_values.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)
        }
        if not values:
            return
        self.rows.append({"frames": int(step), **values})
        self._write_csv()
        self.wandb_run.log(values, step=step)

    def _write_csv(self) -> None:
        columns = ["frames", *sorted({key for row in self.rows for key in row} - {"frames"})]
        write_csv(self.path, self.rows, columns)

    def close(self) -> None:
        """Nothing to release: every dump is already on disk."""
