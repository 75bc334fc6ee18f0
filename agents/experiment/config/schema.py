"""The typed config of a run: a composed (or plain) config merged onto the schemas, every node checked.

:func:`typed_config` accepts what Hydra composes and also a plain ``DictConfig`` or mapping
(``train(cfg)`` from Python): the node types follow ``model.core``, ``agent.name`` and
``logger.name``. An unknown key names itself and the node's valid keys; a wrong type names the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from agents.experiment.config.agent import agent_schema
from agents.experiment.config.checks import ConfigError
from agents.experiment.config.env import SplitConfig
from agents.experiment.config.model import model_schema
from agents.experiment.config.run import TrainConfig, logger_schema

_GROUPS = {
    "model": ("core", model_schema),
    "agent": ("name", agent_schema),
    "env": ("name", lambda _: SplitConfig),
    "logger": ("name", logger_schema),
}


def schema_node(plain: Mapping[str, Any]) -> DictConfig:
    """The schema (defaults and types, no values of ``plain``) that ``plain`` is checked against."""
    base = OmegaConf.structured(TrainConfig)
    for group, (selector, pick) in _GROUPS.items():
        node = plain.get(group)
        chosen = node.get(selector) if isinstance(node, Mapping) else None
        base[group] = OmegaConf.structured(pick(chosen))
    return base


def typed_config(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
    """``cfg`` merged onto its schema and checked: every node's own ranges, then the relations.

    :returns: the complete typed config (every key, defaults filled in).
    :raises ConfigError: an unknown key, a wrong type or a value out of range (the message names the key).
    """
    if OmegaConf.is_config(cfg):  # without Hydra's own node (compose(..., return_hydra_config=True))
        plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    else:
        plain = {k: v for k, v in cfg.items() if k != "hydra"}
    agent = plain.get("agent")
    if isinstance(agent, dict) and agent.get("fast_slow", "???") == "???":
        agent["fast_slow"] = None  # not set by any config: off
    base = schema_node(plain)
    try:
        merged = OmegaConf.merge(base, plain)
        checked: TrainConfig = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise _translate(error, base) from error
    checked.check()
    return merged


def _translate(error: OmegaConfBaseException, schema: DictConfig) -> ConfigError:
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
    container = re.search(r"(\w+) is not a (ListConfig|DictConfig)", message)
    if container:
        expected = "a list" if container.group(2) == "ListConfig" else "a mapping"
        given = {"AnyNode": "single value"}.get(container.group(1), container.group(1))
        return f"{key} must be {expected}, got a {given}"
    return f"{key} has the wrong type: {message}"


def composition_error(error: BaseException) -> str:
    """One line naming the key of an error Hydra raised while composing (unknown key, wrong type)."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return str(error).splitlines()[0]
    key = getattr(cause, "full_key", "") or ""
    group = f" ({key.split('.')[0]} group)" if "." in key else ""
    if isinstance(cause, ConfigKeyError) or "not in" in str(cause):
        object_type = getattr(cause, "object_type", None)
        schema = OmegaConf.structured(object_type) if object_type is not None else None
        parent = key.rpartition(".")[0]
        valid = sorted(schema.keys()) if schema is not None else []
        return f"{key} is not a key of {parent or 'the top level'}{group}; valid keys: {valid}"
    return str(_translate(cause, OmegaConf.create()))
