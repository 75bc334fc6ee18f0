"""Static configuration and parameter initialisation of one JAX RIM layer.

Parameters are a flat dict with the PyTorch names and shapes (``weight_key``, ``weight_ih``,
...), so conversion to and from :class:`rims.RIMCell` is a rename-free copy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from rims._checks import check_positive_int
from rims.options import DEFAULTS, RIMOptions, check_rim_sizes

Params = dict[str, Array]
State = tuple[Array, ...]
_GATES = {"lstm": 4, "gru": 3}

JAX_OPTIONS: tuple[str, ...] = (
    "dynamics",
    "selection",
    "num_input_heads",
    "input_key_size",
    "input_value_size",
    "num_comm_heads",
    "comm_key_size",
    "comm_value_size",
    "attention_dropout",
    "communication_update",
    "selection_noise",
    "balance_rate",
)
"""The options of :class:`rims.options.RIMOptions` that ``rims.jax`` implements (the plain RIM), in
the order of :class:`RIMConfig`'s fields; the others (workspace, schemata, top-down, and the remedies
but the ranking-score ones, ``selection_noise`` and ``balance_rate``) are torch-only and stay at their
defaults. Fields of :class:`RIMConfig` and of the Flax modules; ``tests/test_options.py`` checks them."""

IMPLEMENTED: dict[str, tuple[object, ...]] = {
    "dynamics": ("lstm", "gru"),
    "selection": ("null_attention", "input_score"),
    "communication_update": ("bounded", "residual"),
}
"""Values of the choice options that ``rims.jax`` implements; any other value is refused by name."""


def declare_options(namespace: dict[str, Any], names: Sequence[str]) -> None:
    """Declare the contract's options ``names`` as dataclass fields of the class whose body
    ``namespace`` is (``declare_options(locals(), JAX_OPTIONS)``): each with its type and its
    default from :class:`rims.options.RIMOptions`, in the order of ``names``, after the fields
    declared so far. Their list and defaults are written once, in the contract.
    """
    contract = {f.name: f for f in dataclasses.fields(RIMOptions)}
    annotations = namespace.setdefault("__annotations__", {})
    for name in names:
        annotations[name] = contract[name].type
        namespace[name] = getattr(DEFAULTS, name)


def check_options(input_size: object, hidden_size: object, num_units: object, k: object, **options: object) -> None:
    """Validate a JAX layer's arguments with the PyTorch module's errors (:class:`rims.options.RIMOptions`).

    :param options: the :data:`JAX_OPTIONS` by name.
    :raises TypeError: a wrong type; :raises ValueError: a value outside its allowed values.
    :raises NotImplementedError: a value of the contract that ``rims.jax`` does not implement (named).
    """
    check_positive_int("input_size", input_size)
    check_rim_sizes(hidden_size, num_units, k)
    RIMOptions(**options)  # type: ignore[arg-type]
    for name, values in IMPLEMENTED.items():
        if options[name] not in values:
            raise NotImplementedError(
                f"rims.jax does not implement {name}={options[name]!r}; it implements {list(values)}"
            )


@dataclass(frozen=True)
class RIMConfig:
    """Static configuration of one RIM layer; the arguments of :class:`rims.RIMCell` that
    ``rims.jax`` implements (:data:`JAX_OPTIONS`), with the contract's defaults.

    ``communication_update`` says how an active unit adds the message ``m`` it read to its new
    state ``h~``: ``"bounded"`` (default) ``h = tanh(h~ + m)``, so ``|h| < 1`` however long the
    state is carried; ``"residual"`` ``h = h~ + m``, the paper's update (see
    ``rims.options.COMMUNICATION_UPDATES``). Validated at construction with the PyTorch
    module's errors.

    ``selection_noise`` and ``balance_rate`` are the ranking-score remedies of :mod:`rims.remedies`:
    the Gaussian noise drawn when a PRNG key is given (:func:`rims.jax.core.selection_offset`) and the
    balancing bias, a variable the caller updates with :func:`rims.jax.core.update_balance`.
    """

    input_size: int
    hidden_size: int
    num_units: int
    k: int
    bias: bool = True
    declare_options(locals(), JAX_OPTIONS)

    def __post_init__(self) -> None:
        names = JAX_OPTIONS
        check_options(self.input_size, self.hidden_size, self.num_units, self.k, **{n: getattr(self, n) for n in names})

    @property
    def unit_size(self) -> int:
        """Width ``d`` of one unit."""
        return self.hidden_size // self.num_units

    @property
    def gate_width(self) -> int:
        """``G``: 4d for LSTM dynamics, 3d for GRU."""
        return _GATES[self.dynamics] * self.unit_size

    @property
    def n_states(self) -> int:
        """2 (``h, c``) for LSTM dynamics, 1 for GRU."""
        return 2 if self.dynamics == "lstm" else 1

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter, as in :class:`rims.RIMCell`."""
        u, d, g = self.num_units, self.unit_size, self.gate_width
        hk = self.num_input_heads * self.input_key_size
        hv = self.num_input_heads * self.input_value_size
        shapes = {
            "weight_key": (hk, self.input_size),
            "weight_value": (hv, self.input_size),
            "weight_query": (u, d, hk),
            "weight_ih": (u, hv, g),
            "weight_hh": (u, d, g),
            "weight_comm_qkv": (u, d, self.num_comm_heads * (2 * self.comm_key_size + self.comm_value_size)),
            "weight_comm_out": (u, self.num_comm_heads * self.comm_value_size, d),
        }
        if self.bias:
            shapes.update(bias_key=(hk,), bias_value=(hv,), bias_query=(u, hk), bias_ih=(u, g), bias_hh=(u, g))
        return shapes

    def init_bound(self, name: str) -> float:
        """Half-width of the uniform initialisation of parameter ``name`` (as the PyTorch one)."""
        if name in ("weight_key", "weight_value", "bias_key", "bias_value"):
            return 1.0 / math.sqrt(self.input_size)
        if name == "weight_comm_out":
            return 1.0 / math.sqrt(self.num_comm_heads * self.comm_value_size)
        return 1.0 / math.sqrt(self.unit_size)


def init_params(key: Array, cfg: RIMConfig, dtype: jnp.dtype = jnp.float32) -> Params:
    """Uniform ``+-1/sqrt(fan_in)`` initialisation, like ``RIMCell.reset_parameters``."""
    shapes = cfg.param_shapes()
    keys = jax.random.split(key, len(shapes))
    return {
        name: jax.random.uniform(k, shape, dtype, -cfg.init_bound(name), cfg.init_bound(name))
        for k, (name, shape) in zip(keys, shapes.items(), strict=True)
    }


def zero_state(cfg: RIMConfig, batch: int, dtype: jnp.dtype = jnp.float32) -> State:
    """Zero state of one layer: ``n_states`` arrays of ``(batch, hidden_size)``."""
    return tuple(jnp.zeros((batch, cfg.hidden_size), dtype) for _ in range(cfg.n_states))
