"""Schemas of the top level of ``configs/train.yaml`` and its ``eval``, ``checkpoint`` and ``logger`` nodes,
with the relations between groups (:meth:`TrainConfig.check`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import MISSING

from agents.experiment.config.agent import AgentConfig, PPOConfig
from agents.experiment.config.checks import ConfigError, boolean, one_of, positive_int, positive_number
from agents.experiment.config.env import SplitConfig
from agents.experiment.config.model import RIM_CORES, ModelConfig

WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class EvalConfig:
    """``eval.*``: periodic OOD evaluation, the final evaluation and its GIFs."""

    every_frames: int = field(default=50000, metadata={"help": "frames between periodic OOD evaluations"})
    conditions: list[str] | None = field(
        default=None, metadata={"help": "test conditions to evaluate, e.g. [iid]; null: all of the split's"}
    )
    episodes: int = field(default=10, metadata={"help": "episodes per condition in periodic evaluations"})
    final_episodes: int = field(default=100, metadata={"help": "episodes per condition in the final evaluation"})
    gifs: bool = field(default=True, metadata={"help": "record one episode per condition (media/<condition>.gif)"})
    gif_max_steps: int = field(default=150, metadata={"help": "GIFs stop after this many steps"})

    def __post_init__(self) -> None:
        for key in ("every_frames", "episodes", "final_episodes", "gif_max_steps"):
            positive_int(f"eval.{key}", getattr(self, key))
        boolean("eval.gifs", self.gifs)
        if self.conditions is not None and not self.conditions:
            raise ConfigError(
                f"eval.conditions must be null or a non-empty list of condition names, got {self.conditions!r}"
            )


@dataclass
class CheckpointConfig:
    """``checkpoint.*``: periodic checkpoints (also written on SIGINT/SIGTERM and at the end)."""

    every_frames: int = field(default=25000, metadata={"help": "frames between periodic checkpoints"})
    keep: int = field(
        default=2, metadata={"help": "checkpoints kept: the newest and the keep-1 before it (resume falls back)"}
    )

    def __post_init__(self) -> None:
        positive_int("checkpoint.every_frames", self.every_frames)
        positive_int("checkpoint.keep", self.keep)


@dataclass
class NoLoggerConfig:
    """``logger=none``: no W&B; the run folder still gets every file."""

    name: str = field(default="none", metadata={"help": "none"})

    def __post_init__(self) -> None:
        one_of("logger.name", self.name, ("none",))


@dataclass
class WandbLoggerConfig:
    """``logger=wandb``: Weights & Biases, offline by default."""

    name: str = field(default="wandb", metadata={"help": "wandb"})
    mode: str = field(default="offline", metadata={"help": "offline, online or disabled"})
    project: str = field(default="rims", metadata={"help": "W&B project"})
    entity: str | None = field(default=None, metadata={"help": "W&B entity; null: your default"})
    group: str | None = field(default=None, metadata={"help": "W&B group; null: a sweep's folder name"})
    tags: list[str] = field(default_factory=list, metadata={"help": "W&B tags"})
    init_timeout: float = field(default=60.0, metadata={"help": "seconds to wait for W&B before going on without"})

    def __post_init__(self) -> None:
        one_of("logger.name", self.name, ("wandb",))
        one_of("logger.mode", self.mode, WANDB_MODES)
        if not isinstance(self.project, str) or not self.project.strip():
            raise ConfigError(f"logger.project must be a non-empty W&B project name, got {self.project!r}")
        for key in ("entity", "group"):
            value = getattr(self, key)
            if value is not None and not value.strip():
                raise ConfigError(f"logger.{key} must be null or a non-empty name, got {value!r}")
        positive_number("logger.init_timeout", self.init_timeout)


def logger_schema(name: object) -> type:
    """The schema of a ``logger`` node named ``name``."""
    return NoLoggerConfig if name == "none" else WandbLoggerConfig


def check_device(device: Any) -> None:
    """``device`` names a device torch can use here.

    :raises ConfigError: not cpu/cuda[:index], or a GPU that is not here.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r}") from error
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device must be available: got {device!r}, but torch.cuda.is_available() is False")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"device index must be < {torch.cuda.device_count()} GPUs here, got {device!r}")
    elif parsed.type != "cpu":
        raise ConfigError(f"device must be 'cpu' or 'cuda[:index]', got {device!r}")


@dataclass
class TrainConfig:
    """Top level of ``configs/train.yaml``: one run (the groups ``model``, ``agent``, ``env`` and
    ``logger`` carry their own schemas; see :func:`agents.experiment.config.schema.typed_config`)."""

    seed: int = field(default=0, metadata={"help": "seed of torch, the environments and the evaluation, >= 0"})
    total_frames: int = field(default=300000, metadata={"help": "training budget in environment frames"})
    n_envs: int = field(default=8, metadata={"help": "parallel training environments"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or cuda:<index>"})
    torch_threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    progress_bar: bool = field(default=True, metadata={"help": "show progress bars"})
    resume: Any = field(
        default=False, metadata={"help": "true: continue this folder's checkpoint; or a run folder path"}
    )
    objective: str | None = field(
        default=None,
        metadata={
            "help": "the evaluated condition whose final return a sweep optimises (the run's return value); "
            "null: iid when evaluated, else the first evaluated condition"
        },
    )
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, metadata={"help": "checkpoints"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "evaluation"})
    model: Any = field(default=MISSING, metadata={"help": "the recurrent core (group model/)"})
    agent: Any = field(default=MISSING, metadata={"help": "the algorithm (group agent/)"})
    env: Any = field(default=MISSING, metadata={"help": "the split (group env/)"})
    logger: Any = field(default=MISSING, metadata={"help": "W&B or none (group logger/)"})

    def __post_init__(self) -> None:
        positive_int("seed", self.seed, minimum=0)
        for key in ("total_frames", "n_envs", "torch_threads"):
            positive_int(key, getattr(self, key))
        boolean("progress_bar", self.progress_bar)
        if not isinstance(self.resume, (bool, str)):
            raise ConfigError(f"resume must be true, false or a run folder, got {self.resume!r}")

    def check(self) -> None:
        """The relations between groups (run after every node passed its own checks).

        :raises ConfigError: the first relation that does not hold.
        """
        check_device(self.device)
        model: ModelConfig = self.model
        env: SplitConfig = self.env
        agent: AgentConfig = self.agent
        if agent.fast_slow is not None and model.core not in RIM_CORES:
            raise ConfigError(f"agent.fast_slow needs a RIM-family model.core {list(RIM_CORES)}, got {model.core!r}")
        rollout = agent.n_steps * self.n_envs
        if isinstance(agent, PPOConfig):  # a minibatch bigger than the rollout would silently be the rollout
            inner = agent.fast_slow.inner_batch_size if agent.fast_slow is not None else None
            for key, size in (("agent.batch_size", agent.batch_size), ("agent.fast_slow.inner_batch_size", inner)):
                if size is not None and size > rollout:
                    raise ConfigError(
                        f"{key} must be in [1, agent.n_steps * n_envs] = [1, {agent.n_steps} * {self.n_envs}] = "
                        f"[1, {rollout}] (a minibatch is drawn from one rollout), got {size}; lower {key} or "
                        "raise agent.n_steps / n_envs"
                    )
        tests = ["iid", *env.test, *(f"iid_{p}" for p in env.perturbations)]
        names = tests + (["validation"] if env.validation_seeds is not None else [])
        if self.eval.conditions is not None:
            unknown = [n for n in self.eval.conditions if n not in names]
            if unknown:
                raise ConfigError(f"eval.conditions must name conditions of split {env.name!r} {names}, got {unknown}")
        evaluated = tests if self.eval.conditions is None else [n for n in names if n in self.eval.conditions]
        if self.objective is not None and self.objective not in evaluated:
            chosen = "eval.conditions" if self.eval.conditions is not None else "the split's test conditions"
            hint = "; add it to eval.conditions to evaluate it" if self.objective in names else ""
            raise ConfigError(
                f"objective must be null or a condition the run evaluates ({chosen}: {evaluated}), "
                f"got {self.objective!r}{hint}"
            )


def objective_condition(objective: str | None, evaluated: Sequence[str]) -> str:
    """The condition whose final return a run gives a sweeper (``objective``, checked by :meth:`TrainConfig.check`).

    :param objective: the config's ``objective``; ``None``: ``iid`` when evaluated, else the first of ``evaluated``.
    :param evaluated: the conditions the run evaluated, in the split's order.
    :raises ValueError: ``objective`` is not among ``evaluated`` (or nothing was evaluated).
    """
    if objective is None:
        if not evaluated:
            raise ValueError("objective: the run evaluated no condition")
        return "iid" if "iid" in evaluated else evaluated[0]
    if objective not in evaluated:
        raise ValueError(f"objective must be one of the evaluated conditions {list(evaluated)}, got {objective!r}")
    return objective
