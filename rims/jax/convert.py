"""Weights between PyTorch RIM modules and their JAX twins, both ways."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax import Array

from rims import rnn as torch_rnn
from rims.jax.config import JAX_OPTIONS
from rims.jax.modules import RIMGRU, RIMLSTM, _RIMSequence

_OPTIONS = tuple(name for name in JAX_OPTIONS if name not in ("dynamics", "communication_update"))


def communication_update_of(module: torch_rnn.RIMLSTM | torch_rnn.RIMGRU) -> str:
    """The ``communication_update`` of a PyTorch RIM module.

    Modules from before that option existed used the paper's update, ``"residual"``.
    """
    cell = module.layers[0]
    return str(getattr(module, "communication_update", getattr(cell, "communication_update", "residual")))


def flax_module_for(module: torch_rnn.RIMLSTM | torch_rnn.RIMGRU) -> _RIMSequence:
    """The Flax :class:`~rims.jax.RIMLSTM` / :class:`~rims.jax.RIMGRU` with the same arguments."""
    if not isinstance(module, (torch_rnn.RIMLSTM, torch_rnn.RIMGRU)):
        raise TypeError(f"expected a rims.RIMLSTM or rims.RIMGRU, got {type(module).__name__}")
    cell = module.layers[0]
    unsupported = {
        "top_down": module.top_down,
        "communication": None if cell.communication == "pairwise" else cell.communication,
        "num_schemata": cell.num_schemata,
        "selection_noise_learned": cell.options.selection_noise_learned,
        "selection_noise_anneal": cell.options.selection_noise_anneal,
        "initial_state": None if cell.options.initial_state == "zeros" else cell.options.initial_state,
    }  # balance_loss is a training-only loss term: the function of the module is the same without it
    for name, value in unsupported.items():
        if value:
            raise NotImplementedError(f"rims.jax does not implement {name}={value!r} (the RIM family is torch-only)")
    cls = RIMLSTM if isinstance(module, torch_rnn.RIMLSTM) else RIMGRU
    dtype = jnp.dtype(str(cell.weight_ih.dtype).removeprefix("torch."))
    return cls(
        module.input_size,
        module.hidden_size,
        module.num_units,
        module.k,
        module.num_layers,
        module.bias,
        module.batch_first,
        module.dropout,
        **{name: getattr(cell, name) for name in _OPTIONS},
        communication_update=communication_update_of(module),
        param_dtype=dtype,
    )


_COLLECTIONS = {"selection_bias": "balance"}
"""Buffers of the PyTorch module and the Flax collection that holds each (the rest are ``params``)."""


def params_from_torch(module: torch_rnn.RIMLSTM | torch_rnn.RIMGRU) -> dict[str, Any]:
    """Flax variables ``{"params": {"layers_0": {...}, ...}}`` holding ``module``'s weights (and, with
    ``balance_rate > 0``, ``{"balance": {"layers_0": {"selection_bias": ...}}}``)."""
    flax_module_for(module)  # type check
    variables: dict[str, dict[str, dict[str, Array]]] = {"params": {}}
    for key, value in module.state_dict().items():
        _, layer, name = key.split(".")
        collection = variables.setdefault(_COLLECTIONS.get(name, "params"), {})
        collection.setdefault(f"layers_{layer}", {})[name] = jnp.asarray(value.detach().cpu().numpy())
    return variables


def params_to_torch(variables: dict[str, Any], module: torch_rnn.RIMLSTM | torch_rnn.RIMGRU) -> None:
    """Load Flax variables into ``module`` in place (strict: every weight must match)."""
    state = {
        f"layers.{layer.removeprefix('layers_')}.{name}": torch.from_numpy(np.array(value))
        for collection in ("params", *sorted(set(_COLLECTIONS.values())))
        for layer, weights in variables.get(collection, {}).items()
        for name, value in weights.items()
    }
    module.load_state_dict(state, strict=True)


def from_torch(module: torch_rnn.RIMLSTM | torch_rnn.RIMGRU) -> Callable[..., tuple[Any, Any]]:
    """A jitted ``f(x, state=None) -> (output, state)`` computing ``module`` (eval mode) in JAX.

    Shapes and state layout are the PyTorch module's: ``(L, N, H_in)`` (or batch-first, or
    unbatched) in; ``(output, (h_n, c_n))`` for ``RIMLSTM``, ``(output, h_n)`` for ``RIMGRU``.
    The weights are copied now; later changes to ``module`` are not seen.
    """
    flax_module = flax_module_for(module)
    variables = params_from_torch(module)
    apply = jax.jit(lambda v, x, state: flax_module.apply(v, x, state))

    def f(x: Array, state: Any = None) -> tuple[Any, Any]:
        return apply(variables, jnp.asarray(x), state)

    return f
