"""Logging a comparison to Weights & Biases: the logger settings from the runs, then tables and figures."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .report import ReportFiles
from .runs import Run
from .stats import Comparison

log = logging.getLogger("agents.analysis.compare")  # the package logger, as before the split into modules

DEFAULT_PROJECT = "rims"


def logger_config(runs: Sequence[Run], mode: str = "auto") -> dict[str, Any]:
    """The W&B settings for logging a comparison of ``runs``.

    :param mode: ``"auto"`` (the runs' own logger: the first run that logged to W&B, else none),
        ``"offline"``, ``"online"`` or ``"none"``. An explicit mode keeps the runs' project, entity and
        group when they had them.
    :returns: ``{"name": "none"}`` or ``{"name": "wandb", "mode": ..., "project": ..., "entity": ..., "group": ...}``.
    :raises ValueError: on an unknown mode.
    """
    if mode not in ("auto", "offline", "online", "none"):
        raise ValueError(f"wandb mode must be auto, offline, online or none, got {mode!r}")
    wandb_cfgs = [run.logger for run in runs if run.logger.get("name") == "wandb"]
    groups = {cfg.get("group") for cfg in wandb_cfgs}
    if len(groups) > 1:
        log.warning("runs come from W&B groups %s; logging the comparison to the first", sorted(map(str, groups)))
    if mode == "none" or (mode == "auto" and not wandb_cfgs):
        return {"name": "none"}
    base = {"name": "wandb", "mode": "offline", "project": DEFAULT_PROJECT, "entity": None, "group": None}
    base.update(wandb_cfgs[0] if wandb_cfgs else {})
    if mode != "auto":
        base["mode"] = mode
    return base


def log_to_wandb(comparison: Comparison, files: ReportFiles, logger_cfg: dict[str, Any]) -> bool:
    """Log the summary and P(improvement) tables and both figures to a W&B run (``job_type="compare"``).

    The run joins the runs' group and lives in ``files.out_dir``.

    :param logger_cfg: from :func:`logger_config`.
    :returns: whether a W&B run was active (False for logger ``none``, mode ``disabled`` or a failed start).
    """
    mode = str(logger_cfg.get("mode", "disabled"))
    if logger_cfg.get("name", "none") != "wandb" or mode in ("none", "disabled"):
        return False
    try:
        from agents.experiment.wandb_logger import WandbRun
    except ImportError as error:
        log.warning("W&B logging unavailable (%s); the comparison was not logged", error)
        return False
    config = {
        "split": comparison.split,
        "reps": comparison.reps,
        "seed": comparison.seed,
        "models": {label: [str(run.path) for run in runs] for label, runs in comparison.models.items()},
    }
    run = WandbRun.start(
        mode=mode, project=str(logger_cfg.get("project") or DEFAULT_PROJECT), run_dir=files.out_dir,
        config=config, name=f"compare-{comparison.split}", group=logger_cfg.get("group"), job_type="compare",
        entity=logger_cfg.get("entity"),
    )  # fmt: skip
    try:
        if run.active:
            run.log_table("summary", [asdict(e) for e in comparison.estimates])
            if comparison.improvements:
                run.log_table("p_improvement", [asdict(e) for e in comparison.improvements])
            run.log_image("learning_curves", files.learning_curves)
            run.log_image("ood_bars", files.ood_bars)
        return run.active
    finally:
        run.finish()
