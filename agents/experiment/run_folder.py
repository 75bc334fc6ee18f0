"""Load a trained run folder (written by :func:`agents.experiment.run.train`) for evaluation or inspection.

``model.zip`` is checked against the run folder's manifest before it is used; when it is damaged
(or cannot be read), the policy of the newest checkpoint that verifies is used instead, and a
warning says which file and how many frames it holds.
"""

from __future__ import annotations

import glob
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from agents.a2c import RecurrentA2C
from agents.experiment import manifest, recovery
from agents.experiment.faults import RunFolderError
from agents.experiment.run import ALGORITHMS, MODEL_FILE, build_model
from agents.ppo import RecurrentPPO
from envs.levels import make_condition_vec_env
from envs.splits import Split, split_from_dict

log = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"


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
    try:
        cfg = OmegaConf.load(run / CONFIG_FILE)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{run / CONFIG_FILE} is damaged: not YAML ({' '.join(str(error).split())})") from error
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
    resolved ``cfg.env`` section (as :func:`agents.experiment.run.validate` builds it). A damaged
    ``model.zip`` is replaced by the newest checkpoint that verifies (logged).

    :param run_dir: folder with ``config.yaml`` and ``model.zip``.
    :param device: torch device to load the model on.
    :returns: ``(model, split, cfg)``.
    :raises ValueError: missing files, an unknown ``agent.name`` or an invalid split.
    :raises RunFolderError: neither ``model.zip`` nor any checkpoint verifies and loads.
    """
    run = Path(run_dir)
    cfg = load_run_config(run)
    agent = OmegaConf.select(cfg, "agent.name")
    if agent not in ALGORITHMS:
        raise ValueError(f"{run / CONFIG_FILE}: agent.name must be one of {sorted(ALGORITHMS)}, got {agent!r}")
    split = run_split(cfg, source=str(run / CONFIG_FILE))
    return _load_model(run, cfg, split, device), split, cfg


def _load_model(run: Path, cfg: DictConfig, split: Split, device: str | torch.device) -> RecurrentPPO:
    """``model.zip`` if it verifies and loads, else the policy of the newest good checkpoint."""
    path = run / MODEL_FILE
    algo = ALGORITHMS[cfg.agent.name]
    data = path.read_bytes()
    entries = manifest.read(run)
    reason = manifest.damage(path, data, entries, MODEL_FILE)
    if reason is None:
        try:
            return algo.load(io.BytesIO(data), device=device)
        except Exception as error:  # SB3's, zipfile's and torch's many ways to fail on bad bytes
            verified = any(entry.name == MODEL_FILE for entry in entries or [])
            reason = recovery.unreadable(path, error, verified=verified)
    try:
        found = recovery.newest_checkpoint(run)
    except RunFolderError as error:
        raise RunFolderError(f"{reason}; and {error}") from error
    if found is None:
        raise RunFolderError(f"{reason}; and {run} holds no checkpoint to use instead")
    total = int(cfg.total_frames)
    final = "" if found.frames >= total else f" of {total}: not the final policy"
    log.warning("%s; using the policy of %s (%d frames%s) instead", reason, found.path, found.frames, final)
    return _policy_of(cfg, split, found, device)


def _policy_of(cfg: DictConfig, split: Split, found: recovery.Found, device: str | torch.device) -> RecurrentPPO:
    """The algorithm of ``cfg`` with the policy of checkpoint ``found``, on ``device``."""
    cfg = cfg.copy()
    cfg.device = str(device)
    env = make_condition_vec_env(split.train, 1, seed=int(cfg.seed))
    try:
        model = build_model(cfg, env)
        model.policy.load_state_dict(found.state["policy"])
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        raise RunFolderError(recovery.unreadable(found.path, error, verified=True)) from error
    finally:
        env.close()
    model.num_timesteps = found.frames
    return model


def run_label(folder: Path) -> str:
    """A run folder as a committed record names it: from its ``multirun`` folder on (the same in every checkout and
    worktree), else the path as given."""
    parts = folder.resolve().parts
    return "/".join(parts[parts.index("multirun") :]) if "multirun" in parts else str(folder)


def matching_folders(patterns: Sequence[str]) -> list[Path]:
    """The folders matching any of the glob ``patterns``, sorted, each once."""
    return sorted({Path(p) for pattern in patterns for p in glob.glob(pattern) if Path(p).is_dir()})
