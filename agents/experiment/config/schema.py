"""The typed config of a run: a composed (or plain) config merged onto the schemas, every node checked.

:func:`typed_config` accepts what Hydra composes and also a plain ``DictConfig`` or mapping
(``train(cfg)`` from Python): the node types follow ``model.core``, ``agent.name`` and
``logger.name``. An unknown key names itself and the node's valid keys; a wrong type names the key.
It returns a :class:`~agents.experiment.config.run.TrainConfig` (every group its schema's dataclass),
built once per run at the entry point and passed down as it is; :func:`config_yaml` and
:func:`config_dict` give it back as the run folder's ``config.yaml`` and as plain containers.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from agents.experiment.config.agent import A2C_NAMES, PPO_NAMES, agent_schema
from agents.experiment.config.checks import ConfigError, one_of
from agents.experiment.config.env import SplitConfig
from agents.experiment.config.model import PLAIN_CORES, RIM_CORES, model_schema
from agents.experiment.config.run import TrainConfig, logger_schema

_GROUPS = {
    "model": ("core", model_schema),
    "agent": ("name", agent_schema),
    "env": ("name", lambda _: SplitConfig),
    "logger": ("name", logger_schema),
}
# the values of the keys that pick a group's schema (checked first: the schema's keys depend on them)
_SELECTORS = {"model": PLAIN_CORES + RIM_CORES, "agent": PPO_NAMES + A2C_NAMES, "logger": ("none", "wandb")}


def schema_node(plain: Mapping[str, Any]) -> DictConfig:
    """The schema (defaults and types, no values of ``plain``) that ``plain`` is checked against."""
    base = OmegaConf.structured(TrainConfig)
    for group, (selector, pick) in _GROUPS.items():
        node = plain.get(group)
        chosen = node.get(selector) if isinstance(node, Mapping) else None
        base[group] = OmegaConf.structured(pick(chosen))
    return base


def typed_config(cfg: TrainConfig | DictConfig | Mapping[str, Any]) -> TrainConfig:
    """``cfg`` merged onto its schema and checked: every node's own ranges, then the relations.

    :param cfg: a composed or plain config; a :class:`TrainConfig` (already typed and checked) is returned as it is.
    :returns: the complete typed config (every key, defaults filled in, interpolations resolved).
    :raises ConfigError: an unknown key, a wrong type or a value out of range (the message names the key).
    """
    if isinstance(cfg, TrainConfig):
        return cfg
    if OmegaConf.is_config(cfg):  # without Hydra's own node (compose(..., return_hydra_config=True))
        plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    else:
        plain = {k: v for k, v in cfg.items() if k != "hydra"}
    agent = plain.get("agent")
    if isinstance(agent, dict) and agent.get("fast_slow", "???") == "???":
        agent["fast_slow"] = None  # not set by any config: off
    for group, options in _SELECTORS.items():
        node = plain.get(group)
        if isinstance(node, Mapping):
            one_of(f"{group}.{_GROUPS[group][0]}", node.get(_GROUPS[group][0]), options)
    base = schema_node(plain)
    try:
        merged = OmegaConf.merge(base, plain)
        checked: TrainConfig = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise _translate(error, base, plain) from error
    checked.check()
    return checked


def config_dict(typed: TrainConfig) -> dict[str, Any]:
    """The typed config as plain dicts and lists (W&B's run config, resume's comparison)."""
    return OmegaConf.to_container(OmegaConf.structured(typed))


def config_yaml(typed: TrainConfig) -> str:
    """The run folder's ``config.yaml``: every key of the typed config, in the schemas' order."""
    return OmegaConf.to_yaml(typed)


def _translate(
    error: OmegaConfBaseException, schema: DictConfig, plain: Mapping[str, Any] | None = None
) -> ConfigError:
    """A :class:`ConfigError` naming the key of an OmegaConf error (or the one raised in a ``__post_init__``)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConfigError):
            return cause
        cause = cause.__cause__ or cause.__context__
    key = getattr(error, "full_key", None) or ""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, ConfigKeyError) or "not in" in message:
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(schema, parent) if parent else schema
        valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
        where = parent or "the top level"
        if plain is not None and isinstance(plain.get(parent), Mapping) and parent in _SELECTORS:
            # a key of the group's other schemas (its keys follow model.core / agent.name / logger.name)
            selector, pick = _GROUPS[parent]
            elsewhere = {f.name for option in _SELECTORS[parent] for f in dataclasses.fields(pick(option))}
            if key.rpartition(".")[2] in elsewhere - set(valid):
                where += f" with {parent}.{selector}={plain[parent].get(selector)!r}"
        return ConfigError(f"{key} is not a key of {where}; valid keys: {valid}")
    if isinstance(error, ValidationError):
        return ConfigError(_type_message(key, message))
    return ConfigError(f"{key or 'config'}: {message}")


def _type_message(key: str, message: str) -> str:
    """``<key> must be of type <type>, got <value>`` from an OmegaConf validation message."""
    scalar = re.search(r"Value '(.*?)'.*(?:converted to|is not a valid) (\w+)", message)
    if scalar:
        expected = {"bool": "boolean"}.get(scalar.group(2).lower(), scalar.group(2).lower())
        return f"{key} must be of type {expected}, got {scalar.group(1)!r}"
    converted = re.search(r"Cannot convert '(ListConfig|DictConfig)' to (\w+)", message)
    if converted:
        given = "a list" if converted.group(1) == "ListConfig" else "a mapping"
        return f"{key} must be of type {converted.group(2).lower()}, got {given}"
    node = re.search(r"(\w+) is not a subclass of (\w+)\. value: (.*)", message)
    if node:
        return f"{key} must be a mapping of {node.group(2)}'s keys (e.g. {key}={{...}}) or null, got {node.group(3)!r}"
    container = re.search(r"(\w+) is not a (ListConfig|DictConfig)", message) or re.search(
        r"Cannot assign (\w+) to (List|Dict)", message
    )
    if container:
        expected = "a list" if container.group(2) in ("ListConfig", "List") else "a mapping"
        given = {"AnyNode": "single value"}.get(container.group(1), container.group(1))
        return f"{key} must be {expected}, got a {given}"
    return f"{key} has the wrong type: {message}"


def composition_error(error: BaseException) -> str:
    """One line naming the key of an error Hydra raised while composing (unknown key, wrong type,
    unknown group option, a key inside a node that is off)."""
    options = re.search(
        r"Could not find '([\w/]+)/([^']+)'.*?Available options in '[\w/]+':((?:\n\t\S+)+)", str(error), re.S
    )
    if options:
        group, name, listed = options.groups()
        return f"{group}={name} is not an option of the config group {group}; options: {listed.split()}"
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return str(error).splitlines()[0]
    key = getattr(cause, "full_key", "") or ""
    group = f" ({key.split('.')[0]} group)" if "." in key else ""
    if isinstance(cause, ConfigKeyError) or "not in" in str(cause):
        parent = key.rpartition(".")[0]
        schema = _schema_at(parent, getattr(cause, "object_type", None))
        valid = sorted(schema.keys()) if schema is not None else []
        leaf = key.rpartition(".")[2]
        if leaf in valid:  # a key of the schema that this (untyped) env file leaves out
            return f"{key} is not set in this config file; add it with +{key}=<value> (valid keys: {valid})"
        return f"{key} is not a key of {parent or 'the top level'}{group}; valid keys: {valid}"
    if isinstance(cause, MissingMandatoryValue) and key:
        override = re.search(r"override (\S+?)=", str(error))
        inner = override.group(1) if override else f"{key}.<key>"
        if key == "agent.fast_slow":
            return (
                f"{inner} cannot be set while agent.fast_slow is off (null) for this agent: pick agent=ppo_meta, "
                f"agent=a2c_meta or model=meta_rim, or set the whole node, e.g. agent.fast_slow={{outer_horizon:4}}"
            )
        return f"{inner} cannot be set while {key} is not set: set the whole node {key}={{...}}"
    return str(_translate(cause, OmegaConf.create()))


def _schema_at(path: str, object_type: Any) -> DictConfig | None:
    """The schema node at ``path`` (``env.train``, ``env.test.<name>``, ...): ``object_type`` where it
    is a dataclass, else found by walking the dataclasses' field types (the env group composes untyped)."""
    if dataclasses.is_dataclass(object_type):
        return OmegaConf.structured(object_type)
    current: Any = TrainConfig
    for index, part in enumerate(path.split(".") if path else []):
        if index == 0 and part in _GROUPS:
            current = _GROUPS[part][1](None)
            continue
        hints = typing.get_type_hints(current) if dataclasses.is_dataclass(current) else {}
        if part in hints:
            current = hints[part]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
        if typing.get_origin(current) is dict:
            continue
        if not dataclasses.is_dataclass(current):
            return None
    return OmegaConf.structured(current) if dataclasses.is_dataclass(current) else None
