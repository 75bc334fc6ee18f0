"""One training run from a composed config: validate, train, evaluate OOD, write the run folder.

``train(cfg, run_dir) -> metrics`` is a plain function (``scripts/train.py`` wraps it with
``@hydra.main``), so tests call it directly.

Run folder: ``config.yaml`` (resolved), ``checkpoint.pt`` (see :mod:`agents.checkpoint`),
``metrics.csv`` (training scalars per update), ``ood_curves.{json,csv}`` (periodic OOD
evaluation), ``model.zip``, ``eval.{json,csv}`` and ``metrics.json`` (final evaluation),
``media/<condition>.gif`` (one evaluation episode per condition) and ``wandb/``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from tqdm import tqdm

from agents import checkpoint
from agents.a2c import RecurrentA2C
from agents.cores import CORES
from agents.evaluation import OODEvalCallback, evaluate_split, format_table, write_results
from agents.interrupt import GracefulInterrupt
from agents.metrics_log import MetricsLog
from agents.ppo import RecurrentPPO
from agents.recording import record_episode, save_gif
from agents.wandb_logger import WandbRun
from envs.levels import make_condition_vec_env
from envs.splits import Split, split_from_dict

log = logging.getLogger(__name__)
ALGORITHMS = {"ppo": RecurrentPPO, "a2c": RecurrentA2C}
_RIM_KEYS = (
    "num_units", "k", "num_input_heads", "input_key_size", "input_value_size",
    "num_comm_heads", "comm_key_size", "comm_value_size", "attention_dropout",
)  # fmt: skip


RESUME_MAY_CHANGE = ("resume", "progress_bar", "logger")  # keys a resumed run may set differently


class ConfigError(ValueError):
    """A configuration that cannot run; the message says which key, expected and given."""


class TrainingInterruptedError(RuntimeError):
    """Training stopped on a signal after writing a checkpoint; ``resume=true`` continues it.

    :param run_dir: the run folder holding the checkpoint.
    :param frames: frames trained when the checkpoint was written.
    :param signum: the signal that asked for the stop.
    """

    def __init__(self, run_dir: Path, frames: int, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at {frames} frames; checkpoint in {run_dir}")
        self.run_dir, self.frames, self.signum = run_dir, frames, signum


def validate(cfg: DictConfig) -> Split:
    """Check the whole config before anything is built; return the split.

    :raises ConfigError: on the first problem found.
    """
    for key in (
        "total_frames", "n_envs", "eval.every_frames", "eval.episodes", "eval.final_episodes",
        "checkpoint.every_frames", "eval.gif_max_steps",
    ):  # fmt: skip
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    if cfg.model.core not in CORES:
        raise ConfigError(f"model.core must be one of {list(CORES)}, got {cfg.model.core!r}")
    logger_name = OmegaConf.select(cfg, "logger.name")
    if logger_name not in ("wandb", "none"):
        raise ConfigError(f"logger.name must be 'wandb' or 'none', got {logger_name!r}")
    if logger_name == "wandb" and cfg.logger.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode must be one of ['offline', 'online', 'disabled'], got {cfg.logger.mode!r}")
    if cfg.agent.name not in ALGORITHMS:
        raise ConfigError(f"agent.name must be one of {sorted(ALGORITHMS)}, got {cfg.agent.name!r}")
    if cfg.model.core.startswith("rim"):
        units, k, hidden = cfg.model.num_units, cfg.model.k, cfg.model.hidden_size
        if not 1 <= k <= units:
            raise ConfigError(f"model.k must be in [1, model.num_units] = [1, {units}], got {k}")
        if hidden % units:
            raise ConfigError(f"model.hidden_size must be divisible by model.num_units={units}, got {hidden}")
    try:
        return split_from_dict(OmegaConf.to_container(cfg.env, resolve=True), source="env")
    except ValueError as error:
        raise ConfigError(str(error)) from error


def build_model(cfg: DictConfig, env: Any) -> RecurrentPPO:
    """The algorithm of ``cfg.agent`` with the core of ``cfg.model`` on ``env``."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    core = model_cfg.pop("core")
    core_kwargs = {
        k: v for k, v in model_cfg.items() if k == "hidden_size" or (core.startswith("rim") and k in _RIM_KEYS)
    }
    agent_cfg = OmegaConf.to_container(cfg.agent, resolve=True)
    algo = ALGORITHMS[agent_cfg.pop("name")]
    return algo(
        "RecurrentPolicy",
        env,
        policy_kwargs=dict(core=core, core_kwargs=core_kwargs),
        seed=cfg.seed,
        device=cfg.device,
        torch_threads=cfg.torch_threads,
        **agent_cfg,
    )


def train(cfg: DictConfig, run_dir: Path, callbacks: Sequence[BaseCallback] = ()) -> dict[str, float]:
    """Validate, train on the split's train levels, evaluate every test condition, save.

    With ``cfg.resume`` true and a checkpoint in ``run_dir``, training continues from it
    (on CPU with the same seed, the result equals an uninterrupted run's). SIGINT/SIGTERM
    stop training at the next rollout boundary with a checkpoint.

    :param callbacks: extra SB3 callbacks for ``learn``.
    :returns: ``{condition: mean deterministic return}`` of the final evaluation.
    :raises ConfigError: before anything is written, if the config cannot run, or if
        ``run_dir`` already holds a run and ``cfg.resume`` is false, or holds a run of
        another config.
    :raises TrainingInterruptedError: after writing a checkpoint, when a signal stopped training.
    """
    split = validate(cfg)
    ckpt_path = run_dir / checkpoint.CHECKPOINT
    state = None
    if OmegaConf.select(cfg, "resume", default=False) and ckpt_path.is_file():
        _check_same_config(cfg, run_dir)
        state = checkpoint.load(ckpt_path)
        log.info("resuming %s from %d frames", run_dir, state["num_timesteps"])
    elif ckpt_path.is_file() or (run_dir / "model.zip").is_file():
        raise ConfigError(f"{run_dir} already holds a run; pass resume=true to continue it, or use another folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    if state is None:
        _atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    extra = state["extra"] if state else {}
    wandb_run = _start_wandb(cfg, run_dir, extra.get("wandb_id"))
    try:
        return _train(cfg, split, run_dir, state, wandb_run, callbacks)
    finally:
        wandb_run.finish()


def _train(
    cfg: DictConfig,
    split: Split,
    run_dir: Path,
    state: dict[str, Any] | None,
    wandb_run: WandbRun,
    callbacks: Sequence[BaseCallback],
) -> dict[str, float]:
    extra = state["extra"] if state else {}
    metrics_log = MetricsLog(run_dir / "metrics.csv", wandb_run, rows=extra.get("metrics_rows"))
    torch.manual_seed(cfg.seed)
    env = checkpoint.restore_env(state) if state else make_condition_vec_env(split.train, cfg.n_envs, seed=cfg.seed)
    model = build_model(cfg, env)
    model.set_logger(Logger(folder=None, output_formats=[metrics_log]))
    ood = OODEvalCallback(split, cfg.eval.every_frames, cfg.eval.episodes)
    if state:
        checkpoint.restore(model, state)
        ood.load_state(extra["ood"])

    def save() -> None:
        extras = {"ood": ood.state(), "metrics_rows": list(metrics_log.rows), "wandb_id": wandb_run.run_id}
        checkpoint.atomic_torch_save(checkpoint.capture(model, env, extras), run_dir / checkpoint.CHECKPOINT)

    show_progress = bool(OmegaConf.select(cfg, "progress_bar", default=False))
    with GracefulInterrupt() as interrupt:
        saver = checkpoint.CheckpointCallback(save, cfg.checkpoint.every_frames, interrupt)
        remaining = cfg.total_frames - model.num_timesteps
        if remaining > 0:
            model.learn(
                remaining,
                callback=[saver, ood, *callbacks],
                reset_num_timesteps=state is None,
                progress_bar=show_progress,
            )
            if not saver.stopping:
                save()
        if interrupt.requested:
            env.close()
            raise TrainingInterruptedError(
                run_dir, int(checkpoint.load(run_dir / checkpoint.CHECKPOINT)["num_timesteps"]), interrupt.signum
            )
        tmp = run_dir / "model.tmp.zip"
        model.save(tmp)
        tmp.replace(run_dir / "model.zip")
        env.close()
        if ood.history:
            write_results(ood.history, run_dir, stem="ood_curves")
            wandb_run.log_table("ood/curves", ood.history, step=model.num_timesteps)
        rows = []
        with tqdm(total=len(split.test), desc="final evaluation", unit="condition", disable=not show_progress) as bar:
            for name in split.test:
                if interrupt.requested:
                    raise TrainingInterruptedError(run_dir, model.num_timesteps, interrupt.signum)
                rows += evaluate_split(
                    model, split, [name], episodes=cfg.eval.final_episodes, modes=["deterministic"], seed=cfg.seed
                )
                bar.update(1)
    write_results(rows, run_dir, stem="eval")
    log.info("final evaluation\n%s", format_table(rows))
    metrics = {r["condition"]: r["mean_return"] for r in rows}
    _atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    wandb_run.log_table("eval/final", rows, step=model.num_timesteps)
    if cfg.eval.gifs:
        _record_gifs(model, split, run_dir / "media", cfg.eval.gif_max_steps, wandb_run)
    wandb_run.summary({f"eval/{r['condition']}/{key}": r[key] for r in rows for key in ("mean_return", "mean_success")})
    return metrics


def _record_gifs(model: RecurrentPPO, split: Split, directory: Path, max_steps: int, wandb_run: WandbRun) -> None:
    """One deterministic episode (the first test level) per condition as ``<condition>.gif``."""
    for name, condition in split.test.items():
        recording = record_episode(model, condition, episode=0, deterministic=True, max_steps=max_steps)
        path = save_gif(recording.frames, directory / f"{name}.gif")
        wandb_run.log_gif(f"episode/{name}", path, step=model.num_timesteps)


def _start_wandb(cfg: DictConfig, run_dir: Path, run_id: str | None) -> WandbRun:
    logger_cfg = cfg.logger
    if logger_cfg.name == "none":
        return WandbRun()
    return WandbRun.start(
        mode=logger_cfg.mode,
        project=logger_cfg.project,
        entity=logger_cfg.get("entity"),
        group=logger_cfg.get("group"),
        name=run_dir.name,
        tags=list(logger_cfg.get("tags") or []),
        run_dir=run_dir,
        config=OmegaConf.to_container(cfg, resolve=True),
        run_id=run_id,
        init_timeout=float(logger_cfg.get("init_timeout", 60)),
    )


def _check_same_config(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse to resume a run folder with a config other than the one it was started with."""
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    given = OmegaConf.to_container(cfg, resolve=True)
    for key in RESUME_MAY_CHANGE:
        saved.pop(key, None)
        given.pop(key, None)
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


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
