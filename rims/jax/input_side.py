"""Input side of a RIM layer: the keys and each unit's projection of the attended input.

The attended input ``a v(x) + (1 - a) v(null)``, with ``v(null) = b_v``, is affine in the
attention ``a``, so its projection by unit ``i``'s input weights splits into
``a W_ih,i (x W_v)`` and a constant null-value term (folded into a bias by
:mod:`rims.jax.core`). ``W_ih,i (x W_v)`` is computed from a *source* and a per-unit weight:
``x`` with ``W_v W_ih,i`` or ``x W_v`` with ``W_ih,i``, whichever costs fewer multiply-adds.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import Array

from rims.jax.config import Params, RIMConfig


def prefer_combined(rows: int, cfg: RIMConfig) -> bool:
    """Whether the source should be ``x`` (with ``W_v W_ih``) rather than ``x W_v``.

    Multiply-adds forward, recomputed forward and weight gradient (``rims.jax.core``
    recomputes each step in the backward pass), per row and unit: ``I H G`` against
    ``H V H G`` (the heads' block-diagonal ``W_ih``) plus ``I H V / U`` for the values; plus
    building ``W_v W_ih`` once.

    :param rows: rows of the input (``L * N``).
    """
    u, size, heads = cfg.num_units, cfg.input_size, cfg.num_input_heads
    value, gates = cfg.input_value_size, cfg.gate_width
    combined = 3 * rows * u * size * heads * gates + 3 * size * heads * value * u * gates
    two_step = 3 * rows * u * heads * value * heads * gates + 2 * rows * size * heads * value
    return combined < two_step


def input_source(params: Params, cfg: RIMConfig, x: Array) -> tuple[Array, Array, Array]:
    """Keys, source and per-unit weight of the input side, for any leading shape.

    :param x: ``(..., input_size)``.
    :returns: bias-free keys ``(..., H, K)``, the source ``(..., S)`` (``x`` or ``x W_v``) and
        the per-unit weight ``(U, S, H*G)``: ``source @ weight[i]`` is ``W_ih,i (x W_v)`` for
        every input head.
    """
    lead, size = x.shape[:-1], cfg.input_size
    u, heads, value, gates = cfg.num_units, cfg.num_input_heads, cfg.input_value_size, cfg.gate_width
    keys = (x @ params["weight_key"].T).reshape(*lead, heads, cfg.input_key_size)
    w_ih = params["weight_ih"].reshape(u, heads, value, gates)
    if prefer_combined(math.prod(lead), cfg):
        w_value = params["weight_value"].reshape(heads, value, size)
        return keys, x, jnp.einsum("hvi,uhvg->uihg", w_value, w_ih).reshape(u, size, heads * gates)
    values = x @ params["weight_value"].T  # (..., H*V)
    if heads == 1:
        return keys, values, params["weight_ih"]
    block = jnp.einsum("uhvg,hk->uhvkg", w_ih, jnp.eye(heads, dtype=w_ih.dtype))  # heads' block diagonal
    return keys, values, block.reshape(u, heads * value, heads * gates)


def project_inputs(params: Params, cfg: RIMConfig, x: Array) -> tuple[Array, Array]:
    """Keys and ``W_ih,i (x W_v)`` of every unit and head, for any leading shape.

    :param x: ``(..., input_size)``.
    :returns: bias-free keys ``(..., H, K)`` and the projections ``(..., U, H, G)``.
    """
    keys, source, weight = input_source(params, cfg, x)
    proj = jnp.einsum("...s,usf->...uf", source, weight)
    return keys, proj.reshape(*x.shape[:-1], cfg.num_units, cfg.num_input_heads, cfg.gate_width)
