"""``rims-train`` / ``scripts/train.py``: one training run (or a sweep) from the Hydra config tree.

Usage::

    rims-train                                        # RIM-PPO on doorkey, 300k frames, OOD table
    rims-train model=lstm env=empty seed=3 total_frames=100000
    rims-train model.num_units=6 model.k=4 model.hidden_size=192 agent=a2c logger=none
    rims-train -m model=lstm,rim seed=0,1,2           # sweep, one run folder per job
    rims-train -m sweep=rim_vs_lstm env=empty hydra/launcher=joblib
    rims-train resume=runs/2026-11-28/10-00-00_ppo_rim_doorkey_s0   # continue a stopped run

    rims-train --help                                 # every group and key: type, default, meaning
                                                      # (--info prints the same; --hydra-help: Hydra's)

Exit status: 0 done; 2 invalid config (one-line reason naming the key, no run folder left behind);
3 the run folder cannot be resumed as it is (no checkpoint verifies and loads, or it comes from an
incompatible version of the suite; the message names each file and why; nothing is changed);
75 the environment failed (no space left, a read-only or vanished file system, out of memory: one
line naming the file and the cause; the folder keeps its last good checkpoint, and ``resume=<folder>``
continues it once the cause is gone); 1 training raised for a reason of the config or code (the run
folder holds a ``FAILED`` marker and resume refuses it); 130 / 143 stopped by SIGINT / SIGTERM after
writing a checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from agents.cli import sweep_failures
from agents.experiment.config import TrainConfig, typed_config
from agents.experiment.config.describe import describe
from agents.experiment.config.run import objective_condition
from agents.experiment.config.schema import composition_error
from agents.experiment.faults import EnvironmentFailureError, RunFolderError
from agents.experiment.run import ConfigError, TrainingInterruptedError, train

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
HYDRA_FILES = (".hydra", "train.log")
EXIT_ENVIRONMENT = 75  # sysexits.h EX_TEMPFAIL: a temporary failure; resuming later succeeds
log = logging.getLogger(__name__)


class JobFailedError(CompactHydraException):
    """A sweep job stopped by a fault its message explains: Hydra prints the message, no traceback."""


def _resume_value(argv: list[str]) -> str | None:
    """The value of the last ``resume=`` (or ``+resume=``, ``++resume=``) override, if any."""
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("resume=")]
    return given[-1] if given else None


def _resume_argv(argv: list[str]) -> list[str]:
    """With ``resume=<run folder>``, run in that folder and keep its original ``.hydra`` record.

    Adds ``hydra.run.dir=<folder>`` (unless given) and puts this call's Hydra files under
    ``.hydra/resume-<time>`` instead of overwriting the ones of the original command.
    """
    value = _resume_value(argv)
    if value is None or value.lower() in ("true", "false"):
        return argv
    extra = [] if any(a.startswith("hydra.run.dir=") for a in argv) else [f"hydra.run.dir={value}"]
    return [*argv, *extra, "hydra.output_subdir=.hydra/resume-${now:%Y-%m-%d_%H-%M-%S}"]


def _allowed_beside_resume(override: str) -> bool:
    return override.lstrip("+").startswith(("resume=", "hydra.", "progress_bar=", "logger=", "logger."))


def _prepare(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """Load the saved config for ``resume=<folder>``; name the W&B group of a sweep.

    With ``resume=<folder>`` the saved config is used as it is, except ``progress_bar`` and
    ``logger`` which come from this call.

    :raises ConfigError: ``resume`` names no run folder, is not this run's folder, or comes
        with overrides that would change the saved config.
    """
    hydra_cfg = HydraConfig.get()
    if isinstance(cfg.resume, str) and cfg.resume.lower() not in ("true", "false"):
        folder = Path(cfg.resume)
        if not (folder / "config.yaml").is_file():
            raise ConfigError(f"resume must be true, false or a run folder with config.yaml, got {cfg.resume!r}")
        if folder.resolve() != run_dir.resolve():
            raise ConfigError(f"resume={cfg.resume} must run in that folder, but this run's folder is {run_dir}")
        extra = [o for o in hydra_cfg.overrides.task if not _allowed_beside_resume(o)]
        if extra:
            raise ConfigError(
                f"resume={cfg.resume} continues that run with its saved config; drop the overrides {extra}"
            )
        saved = OmegaConf.load(folder / "config.yaml")
        with open_dict(saved):
            saved.resume = True
            saved.progress_bar = cfg.progress_bar
            saved.logger = cfg.logger if "logger" not in saved or _logger_overridden(hydra_cfg) else saved.logger
        return saved
    if hydra_cfg.mode == RunMode.MULTIRUN and cfg.logger.name == "wandb" and cfg.logger.get("group") is None:
        with open_dict(cfg):
            cfg.logger.group = "_".join(Path(hydra_cfg.sweep.dir).parts[-2:])
    return cfg


def _logger_overridden(hydra_cfg: DictConfig) -> bool:
    return any(o.lstrip("+").startswith(("logger=", "logger.")) for o in hydra_cfg.overrides.task)


def _remove_if_empty(run_dir: Path) -> None:
    """Remove a run folder holding nothing but Hydra's own files."""
    if run_dir.is_dir() and all(p.name in HYDRA_FILES for p in run_dir.iterdir()):
        shutil.rmtree(run_dir)


def set_process_threads(cfg: TrainConfig) -> None:
    """Set torch's intra-op threads to ``cfg.torch_threads`` (checked by the typed config): a process-wide
    setting, made here at the entry point, not by the library."""
    torch.set_num_threads(cfg.torch_threads)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        typed = typed_config(_prepare(cfg, run_dir))  # the run's typed config, built once and passed down
        set_process_threads(typed)
        metrics = train(typed, run_dir)
    except ConfigError as error:
        print(f"error: invalid config: {error}", file=sys.stderr)
        _remove_if_empty(run_dir)
        if multirun:  # fail this job only; Hydra runs the others and reports the failure at the end
            sweep_failures.record(f"invalid config: {error}")
            raise
        sys.exit(2)
    except RunFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        if multirun:
            sweep_failures.record(f"{error} (run folder {run_dir})")
            raise JobFailedError(f"{error} (run folder {run_dir})") from None
        sys.exit(3)
    except EnvironmentFailureError as failure:
        print(f"error: {failure}\nresume with: rims-train resume={run_dir}", file=sys.stderr)
        if multirun:  # listed as resumable: the sweep rerun with resume=true continues it
            sweep_failures.record(f"{failure.cause} (run folder {run_dir})", resumable=True)
            raise JobFailedError(f"{failure} (run folder {run_dir})") from None
        sys.exit(EXIT_ENVIRONMENT)
    except TrainingInterruptedError as stop:
        print(f"{stop}\nresume with: rims-train resume={run_dir}", file=sys.stderr)
        if stop.signum == getattr(signal, "SIGUSR2", None) and callable(stop.previous_handler):
            stop.previous_handler(stop.signum, None)  # submitit: requeue the job on SLURM
        sys.exit(128 + stop.signum)
    except Exception as error:  # training raised: the run folder holds FAILED (agents.experiment.run)
        if multirun:
            lines = str(error).strip().splitlines()
            sweep_failures.record(f"{type(error).__name__}: {lines[-1] if lines else ''} (run folder {run_dir})")
        raise
    print(f"run folder: {run_dir}")
    return objective_value(metrics, typed)


def objective_value(metrics: dict[str, float], cfg: TrainConfig) -> float:
    """The value a Hydra sweeper optimises: the final return of the condition ``cfg.objective`` names
    (``null``: ``iid`` when evaluated, else the first evaluated condition, e.g. with ``eval.conditions=[validation]``).
    """
    return float(metrics[objective_condition(cfg.objective, list(metrics))])


def _check_composition(overrides: list[str]) -> None:
    """Compose a single run's config once, so that an unknown key or a wrong type exits 2 with the
    key and the node's valid keys (Hydra alone would exit 1 with its own message). Sweeps and calls
    with Hydra flags are left to Hydra."""
    if any(o.startswith("-") for o in overrides):
        return
    from hydra import compose, initialize_config_dir

    task = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    for override in task:  # an optional group (sweep) with an unknown option: Hydra would skip it silently
        group, _, option = override.lstrip("+").partition("=")
        folder = CONFIG_DIR / group
        if option and option != "null" and folder.is_dir() and not (folder / f"{option}.yaml").is_file():
            options = sorted(p.stem for p in folder.glob("*.yaml"))
            print(
                f"error: invalid config: {group}={option} is not an option of the config group {group}; "
                f"options: {options}",
                file=sys.stderr,
            )
            sys.exit(2)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose(config_name="train", overrides=task)
    except Exception as error:  # Hydra's and OmegaConf's composition errors: report the key, exit 2
        print(f"error: invalid config: {composition_error(error)}", file=sys.stderr)
        sys.exit(2)


USAGE = (
    "usage: rims-train [key=value ...] [group=option ...] [-m] [--help]\n"
    "Overrides use Hydra's syntax: key=value sets a key, group=option picks a file of a group, +key=value adds a "
    "key, ~key removes one; -m key=a,b sweeps over values (Hydra's own flags: --hydra-help)."
)


def config_groups() -> str:
    """Every config group under ``configs/`` with its options, the default of ``train.yaml`` in brackets."""
    defaults: dict[str, str | None] = {}
    for entry in yaml.safe_load((CONFIG_DIR / "train.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            ((key, value),) = entry.items()
            defaults[key.split()[-1]] = value  # "optional sweep" -> "sweep"
    lines = ["Config groups (group=option; the default in brackets):"]
    for folder in sorted(CONFIG_DIR.rglob("*")):
        options = sorted(f.stem for f in folder.glob("*.yaml")) if folder.is_dir() else []
        if options:
            group = folder.relative_to(CONFIG_DIR).as_posix()
            chosen = defaults.get(group)
            listed = [f"[{o}]" if o == chosen else o for o in options]
            lines.append(f"  {group:<24} {', '.join(listed)}")
    return "\n".join(lines)


def help_text() -> str:
    """What ``--help`` (and ``--info``) print: usage, override syntax, the groups and every key of the schemas."""
    return f"{USAGE}\n\n{config_groups()}\n\n{describe()}"


def _print(text: str) -> None:
    """Print to stdout; a reader that stops early (``rims-train --help | head``) is no error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def main() -> None:
    """Console entry point (``rims-train``)."""
    if not (CONFIG_DIR / "train.yaml").is_file():
        sys.exit(f"error: no config tree at {CONFIG_DIR}; install the project from its checkout (pip install -e .)")
    if {"--info", "--help", "-h"} & set(sys.argv[1:]):
        _print(help_text())
        return
    _check_composition(sys.argv[1:])
    sys.argv = [sys.argv[0], *_resume_argv(sys.argv[1:])]
    try:
        _main()
    finally:
        failed = sweep_failures.summary()
        if failed:
            print(failed, file=sys.stderr)
