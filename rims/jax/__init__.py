"""RIMs in JAX (Flax linen), numerically the same model as the PyTorch :mod:`rims`.

Optional: ``pip install .[jax]``. ``import rims`` never imports this package.

- :mod:`rims.jax.core`: pure functions (``init_params``, ``step``, ``layer_sequence``) over a
  flat parameter dict with the PyTorch names; usable in ``jit``, ``vmap``, ``grad``, ``scan``.
- :class:`RIMCell`, :class:`RIMLSTM`, :class:`RIMGRU`: Flax modules with the PyTorch modules'
  arguments and calling conventions.
- :func:`from_torch`, :func:`params_from_torch`, :func:`params_to_torch`: weight conversion.
"""

from rims.jax.convert import flax_module_for, from_torch, params_from_torch, params_to_torch
from rims.jax.core import RIMConfig, StepInfo, init_params, layer_sequence, step, zero_state
from rims.jax.modules import RIMGRU, RIMLSTM, RIMCell

__all__ = [
    "RIMGRU",
    "RIMLSTM",
    "RIMCell",
    "RIMConfig",
    "StepInfo",
    "flax_module_for",
    "from_torch",
    "init_params",
    "layer_sequence",
    "params_from_torch",
    "params_to_torch",
    "step",
    "zero_state",
]
