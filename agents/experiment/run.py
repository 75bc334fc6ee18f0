"""One training run from a composed config: validate, train, evaluate OOD, write the run folder.

``train(cfg, run_dir) -> metrics`` is a plain function (``scripts/train.py`` wraps it with
``@hydra.main``), so tests call it directly.

Run folder: ``config.yaml`` (resolved), ``checkpoint.pt`` (see :mod:`agents.experiment.checkpoint`),
``metrics.csv`` (training scalars per update), ``ood_curves.{json,csv}`` (periodic OOD
evaluation), ``model.zip``, ``eval.{json,csv}`` and ``metrics.json`` (final evaluation),
``media/<condition>.gif`` (one evaluation episode per condition) and ``wandb/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv
from tqdm import tqdm

from agents.a2c import RecurrentA2C
from agents.experiment import checkpoint
from agents.experiment.atomic import atomic_path, atomic_write_text
from agents.experiment.config import ConfigError, typed_config
from agents.experiment.evaluation import OODEvalCallback, evaluate_split, format_table, write_results
from agents.experiment.interrupt import GracefulInterrupt
from agents.experiment.metrics_log import MetricsLog
from agents.experiment.recording import record_episode, save_gif
from agents.experiment.wandb_logger import WandbRun
from agents.ppo import RecurrentPPO
from envs.levels import make_condition_vec_env
from envs.splits import Split, split_from_dict

log = logging.getLogger(__name__)
# *_meta: the same algorithms with fast/slow learning (agent.fast_slow, agents/fast_slow.py)
ALGORITHMS = {"ppo": RecurrentPPO, "a2c": RecurrentA2C, "ppo_meta": RecurrentPPO, "a2c_meta": RecurrentA2C}
_RIM_KEYS = (
    "num_units", "k", "num_input_heads", "input_key_size", "input_value_size",
    "num_comm_heads", "comm_key_size", "comm_value_size", "attention_dropout", "communication_update", "selection",
    "num_layers", "top_down", "communication", "num_slots", "slot_size", "write_k", "num_schemata", "schema_key_size",
)  # fmt: skip


RESUME_MAY_CHANGE = ("resume", "progress_bar", "logger")  # keys a resumed run may set differently


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


def validate(cfg: DictConfig) -> Split:
    """Check the whole config (:func:`agents.experiment.config.typed_config`) before building; return the split.

    :raises ConfigError: on the first problem found.
    """
    typed = typed_config(cfg)
    try:
        split = split_from_dict(OmegaConf.to_container(typed.env, resolve=True), source="env")
    except ValueError as error:
        raise ConfigError(str(error)) from error
    eval_conditions(typed, split)
    return split


def eval_conditions(cfg: DictConfig, split: Split) -> list[str]:
    """The test conditions that ``cfg.eval.conditions`` selects (``null``: all of the split's).

    :raises ConfigError: not ``null`` or a non-empty list of the split's condition names.
    """
    chosen = OmegaConf.select(cfg, "eval.conditions", default=None)
    if chosen is None:
        return list(split.test)
    names = OmegaConf.to_container(chosen) if OmegaConf.is_list(chosen) else chosen
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"eval.conditions must be null or a non-empty list of condition names, got {names!r}")
    valid = list(split.evaluable)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ConfigError(f"eval.conditions must name conditions of split {split.name!r} {valid}, got {unknown}")
    return [n for n in valid if n in names]


def build_model(cfg: DictConfig, env: Any) -> RecurrentPPO:
    """The algorithm of ``cfg.agent`` with the core of ``cfg.model`` on ``env``."""
    cfg = typed_config(cfg)
    model_cfg = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if v is not None}
    core = model_cfg.pop("core")
    core_kwargs = {
        k: v for k, v in model_cfg.items() if k == "hidden_size" or (core.startswith("rim") and k in _RIM_KEYS)
    }
    agent_cfg = OmegaConf.to_container(cfg.agent, resolve=True)
    if agent_cfg.get("fast_slow") is None:
        agent_cfg.pop("fast_slow", None)
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

    The config is validated and the environments and agent are built before anything is
    written. With ``cfg.resume`` true and a checkpoint in ``run_dir``, training continues from
    it (on CPU the result equals an uninterrupted run's); a finished run returns its metrics.
    SIGINT/SIGTERM (and SLURM's SIGUSR2) stop training at the next rollout boundary with a
    checkpoint. One process at a time may hold a run folder (an exclusive lock on ``.lock``).

    :param callbacks: extra SB3 callbacks for ``learn``.
    :returns: ``{condition: mean deterministic return}`` of the final evaluation.
    :raises ConfigError: before anything is written, if the config cannot run, if ``run_dir``
        already holds a run and ``cfg.resume`` is false, holds a run of another config, or is
        in use by another process.
    :raises TrainingInterruptedError: after writing a checkpoint, when a signal stopped training.
    """
    cfg = typed_config(cfg)
    split = validate(cfg)
    resume = bool(OmegaConf.select(cfg, "resume", default=False))
    state = _previous_run(cfg, run_dir, resume)
    if state is not None and state["num_timesteps"] >= cfg.total_frames and (run_dir / "metrics.json").is_file():
        log.info("%s is finished; its final evaluation is in eval.json", run_dir)
        return json.loads((run_dir / "metrics.json").read_text())
    env, model = _build(cfg, split, state)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(run_dir):
        if state is None and (run_dir / "config.yaml").is_file() and not resume:  # written since the check above
            env.close()
            raise _holds_run_error(run_dir)
        if state is None:
            atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        extra = state["extra"] if state else {}
        wandb_run = _start_wandb(cfg, run_dir, extra.get("wandb_id"))
        exit_code = 1
        try:
            metrics = _train(cfg, split, run_dir, env, model, state, wandb_run, callbacks)
            exit_code = 0
            return metrics
        except TrainingInterruptedError:
            exit_code = 0
            raise
        except Exception as error:  # the folder says so; resume refuses it
            _mark_failed(run_dir, error)
            raise
        finally:
            wandb_run.finish(exit_code=exit_code)


FAILED = "FAILED"  # marker of a run folder whose training raised; holds the exception's last line


def _mark_failed(run_dir: Path, error: BaseException) -> None:
    """Write ``run_dir/FAILED`` with the exception's one-line summary."""
    line = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
    atomic_write_text(run_dir / FAILED, line + "\n")
    log.error("training failed; %s marks %s", FAILED, run_dir)


def _previous_run(cfg: DictConfig, run_dir: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to continue from, or ``None`` for a fresh run.

    :raises ConfigError: the folder holds a run and ``resume`` is false, or a run of another config.
    """
    if (run_dir / FAILED).is_file():
        reason = (run_dir / FAILED).read_text().strip()
        raise ConfigError(f"cannot resume {run_dir}: its training failed ({reason}); start a new run folder")
    holds_run = (run_dir / "config.yaml").is_file()
    if not holds_run:
        return None
    if not resume:
        raise _holds_run_error(run_dir)
    _check_same_config(cfg, run_dir)
    ckpt_path = run_dir / checkpoint.CHECKPOINT
    if not ckpt_path.is_file():
        log.info("%s has no checkpoint yet; starting it again from the beginning", run_dir)
        return None
    state = checkpoint.load(ckpt_path)
    log.info("resuming %s from %d frames", run_dir, state["num_timesteps"])
    return state


def _holds_run_error(run_dir: Path) -> ConfigError:
    return ConfigError(f"{run_dir} already holds a run; pass resume=true to continue it, or use another folder")


def _build(cfg: DictConfig, split: Split, state: dict[str, Any] | None) -> tuple[VecEnv, RecurrentPPO]:
    """Environments (fresh, or as checkpointed) and the agent on them.

    :raises ConfigError: the agent cannot be built from ``cfg`` (e.g. an unknown or invalid
        ``agent.*`` option).
    """
    torch.manual_seed(cfg.seed)
    env = checkpoint.restore_env(state) if state else make_condition_vec_env(split.train, cfg.n_envs, seed=cfg.seed)
    try:
        return env, build_model(cfg, env)
    except (ValueError, TypeError, AssertionError, RuntimeError) as error:
        env.close()
        raise ConfigError(f"cannot build the agent from this config: {type(error).__name__}: {error}") from error


@contextlib.contextmanager
def _exclusive(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir/.lock`` (released on exit, also if the process dies).

    :raises ConfigError: another process holds it.
    """
    with (run_dir / ".lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ConfigError(f"{run_dir} is in use by another process (lock on {run_dir / '.lock'})") from error
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train(
    cfg: DictConfig,
    split: Split,
    run_dir: Path,
    env: VecEnv,
    model: RecurrentPPO,
    state: dict[str, Any] | None,
    wandb_run: WandbRun,
    callbacks: Sequence[BaseCallback],
) -> dict[str, float]:
    extra = state["extra"] if state else {}
    metrics_log = MetricsLog(run_dir / "metrics.csv", wandb_run, rows=extra.get("metrics_rows"))
    model.set_logger(Logger(folder=None, output_formats=[metrics_log]))
    conditions = eval_conditions(cfg, split)
    ood = OODEvalCallback(split, cfg.eval.every_frames, cfg.eval.episodes, conditions=conditions)
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
        env.close()
        if interrupt.requested:
            frames = int(checkpoint.load(run_dir / checkpoint.CHECKPOINT)["num_timesteps"])
            raise TrainingInterruptedError(run_dir, frames, interrupt.signum, interrupt.previous.get(interrupt.signum))
        _atomic_save_model(model, run_dir / "model.zip")
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
    cfg: DictConfig,
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


def _atomic_save_model(model: RecurrentPPO, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


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
    saved_cfg = OmegaConf.load(run_dir / "config.yaml")
    with contextlib.suppress(ConfigError):  # compare with the defaults filled in, as `given` has them
        saved_cfg = typed_config(saved_cfg)
    saved = OmegaConf.to_container(saved_cfg, resolve=True)
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
