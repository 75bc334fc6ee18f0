"""``rims-train --help`` / ``--info``: every group and key with its type, default and meaning, read from the schemas."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING

from agents.experiment.config.agent import A2CConfig, FastSlowSchema, PPOConfig
from agents.experiment.config.env import ConditionConfig, LevelsConfig, SeedRangeConfig, SplitConfig
from agents.experiment.config.model import ModelConfig, RIMModelConfig
from agents.experiment.config.run import CheckpointConfig, EvalConfig, NoLoggerConfig, TrainConfig, WandbLoggerConfig

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"  # agents/experiment/config/ -> the checkout


def _schema_of(group: str, option: str) -> str | None:
    """The schema (``/schema/<group>@_here_: <name>``) that ``configs/<group>/<option>.yaml`` starts from,
    following presets that start from another preset of the group (``- rim``, ``- rim@model``)."""
    path = CONFIG_DIR / group / f"{option}.yaml"
    if not path.is_file():
        return None
    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults", []):
        if isinstance(entry, dict):
            ((key, value),) = entry.items()
            if key.startswith(f"/schema/{group}@"):
                return value
        elif entry != "_self_" and entry.split("@")[0] != option:
            return _schema_of(group, entry.split("@")[0])
    return None


def presets(group: str, schema: str) -> list[str]:
    """The options of ``configs/<group>/`` that start from ``schema`` (read from the files, so never stale)."""
    folder = CONFIG_DIR / group
    options = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    return [option for option in options if _schema_of(group, option) == schema]


def _title(group: str, schema: str) -> str:
    return f"{group}={'|'.join(presets(group, schema)) or '<' + schema + ' presets>'}"


SECTIONS: tuple[tuple[str, str, type], ...] = (
    ("top level", "", TrainConfig),
    ("eval", "eval.", EvalConfig),
    ("checkpoint", "checkpoint.", CheckpointConfig),
    (_title("model", "plain"), "model.", ModelConfig),
    (_title("model", "rim"), "model.", RIMModelConfig),
    (_title("agent", "ppo"), "agent.", PPOConfig),
    (_title("agent", "a2c"), "agent.", A2CConfig),
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
