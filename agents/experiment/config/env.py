"""Schemas of the ``env`` group: a generalisation split (``envs/splits.py``, ``configs/env/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from agents.experiment.config.checks import ConfigError, positive_int

_BUILT: dict[tuple[str, str], tuple[tuple[int, ...], str] | str] = {}  # (env_id, kwargs) -> shapes or error


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
        examples = f" (e.g. {similar})" if similar else " (e.g. MiniGrid-DoorKey-5x5-v0; configs/env/*.yaml)"
        raise ConfigError(f"{key} must be an environment id registered in gymnasium, got {env_id!r}{examples}")


def _built(env_id: str, env_kwargs: dict[str, Any], seed: int) -> tuple[tuple[int, ...], str] | str:
    """``(image shape, action space)`` of ``env_id`` made with ``env_kwargs`` and reset to ``seed``,
    or why it cannot be (cached: MiniGrid makes and resets in about a millisecond)."""
    cache_key = (env_id, repr(sorted(env_kwargs.items())) + f"@{seed}")
    if cache_key not in _BUILT:
        import gymnasium

        try:
            env = gymnasium.make(env_id, **env_kwargs)
            try:
                env.reset(seed=seed)
                image = (
                    env.observation_space["image"] if isinstance(env.observation_space, gymnasium.spaces.Dict) else None
                )
                if image is None:
                    _BUILT[cache_key] = f"its observations are {env.observation_space}, not MiniGrid's image dict"
                else:
                    _BUILT[cache_key] = (tuple(image.shape), str(env.action_space))
            finally:
                env.close()
        except Exception as error:  # gym.make / reset of a user's kwargs: any exception is a bad config
            text = str(error).strip().splitlines()
            _BUILT[cache_key] = f"{type(error).__name__}{': ' + text[0] if text else ''}"
    return _BUILT[cache_key]


def check_environments(split: SplitConfig) -> None:
    """Every environment of ``split`` can be made with its ``env_kwargs`` and reset to its first seed,
    gives MiniGrid's image observations, and matches the training environment's image shape and
    action space (the agent is built on the training one).

    :raises ConfigError: naming the key (``env.train.env_kwargs``, ``env.test.<name>.env_id``, ...) and why.
    """

    def fail(key: str, env_id: str, env_kwargs: dict[str, Any] | None, reason: str) -> ConfigError:
        if env_kwargs:
            return ConfigError(f"{key}.env_kwargs {env_kwargs} must be arguments that make {env_id!r}, but {reason}")
        return ConfigError(
            f"{key}.env_id must make a MiniGrid environment with image observations, got {env_id!r}: {reason}"
        )

    train = _built(split.train.env_id, dict(split.train.env_kwargs or {}), split.train.seeds.start)
    if isinstance(train, str):
        raise fail("env.train", split.train.env_id, split.train.env_kwargs, train)
    for name, condition in split.test.items():
        built = _built(condition.env_id, dict(condition.env_kwargs or {}), split.test_seeds.start)
        if isinstance(built, str):
            raise fail(f"env.test.{name}", condition.env_id, condition.env_kwargs, built)
        if built != train:
            raise ConfigError(
                f"env.test.{name} must have the training environment's (image shape, action space) {train}, "
                f"got {built} ({condition.env_id!r}, env_kwargs {condition.env_kwargs})"
            )


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
    validation_seeds: SeedRangeConfig | None = field(
        default=None,
        metadata={"help": "level seeds of the 'validation' condition (tuning only); null: none"},
    )
    perturbations: list[str] = field(
        default_factory=lambda: ["background", "distractors"], metadata={"help": "iid_<p> conditions to add"}
    )

    def __post_init__(self) -> None:
        from envs.perturbations import PERTURBATIONS
        from envs.splits import SeedRange, split_from_dict

        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ConfigError(f"env.name must be a non-empty name without '/' (run folders use it), got {self.name!r}")
        positive_int("env.train.seeds.count", self.train.seeds.count)
        positive_int("env.test_seeds.count", self.test_seeds.count)
        positive_int("env.train.seeds.start", self.train.seeds.start, minimum=0)
        positive_int("env.test_seeds.start", self.test_seeds.start, minimum=0)
        if self.validation_seeds is not None:
            positive_int("env.validation_seeds.count", self.validation_seeds.count)
            positive_int("env.validation_seeds.start", self.validation_seeds.start, minimum=0)
        train_seeds, test_seeds = SeedRange(**vars(self.train.seeds)), SeedRange(**vars(self.test_seeds))
        if train_seeds.overlaps(test_seeds):
            raise ConfigError(
                f"env.test_seeds must not overlap env.train.seeds {train_seeds}: test seeds {test_seeds} overlap "
                f"train seeds {train_seeds} (split {self.name!r})"
            )
        unknown = [p for p in self.perturbations if p not in PERTURBATIONS]
        if unknown:
            raise ConfigError(
                f"env.perturbations must be a list of names in {sorted(PERTURBATIONS)}, "
                f"got unknown perturbations {unknown}"
            )
        added = ["iid", "validation", *(f"iid_{p}" for p in self.perturbations)]
        for name, condition in self.test.items():
            if name in added:
                raise ConfigError(f"env.test.<name> must not be one of the added conditions {added}, got {name!r}")
            if condition.perturbation is not None and condition.perturbation not in PERTURBATIONS:
                raise ConfigError(
                    f"env.test.{name}.perturbation must be null or one of {sorted(PERTURBATIONS)}, "
                    f"got unknown perturbation {condition.perturbation!r}"
                )
        check_env_id("env.train.env_id", self.train.env_id)
        for name, condition in self.test.items():
            check_env_id(f"env.test.{name}.env_id", condition.env_id)
        check_environments(self)
        data = {
            "name": self.name,
            "train": {
                "env_id": self.train.env_id,
                "seeds": vars(self.train.seeds),
                "env_kwargs": self.train.env_kwargs,
            },
            "test": {n: vars(c) for n, c in self.test.items()},
            "test_seeds": vars(self.test_seeds),
            "validation_seeds": None if self.validation_seeds is None else vars(self.validation_seeds),
            "perturbations": list(self.perturbations),
        }
        try:
            split_from_dict(data, source="env")
        except ValueError as error:
            raise ConfigError(str(error)) from error
