"""Sweep presets and launchers: every job gets its own run folder, whatever launches it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from agents.experiment.run import validate

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "train.py"
TINY = [
    "env=empty", "total_frames=32", "n_envs=2", "eval.every_frames=32", "eval.episodes=1", "eval.final_episodes=1",
    "eval.gifs=false", "eval.conditions=[iid]", "agent.n_steps=16", "agent.batch_size=32", "model.hidden_size=16",
    "progress_bar=false",
]  # fmt: skip


@pytest.mark.parametrize(
    ("preset", "params"),
    [
        ("rim_vs_lstm", {"model": "lstm,rim", "seed": "range(5)"}),
        ("rim_units_k", {"model.num_units": "4,8", "model.k": "1,2,3,4", "seed": "range(3)"}),
    ],
)
def test_sweep_presets_compose_with_their_grid(preset: str, params: dict[str, str]) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"sweep={preset}", "env=empty"], return_hydra_config=True)
    assert OmegaConf.to_container(cfg.hydra.sweeper.params) == params
    assert f"multirun/{preset}_empty/" in cfg.hydra.sweep.dir
    assert validate(cfg).name == "empty"


@pytest.mark.parametrize(
    ("launcher", "target"),
    [("slurm", "SlurmLauncher"), ("local", "LocalLauncher"), ("joblib", "JoblibLauncher")],
)
def test_launcher_presets_compose(launcher: str, target: str) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.cpus_per_task == 2 and "export OMP_NUM_THREADS=1" in cfg.hydra.launcher.setup


@pytest.mark.parametrize("logger", ["wandb", "none"])
def test_logger_group_composes(logger: str) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"logger={logger}"])
    assert cfg.logger.name == logger
    validate(cfg)
    if logger == "wandb":
        assert cfg.logger.mode == "offline"


def _sweep(tmp_path: Path, *extra: str) -> list[Path]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "-m", "model=lstm,gru", *TINY, *extra, f"hydra.sweep.dir={tmp_path}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return sorted(p for p in tmp_path.iterdir() if p.is_dir() and (p / "model.zip").is_file())


@pytest.mark.parametrize(
    "launcher",
    [
        # submitit's local executor: the slurm launcher's code path, ~20 s of process start-up (slow)
        pytest.param(["hydra/launcher=local", "hydra.launcher.timeout_min=10"], marks=pytest.mark.slow),
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ],
    ids=["submitit_local", "joblib"],
)
def test_two_job_sweep_on_a_parallel_launcher(launcher: list[str], tmp_path: Path) -> None:
    runs = _sweep(tmp_path, *launcher)
    assert [r.name for r in runs] == ["0_ppo_lstm_empty_s0", "1_ppo_gru_empty_s0"]
    for run, core in zip(runs, ("lstm", "gru"), strict=True):
        assert OmegaConf.load(run / "config.yaml").model.core == core
        assert (run / "metrics.json").is_file() and (run / "metrics.csv").is_file()
        group = OmegaConf.load(run / "config.yaml").logger.group
        assert group == "_".join(tmp_path.parts[-2:])  # jobs of one sweep share a W&B group
