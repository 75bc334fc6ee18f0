"""Typed configs of a run: one dataclass per config node, registered in Hydra's ConfigStore.

``configs/**/*.yaml`` name their schema in their defaults list (``/schema/<group>@_here_: <name>``)
and keep only what differs from its defaults. :func:`typed_config` checks any config (composed by
Hydra or a plain ``DictConfig``) against them; ``rims-train --info`` lists every key.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from agents.experiment.config.agent import A2CConfig, FastSlowSchema, PPOConfig
from agents.experiment.config.checks import ConfigError
from agents.experiment.config.env import SplitConfig
from agents.experiment.config.model import ModelConfig, RIMModelConfig
from agents.experiment.config.run import CheckpointConfig, EvalConfig, NoLoggerConfig, TrainConfig, WandbLoggerConfig
from agents.experiment.config.schema import config_dict, config_yaml, typed_config

SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"plain": ModelConfig, "rim": RIMModelConfig},
    "agent": {"ppo": PPOConfig, "a2c": A2CConfig},
    "logger": {"wandb": WandbLoggerConfig, "none": NoLoggerConfig},
    "env": {"split": SplitConfig},
}


def register() -> None:
    """Store the schemas in Hydra's ConfigStore: ``train_schema`` and ``schema/<group>/<name>``."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)


register()

__all__ = [
    "SCHEMAS",
    "A2CConfig",
    "CheckpointConfig",
    "ConfigError",
    "EvalConfig",
    "FastSlowSchema",
    "ModelConfig",
    "NoLoggerConfig",
    "PPOConfig",
    "RIMModelConfig",
    "SplitConfig",
    "TrainConfig",
    "WandbLoggerConfig",
    "config_dict",
    "config_yaml",
    "register",
    "typed_config",
]  # fmt: skip
