"""Schemas of the ``model`` group: the recurrent core (``agents/cores.py``, ``rims/``)."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from agents.cores import DEFAULT_HIDDEN_SIZE, RIM_DEFAULTS
from agents.experiment.config.checks import (
    ConfigError,
    boolean,
    in_range,
    non_negative_number,
    one_of,
    optional_positive_int,
    positive_int,
)
from rims.options import DEFAULTS, OPTION_NAMES, STACK_OPTIONS, RIMOptions, allowed_values, option_help, option_kind

PLAIN_CORES = ("lstm", "gru")
RIM_CORES = ("rim", "rim_gru")


def check_name(name: object) -> None:
    """``model.name`` is a non-empty word that can be part of a folder name.

    :raises ConfigError: naming the key, expected and given.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
        raise ConfigError(f"model.name must be a word of letters, digits, _ . + - (a folder name part), got {name!r}")


@dataclass
class ModelConfig:
    """``model=lstm|gru``: a plain recurrent core."""

    core: str = field(default=MISSING, metadata={"help": "recurrent core: lstm, gru, rim or rim_gru"})
    name: str = field(
        default="${.core}",
        metadata={"help": "name in run folders, compare labels, plots and W&B: the preset (rim_sw, brims, ...)"},
    )
    hidden_size: int = field(default=DEFAULT_HIDDEN_SIZE, metadata={"help": "total width of the recurrent state"})

    def __post_init__(self) -> None:
        one_of("model.core", self.core, PLAIN_CORES + RIM_CORES)
        check_name(self.name)
        positive_int("model.hidden_size", self.hidden_size)


_NULL_IS_LAYER_DEFAULT = (
    "selection", "num_layers", "top_down", "communication", "num_slots", "slot_size", "write_k", "num_schemata",
    "schema_key_size", "selection_noise", "selection_noise_learned", "selection_noise_anneal", "balance_rate",
    "balance_loss", "initial_state", "initial_state_std",
)  # fmt: skip
"""Keys whose config default is null, meaning the layer's default (``rims.options``): the keys added
after run folders first saved their configs, so a config saved then equals one composed now (resuming
compares them). The other keys default to the layer's value (or the agents' :data:`agents.cores.RIM_DEFAULTS`)."""

_STACK_HELP = {
    "num_layers": "stacked RIM layers",
    "top_down": "BRIMs: lower layer attends to the upper one",
}


def _rim_fields() -> list[tuple[str, Any, Any]]:
    """``(name, type, field)`` of every key of :class:`RIMModelConfig` after ``core``/``hidden_size``,
    derived from the options contract (:class:`rims.options.RIMOptions`, ``STACK_OPTIONS``): its
    sizes, then every option but ``dynamics`` (the core names it), the stack's options after ``selection``."""
    hints = typing.get_type_hints(RIMOptions)
    entries: list[tuple[str, Any, Any, str]] = [
        ("num_units", int, None, "RIM units; hidden_size must divide by it"),
        ("k", int, None, "active units per step, in [1, num_units]"),
    ]
    for name in OPTION_NAMES:
        if name != "dynamics":
            entries.append((name, hints[name], getattr(DEFAULTS, name), option_help(name)))
        if name == "selection":
            entries += [(key, type(value), value, _STACK_HELP[key]) for key, value in STACK_OPTIONS.items()]
    result = []
    for name, kind, layer_default, help_text in entries:
        if name in _NULL_IS_LAYER_DEFAULT:
            default, kind = None, kind | None
            shown = str(layer_default).lower() if isinstance(layer_default, bool) else layer_default
            help_text += "" if layer_default is None else f"; null: {shown}"
        else:
            default = RIM_DEFAULTS.get(name, layer_default)
        result.append((name, kind, field(default=default, metadata={"help": help_text})))
    return result


RIM_KEYS: tuple[str, ...] = tuple(name for name, _, _ in _rim_fields())
"""The keys of a RIM core's config beyond ``core`` and ``hidden_size``: what
:func:`agents.experiment.run.build_model` passes to :func:`agents.cores.make_core`."""


def _check_rim(self: ModelConfig) -> None:
    """Validate a RIM core's keys, each by its kind in the options contract, then their relations.

    :raises ConfigError: naming the first wrong key (``model.<key>``), expected and given.
    """
    one_of("model.core", self.core, RIM_CORES)
    check_name(self.name)
    positive_int("model.hidden_size", self.hidden_size)
    for key in RIM_KEYS:
        value, name = getattr(self, key), f"model.{key}"
        if key == "top_down" or (value is None and key in _NULL_IS_LAYER_DEFAULT):
            continue  # top_down: a bool, typed by OmegaConf
        kind = option_kind(key) if key in OPTION_NAMES else "positive_int"
        if kind == "choice":
            one_of(name, value, allowed_values(key))
        elif kind == "probability":
            in_range(name, value, 0.0, 1.0, high_open=True)
        elif kind == "optional_positive_int":
            optional_positive_int(name, value)
        elif kind == "non_negative_float":
            non_negative_number(name, value)
        elif kind == "non_negative_int":
            positive_int(name, value, minimum=0)
        elif kind == "bool":
            boolean(name, value)
        else:
            positive_int(name, value)
    units, k = self.num_units, self.k
    if not 1 <= k <= units:
        raise ConfigError(f"model.k must be in [1, model.num_units] = [1, {units}], got {k}")
    if self.hidden_size % units:
        raise ConfigError(f"model.hidden_size must be divisible by model.num_units={units}, got {self.hidden_size}")
    if self.write_k is not None and self.write_k > k:
        raise ConfigError(f"model.write_k must be in [1, model.k] = [1, {k}], got {self.write_k}")
    if self.num_schemata is not None and self.num_schemata > units:
        raise ConfigError(f"model.num_schemata must be in [1, model.num_units] = [1, {units}], got {self.num_schemata}")
    if self.top_down and (self.num_layers or 1) < 2:
        raise ConfigError(f"model.top_down needs model.num_layers >= 2, got {self.num_layers}")


RIMModelConfig = dataclasses.make_dataclass(
    "RIMModelConfig",
    [
        ("core", str, field(default="rim", metadata={"help": "rim (LSTM dynamics) or rim_gru (GRU dynamics)"})),
        *_rim_fields(),
    ],
    bases=(ModelConfig,),
    namespace={
        "__post_init__": _check_rim,
        "__module__": __name__,
        "__doc__": """``model=rim|rim_gru|rim_u6k4|brims|rim_sw|scoff``: the RIM core and the family's options.

    Its keys are derived from the options contract (:mod:`rims.options`): one per option but
    ``dynamics``, defaults from there or from :data:`agents.cores.RIM_DEFAULTS`; keys set to null take
    the layer's default (``rims.RIMLSTM``'s keyword), which is what a config without the key did
    before these schemas.""",
    },
)


def model_schema(core: object) -> type[ModelConfig]:
    """The schema of a ``model`` node with ``core`` (plain cores and unknown names: :class:`ModelConfig`)."""
    return RIMModelConfig if core in RIM_CORES else ModelConfig
