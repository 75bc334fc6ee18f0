"""One training run from a composed config: validate, train, evaluate OOD, write the run folder.

``train(cfg, run_dir) -> metrics`` is a plain function (``scripts/train.py`` wraps it with
``@hydra.main``), so tests call it directly.

Run folder: ``config.yaml`` (resolved), ``checkpoint.pt`` and the ``checkpoint.keep - 1`` before it
(``checkpoint.1.pt``, ...; see :mod:`agents.experiment.checkpoint`), ``manifest.json`` (their checksums
and ``model.zip``'s, :mod:`agents.experiment.manifest`), ``metrics.csv`` (training scalars per update),
``ood_curves.{json,csv}`` (periodic OOD evaluation), ``model.zip``, ``eval.{json,csv}`` and
``metrics.json`` (final evaluation; RIM cores add selection statistics to ``metrics.csv`` and
``ood_curves``, :mod:`agents.experiment.selection_log`), ``media/<condition>.gif`` (one evaluation episode
per condition) and ``wandb/``; ``FAILED`` when training raised (:mod:`agents.experiment.faults`: a failure of the
environment resumes, one of the config or code does not).
"""

from __future__ import annotations

import io
import json
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv
from tqdm import tqdm

from agents.a2c import RecurrentA2C
from agents.experiment import checkpoint, faults, manifest, recovery
from agents.experiment.atomic import atomic_write_text
from agents.experiment.config import ConfigError, TrainConfig, config_dict, config_yaml, typed_config
from agents.experiment.config.model import RIM_CORES, RIM_KEYS
from agents.experiment.evaluation import OODEvalCallback, evaluate_split, format_table, write_results
from agents.experiment.faults import EnvironmentFailureError, RunFolderError
from agents.experiment.interrupt import GracefulInterrupt
from agents.experiment.metrics_log import MetricsLog
from agents.experiment.recording import record_episode, save_gif
from agents.experiment.resume import exclusive, holds_run_error, previous_run
from agents.experiment.selection_log import SelectionStatsCallback
from agents.experiment.wandb_logger import WandbRun
from agents.ppo import RecurrentPPO
from envs.levels import make_condition_vec_env
from envs.splits import Split, split_from_dict

log = logging.getLogger(__name__)
# *_meta: the same algorithms with fast/slow learning (agent.fast_slow, agents/fast_slow.py)
ALGORITHMS = {"ppo": RecurrentPPO, "a2c": RecurrentA2C, "ppo_meta": RecurrentPPO, "a2c_meta": RecurrentA2C}


MODEL_FILE = "model.zip"


class TrainingInterruptedError(RuntimeError):
    """Training stopped on a signal after writing a checkpoint; ``resume=true`` continues it.

    :param run_dir: the run folder holding the checkpoint.
    :param frames: frames trained when the checkpoint was written.
    :param signum: the signal that asked for the stop.
    """

    def __init__(self, run_dir: Path, frames: int, signum: int, previous_handler: Any = None) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at {frames} frames; checkpoint in {run_dir}")
        self.run_dir, self.frames, self.signum = run_dir, frames, signum
        self.previous_handler = previous_handler  # the signal's handler before training (e.g. submitit's)


def validate(cfg: TrainConfig | DictConfig) -> Split:
    """Check the whole config (:func:`agents.experiment.config.typed_config`, unless typed already) before
    building; return the split.

    :raises ConfigError: on the first problem found.
    """
    typed = typed_config(cfg)
    try:
        split = split_from_dict(config_dict(typed)["env"], source="env")
    except ValueError as error:
        raise ConfigError(str(error)) from error
    eval_conditions(typed, split)
    return split


def eval_conditions(cfg: TrainConfig, split: Split) -> list[str]:
    """The test conditions that ``cfg.eval.conditions`` selects (``null``: all of the split's).

    :raises ConfigError: not ``null`` or a non-empty list of the split's condition names.
    """
    names = cfg.eval.conditions
    if names is None:
        return list(split.test)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"eval.conditions must be null or a non-empty list of condition names, got {names!r}")
    valid = list(split.evaluable)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ConfigError(f"eval.conditions must name conditions of split {split.name!r} {valid}, got {unknown}")
    return [n for n in valid if n in names]


def build_model(cfg: TrainConfig | DictConfig, env: Any) -> RecurrentPPO:
    """The algorithm of ``cfg.agent`` with the core of ``cfg.model`` on ``env`` (``cfg`` typed here unless it is)."""
    cfg = typed_config(cfg)
    plain = config_dict(cfg)
    model_cfg = {k: v for k, v in plain["model"].items() if v is not None}
    core = model_cfg.pop("core")
    core_kwargs = {k: v for k, v in model_cfg.items() if k == "hidden_size" or (core in RIM_CORES and k in RIM_KEYS)}
    agent_cfg = plain["agent"]
    if agent_cfg.get("fast_slow") is None:
        agent_cfg.pop("fast_slow", None)
    algo = ALGORITHMS[agent_cfg.pop("name")]
    return algo(
        "RecurrentPolicy",
        env,
        policy_kwargs=dict(core=core, core_kwargs=core_kwargs),
        seed=cfg.seed,
        device=cfg.device,
        **agent_cfg,
    )


def train(cfg: TrainConfig | DictConfig, run_dir: Path, callbacks: Sequence[BaseCallback] = ()) -> dict[str, float]:
    """Validate, train on the split's train levels, evaluate every test condition, save.

    The config is validated (typed by :func:`agents.experiment.config.typed_config` unless the entry
    point passes it typed, as ``rims-train`` does) and the environments and agent are built before anything is
    written. With ``cfg.resume`` true and a checkpoint in ``run_dir``, training continues from
    the newest checkpoint that verifies and loads (:func:`agents.experiment.recovery.newest_checkpoint`;
    on CPU the result equals an uninterrupted run's); a finished run returns its metrics.
    SIGINT/SIGTERM (and SLURM's SIGUSR2) stop training at the next rollout boundary with a
    checkpoint. One process at a time may hold a run folder (an exclusive lock on ``.lock``).

    :param callbacks: extra SB3 callbacks for ``learn``.
    :returns: ``{condition: mean deterministic return}`` of the final evaluation.
    :raises ConfigError: before anything is written, if the config cannot run, if ``run_dir``
        already holds a run and ``cfg.resume`` is false, holds a run of another config, failed
        for a reason of the config or code (``FAILED``), or is in use by another process.
    :raises RunFolderError: before anything is written, if resuming finds checkpoint files but
        none that verifies and loads, or files of an incompatible version of the suite.
    :raises TrainingInterruptedError: after writing a checkpoint, when a signal stopped training.
    :raises EnvironmentFailureError: the environment failed (no space, a vanished file system, out
        of memory, ...: :func:`agents.experiment.faults.is_environmental`); the folder keeps its
        last good checkpoint and ``resume=true`` continues from it once the cause is gone.
    """
    cfg = typed_config(cfg)  # once per run: everything below takes the typed config
    split = validate(cfg)
    try:
        return _train_in_folder(cfg, split, run_dir, callbacks)
    except OSError as error:  # before training: the folder could not be read, made or locked
        raise EnvironmentFailureError(run_dir, faults.describe(error, run_dir), recovery.last_good(run_dir)) from error


def _train_in_folder(
    cfg: TrainConfig, split: Split, run_dir: Path, callbacks: Sequence[BaseCallback]
) -> dict[str, float]:
    """:func:`train` once the config is valid: find the state to continue from, hold the folder, train."""
    resume = bool(cfg.resume)
    try:
        found = previous_run(cfg, run_dir, resume)
    except RunFolderError as error:
        if not (run_dir / "metrics.json").is_file():
            raise
        log.warning("%s; the run is finished: its final evaluation is in eval.json", error)
        return json.loads((run_dir / "metrics.json").read_text())
    state = found.state if found else None
    if state is not None and state["num_timesteps"] >= cfg.total_frames and (run_dir / "metrics.json").is_file():
        log.info("%s is finished; its final evaluation is in eval.json", run_dir)
        return json.loads((run_dir / "metrics.json").read_text())
    if found is not None:
        log.info("resuming %s from %s (%d frames)", run_dir, found.path.name, found.frames)
    env, model = _build(cfg, split, found)
    run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(run_dir):
        if state is None and (run_dir / "config.yaml").is_file() and not resume:  # written since the check above
            env.close()
            raise holds_run_error(run_dir)
        wandb_run, exit_code = WandbRun(), 1
        try:
            if found is None:
                atomic_write_text(run_dir / "config.yaml", config_yaml(cfg))
            else:
                recovery.set_aside([path for path, _ in found.skipped])
            recovery.remove_stale_temporaries(run_dir)
            faults.clear_marker(run_dir)  # only an environmental failure's marker gets here
            wandb_run = _start_wandb(cfg, run_dir, state["extra"].get("wandb_id") if state else None)
            metrics = _train(cfg, split, run_dir, env, model, found, wandb_run, callbacks)
            exit_code = 0
            return metrics
        except TrainingInterruptedError:
            exit_code = 0
            raise
        except RunFolderError:  # the checkpoint did not restore: nothing was trained or changed
            raise
        except Exception as error:  # the folder says which kind of failure; resume continues or refuses it
            marker = faults.mark_failed(run_dir, error)
            if marker.resumable:
                raise EnvironmentFailureError(run_dir, marker.cause, recovery.last_good(run_dir)) from error
            raise
        finally:
            wandb_run.finish(exit_code=exit_code)


def _build(cfg: TrainConfig, split: Split, found: recovery.Found | None) -> tuple[VecEnv, RecurrentPPO]:
    """Environments (fresh, or as checkpointed) and the agent on them.

    :raises ConfigError: the agent cannot be built from ``cfg``: a ``ValueError`` of an argument check
        (the constructors of ``agents``, ``rims``, SB3 and torch say expected vs got with one). Any other
        exception (``AssertionError``, ``RuntimeError``, ...) is a bug and propagates unchanged.
    :raises RunFolderError: the checkpoint's environments cannot be unpickled by this version.
    """
    torch.manual_seed(cfg.seed)
    if found is None:
        env = make_condition_vec_env(split.train, cfg.n_envs, seed=cfg.seed)
    else:
        try:
            env = checkpoint.restore_env(found.state)
        except Exception as error:  # unpickling classes this version lacks or changed
            raise RunFolderError(recovery.unreadable(found.path, error, verified=True)) from error
    try:
        return env, build_model(cfg, env)
    except ValueError as error:  # an argument check: expected vs got
        env.close()
        raise ConfigError(f"cannot build the agent from this config: {type(error).__name__}: {error}") from error
    except BaseException:  # anything else is a bug of the code, not of the config: it propagates as itself
        env.close()
        raise


def _train(
    cfg: TrainConfig,
    split: Split,
    run_dir: Path,
    env: VecEnv,
    model: RecurrentPPO,
    found: recovery.Found | None,
    wandb_run: WandbRun,
    callbacks: Sequence[BaseCallback],
) -> dict[str, float]:
    state = found.state if found else None
    extra = state["extra"] if state else {}
    metrics_log = MetricsLog(run_dir / "metrics.csv", wandb_run, rows=extra.get("metrics_rows"))
    model.set_logger(Logger(folder=None, output_formats=[metrics_log]))
    conditions = eval_conditions(cfg, split)
    ood = OODEvalCallback(split, cfg.eval.every_frames, cfg.eval.episodes, conditions=conditions)
    if found is not None:
        try:
            checkpoint.restore(model, found.state)
            ood.load_state(extra["ood"])
        except (RuntimeError, KeyError, ValueError, TypeError) as error:  # state dicts of another version
            raise RunFolderError(recovery.unreadable(found.path, error, verified=True)) from error

    def save() -> None:
        extras = {"ood": ood.state(), "metrics_rows": list(metrics_log.rows), "wandb_id": wandb_run.run_id}
        checkpoint.save(checkpoint.capture(model, env, extras), run_dir, cfg.checkpoint.keep)

    show_progress = bool(cfg.progress_bar)
    with GracefulInterrupt() as interrupt:
        saver = checkpoint.CheckpointCallback(save, cfg.checkpoint.every_frames, interrupt)
        remaining = cfg.total_frames - model.num_timesteps
        if remaining > 0:
            model.learn(
                remaining,
                callback=[saver, ood, SelectionStatsCallback(), *callbacks],
                reset_num_timesteps=state is None,
                progress_bar=show_progress,
            )
            if not saver.stopping:
                save()
        env.close()
        if interrupt.requested:
            handler = interrupt.previous.get(interrupt.signum)
            frames = saver.saved_frames if saver.stopping and saver.saved_frames is not None else model.num_timesteps
            raise TrainingInterruptedError(run_dir, frames, interrupt.signum, handler)
        _save_model(model, run_dir)
        if ood.history:
            write_results(ood.history, run_dir, stem="ood_curves")
            wandb_run.log_table("ood/curves", ood.history, step=model.num_timesteps)
        rows = _final_evaluation(cfg, split, conditions, model, interrupt, run_dir, show_progress)
        write_results(rows, run_dir, stem="eval")
        log.info("final evaluation\n%s", format_table(rows))
        metrics = {r["condition"]: r["mean_return"] for r in rows}
        wandb_run.log_table("eval/final", rows, step=model.num_timesteps)
        summary = {f"eval/{r['condition']}/{key}": r[key] for r in rows for key in ("mean_return", "mean_success")}
        wandb_run.summary(summary)
        if cfg.eval.gifs:
            media = run_dir / "media"
            _record_gifs(model, split, conditions, media, cfg.eval.gif_max_steps, wandb_run, interrupt)
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def _final_evaluation(
    cfg: TrainConfig,
    split: Split,
    conditions: list[str],
    model: RecurrentPPO,
    interrupt: GracefulInterrupt,
    run_dir: Path,
    progress: bool,
) -> list[dict[str, Any]]:
    """``cfg.eval.final_episodes`` deterministic episodes per chosen test condition, stoppable between conditions."""
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(conditions), desc="final evaluation", unit="condition", disable=not progress) as bar:
        for name in conditions:
            if interrupt.requested:
                handler = interrupt.previous.get(interrupt.signum)
                raise TrainingInterruptedError(run_dir, model.num_timesteps, interrupt.signum, handler)
            rows += evaluate_split(
                model, split, [name], episodes=cfg.eval.final_episodes, modes=["deterministic"], seed=cfg.seed
            )
            bar.update(1)
    return rows


def _save_model(model: RecurrentPPO, run_dir: Path) -> None:
    """``model.zip``, verified on disk with its checksum in the manifest (written in memory first, so
    that a full disk fails a plain write that names its cause)."""
    buffer = io.BytesIO()
    model.save(buffer)
    manifest.write_verified(run_dir, MODEL_FILE, buffer.getbuffer(), frames=model.num_timesteps)


def _record_gifs(
    model: RecurrentPPO,
    split: Split,
    conditions: list[str],
    directory: Path,
    max_steps: int,
    wandb_run: WandbRun,
    interrupt: GracefulInterrupt,
) -> None:
    """One deterministic episode (the first test level) per chosen condition as ``<condition>.gif``.

    GIFs are a by-product: a failure is a warning, and a stop request skips the rest.
    """
    for name in conditions:
        condition = split.condition(name)
        if interrupt.requested:
            log.warning("stop requested: skipping the remaining GIFs")
            return
        try:
            recording = record_episode(model, condition, episode=0, deterministic=True, max_steps=max_steps)
            path = save_gif(recording.frames, directory / f"{name}.gif")
        except Exception as error:  # a GIF must not fail a finished run
            log.warning("could not record the GIF of %s (%s: %s)", name, type(error).__name__, error)
            continue
        wandb_run.log_gif(f"episode/{name}", path, step=model.num_timesteps)


def _start_wandb(cfg: TrainConfig, run_dir: Path, run_id: str | None) -> WandbRun:
    logger_cfg = cfg.logger
    if logger_cfg.name == "none":
        return WandbRun()
    return WandbRun.start(
        mode=logger_cfg.mode,
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        group=logger_cfg.group,
        name=run_dir.name,
        tags=list(logger_cfg.tags or []),
        run_dir=run_dir,
        config=config_dict(cfg),
        run_id=run_id,
        init_timeout=float(logger_cfg.init_timeout),
    )
