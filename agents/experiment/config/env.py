"""Schemas of the ``env`` group: a generalisation split (``envs/splits.py``, ``configs/env/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from agents.experiment.config.checks import ConfigError, positive_int


def registered_env_ids() -> set[str]:
    """The environment ids gymnasium knows once MiniGrid registered its own (no environment is built)."""
    import gymnasium
    import minigrid  # noqa: F401  (registers the MiniGrid-* ids)

    return set(gymnasium.envs.registry)


def check_env_id(key: str, env_id: str) -> None:
    """``env_id`` is registered in gymnasium.

    :raises ConfigError: naming ``key``, with a few registered ids of the same family.
    """
    known = registered_env_ids()
    if env_id not in known:
        family = env_id.split("-")[1] if env_id.count("-") >= 2 else ""
        similar = sorted(i for i in known if family and family in i)[:6]
        raise ConfigError(f"{key} must be an environment id registered in gymnasium, got {env_id!r} (e.g. {similar})")


@dataclass
class SeedRangeConfig:
    """Level seeds ``start .. start + count - 1``."""

    start: int = field(default=0, metadata={"help": "first level seed, >= 0"})
    count: int = field(default=100000, metadata={"help": "number of level seeds, >= 1"})


@dataclass
class LevelsConfig:
    """``env.train``: the training environment."""

    env_id: str = field(default=MISSING, metadata={"help": "gymnasium id of the training environment"})
    seeds: SeedRangeConfig = field(default_factory=SeedRangeConfig, metadata={"help": "training level seeds"})
    env_kwargs: dict[str, Any] | None = field(default=None, metadata={"help": "keyword arguments of gym.make"})


@dataclass
class ConditionConfig:
    """``env.test.<name>``: one named test condition (on ``env.test_seeds``)."""

    env_id: str = field(default=MISSING, metadata={"help": "gymnasium id of the test environment"})
    perturbation: str | None = field(default=None, metadata={"help": "visual perturbation; null: none"})
    env_kwargs: dict[str, Any] | None = field(default=None, metadata={"help": "keyword arguments of gym.make"})


@dataclass
class SplitConfig:
    """``env=<split>``: train levels and named test conditions whose seeds never overlap the train seeds."""

    name: str = field(default=MISSING, metadata={"help": "the split's name (run folders, W&B)"})
    train: LevelsConfig = field(default_factory=LevelsConfig, metadata={"help": "training environment and seeds"})
    test: dict[str, ConditionConfig] = field(
        default_factory=dict, metadata={"help": "named test conditions (iid and iid_<perturbation> are added)"}
    )
    test_seeds: SeedRangeConfig = field(
        default_factory=lambda: SeedRangeConfig(1000000, 10000), metadata={"help": "level seeds of every test"}
    )
    perturbations: list[str] = field(
        default_factory=lambda: ["background", "distractors"], metadata={"help": "iid_<p> conditions to add"}
    )

    def __post_init__(self) -> None:
        from envs.splits import split_from_dict

        positive_int("env.train.seeds.count", self.train.seeds.count)
        positive_int("env.test_seeds.count", self.test_seeds.count)
        positive_int("env.train.seeds.start", self.train.seeds.start, minimum=0)
        positive_int("env.test_seeds.start", self.test_seeds.start, minimum=0)
        check_env_id("env.train.env_id", self.train.env_id)
        for name, condition in self.test.items():
            check_env_id(f"env.test.{name}.env_id", condition.env_id)
        data = {
            "name": self.name,
            "train": {
                "env_id": self.train.env_id,
                "seeds": vars(self.train.seeds),
                "env_kwargs": self.train.env_kwargs,
            },
            "test": {n: vars(c) for n, c in self.test.items()},
            "test_seeds": vars(self.test_seeds),
            "perturbations": list(self.perturbations),
        }
        try:
            split_from_dict(data, source="env")
        except ValueError as error:
            raise ConfigError(str(error)) from error
