"""``rims-train --help`` / ``--info``: every group and key with its type, default and meaning, read from the schemas."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from omegaconf import MISSING

from agents.experiment.config.agent import A2CConfig, FastSlowSchema, PPOConfig
from agents.experiment.config.env import ConditionConfig, LevelsConfig, SeedRangeConfig, SplitConfig
from agents.experiment.config.model import ModelConfig, RIMModelConfig
from agents.experiment.config.run import CheckpointConfig, EvalConfig, NoLoggerConfig, TrainConfig, WandbLoggerConfig

SECTIONS: tuple[tuple[str, str, type], ...] = (
    ("top level", "", TrainConfig),
    ("eval", "eval.", EvalConfig),
    ("checkpoint", "checkpoint.", CheckpointConfig),
    ("model=lstm|gru", "model.", ModelConfig),
    ("model=rim|rim_gru|rim_u6k4|brims|rim_sw|scoff|meta_rim", "model.", RIMModelConfig),
    ("agent=ppo|ppo_meta", "agent.", PPOConfig),
    ("agent=a2c|a2c_meta", "agent.", A2CConfig),
    ("agent.fast_slow (agent=*_meta, model=meta_rim)", "agent.fast_slow.", FastSlowSchema),
    ("env=<split> (configs/env/*.yaml)", "env.", SplitConfig),
    ("env.train", "env.train.", LevelsConfig),
    ("env.test.<condition>", "env.test.<condition>.", ConditionConfig),
    ("env.train.seeds, env.test_seeds", "env.<seeds>.", SeedRangeConfig),
    ("logger=wandb", "logger.", WandbLoggerConfig),
    ("logger=none", "logger.", NoLoggerConfig),
)
_NESTED = {"checkpoint", "eval", "model", "agent", "env", "logger"}


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    text = getattr(annotation, "__name__", text) if not typing.get_args(annotation) else text
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", text)  # agents.experiment.config.agent.FastSlowSchema -> FastSlowSchema


def _default(item: dataclasses.Field) -> str:
    if item.default is not dataclasses.MISSING:
        if item.default == MISSING:
            return "None" if item.name == "fast_slow" else "(required)"  # fast_slow: unset reads as null
        return repr(item.default)
    if item.default_factory is not dataclasses.MISSING:
        value = item.default_factory()
        return repr(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)
    return "(required)"


def describe() -> str:
    """The table of every key: ``key  type  default  meaning``, one section per group option."""
    lines = ["Config keys (override with key=value; groups with group=option):"]
    for title, prefix, schema in SECTIONS:
        lines.append(f"\n[{title}]")
        hints = typing.get_type_hints(schema)
        for item in dataclasses.fields(schema):
            if schema is TrainConfig and item.name in _NESTED:
                continue
            meaning = item.metadata.get("help", "")
            key = f"{prefix}{item.name}"
            lines.append(f"  {key:<36} {_type_name(hints[item.name]):<20} {_default(item):<14} {meaning}")
    return "\n".join(lines)
