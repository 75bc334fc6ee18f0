"""Load a trained run folder (written by :func:`agents.experiment.run.train`) for evaluation or inspection."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from agents.a2c import RecurrentA2C
from agents.experiment.run import ALGORITHMS
from agents.ppo import RecurrentPPO
from envs.splits import Split, split_from_dict

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.zip"


def load_run_config(run_dir: str | Path) -> DictConfig:
    """The resolved Hydra config of a run folder, after checking the folder holds a trained run.

    :param run_dir: folder with ``config.yaml`` and ``model.zip``.
    :raises ValueError: the folder does not exist or lacks one of the two files.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"no such run folder: {run}")
    missing = [name for name in (CONFIG_FILE, MODEL_FILE) if not (run / name).is_file()]
    if missing:
        raise ValueError(f"run folder {run} lacks {' and '.join(missing)}; is it a finished training run?")
    cfg = OmegaConf.load(run / CONFIG_FILE)
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{run / CONFIG_FILE} is not a mapping")
    return cfg


def run_split(cfg: DictConfig, source: str) -> Split:
    """The split of a run's config (its resolved ``env`` section).

    :param source: where the config came from, for error messages.
    :raises ValueError: no ``env`` section or an invalid split.
    """
    if OmegaConf.select(cfg, "env") is None:
        raise ValueError(f"{source} has no env section")
    return split_from_dict(OmegaConf.to_container(cfg.env, resolve=True), source=source)


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[RecurrentPPO | RecurrentA2C, Split, DictConfig]:
    """Load the model, split and config of a trained run folder.

    The algorithm class comes from ``cfg.agent.name`` (``ppo`` or ``a2c``), the split from the
    resolved ``cfg.env`` section (as :func:`agents.experiment.run.validate` builds it).

    :param run_dir: folder with ``config.yaml`` and ``model.zip``.
    :param device: torch device to load the model on.
    :returns: ``(model, split, cfg)``.
    :raises ValueError: missing files, an unknown ``agent.name`` or an invalid split.
    """
    run = Path(run_dir)
    cfg = load_run_config(run)
    agent = OmegaConf.select(cfg, "agent.name")
    if agent not in ALGORITHMS:
        raise ValueError(f"{run / CONFIG_FILE}: agent.name must be one of {sorted(ALGORITHMS)}, got {agent!r}")
    split = run_split(cfg, source=str(run / CONFIG_FILE))
    model = ALGORITHMS[agent].load(run / MODEL_FILE, device=device)
    return model, split, cfg
