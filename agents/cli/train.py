"""``rims-train`` / ``scripts/train.py``: one training run (or a sweep) from the Hydra config tree.

Usage::

    rims-train                                        # RIM-PPO on doorkey, 300k frames, OOD table
    rims-train model=lstm env=empty seed=3 total_frames=100000
    rims-train model.num_units=6 model.k=4 model.hidden_size=192 agent=a2c logger=none
    rims-train -m model=lstm,rim seed=0,1,2           # sweep, one run folder per job
    rims-train -m sweep=rim_vs_lstm env=empty hydra/launcher=joblib
    rims-train resume=runs/2026-11-28/10-00-00_ppo_rim_doorkey_s0   # continue a stopped run

Exit status: 0 done; 2 invalid config (one-line reason, no run folder left behind);
130 / 143 stopped by SIGINT / SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from agents.experiment import ConfigError, TrainingInterruptedError, train

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
HYDRA_FILES = (".hydra", "train.log")
RESUME_MAY_SET = ("resume=", "hydra.", "progress_bar=")  # overrides allowed beside resume=<folder>
log = logging.getLogger(__name__)


def _resume_argv(argv: list[str]) -> list[str]:
    """With ``resume=<run folder>``, run in that folder (``hydra.run.dir``) unless told otherwise."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if given and given[-1].lower() not in ("true", "false") and not any(a.startswith("hydra.run.dir=") for a in argv):
        return [*argv, f"hydra.run.dir={given[-1]}"]
    return argv


def _prepare(cfg: DictConfig) -> DictConfig:
    """Load the saved config for ``resume=<folder>``; name the W&B group of a sweep.

    :raises ConfigError: ``resume`` names no run folder, or comes with overrides that would
        change the saved config.
    """
    hydra_cfg = HydraConfig.get()
    if isinstance(cfg.resume, str) and cfg.resume.lower() not in ("true", "false"):
        saved_path = Path(cfg.resume) / "config.yaml"
        if not saved_path.is_file():
            raise ConfigError(f"resume must be true, false or a run folder with config.yaml, got {cfg.resume!r}")
        extra = [o for o in hydra_cfg.overrides.task if not o.startswith(RESUME_MAY_SET)]
        if extra:
            raise ConfigError(
                f"resume={cfg.resume} continues that run with its saved config; drop the overrides {extra}"
            )
        saved = OmegaConf.load(saved_path)
        saved.resume = True
        return saved
    if hydra_cfg.mode == RunMode.MULTIRUN and cfg.logger.name == "wandb" and cfg.logger.get("group") is None:
        with open_dict(cfg):
            cfg.logger.group = "_".join(Path(hydra_cfg.sweep.dir).parts[-2:])
    return cfg


def _remove_if_empty(run_dir: Path) -> None:
    """Remove a run folder holding nothing but Hydra's own files."""
    if run_dir.is_dir() and all(p.name in HYDRA_FILES for p in run_dir.iterdir()):
        shutil.rmtree(run_dir)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = train(_prepare(cfg), run_dir)
    except ConfigError as error:
        print(f"error: invalid config: {error}", file=sys.stderr)
        _remove_if_empty(run_dir)
        sys.exit(2)
    except TrainingInterruptedError as stop:
        print(f"{stop}\nresume with: rims-train resume={run_dir}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    print(f"run folder: {run_dir}")
    return float(metrics["iid"])


def main() -> None:
    """Console entry point (``rims-train``)."""
    sys.argv = [sys.argv[0], *_resume_argv(sys.argv[1:])]
    _main()
