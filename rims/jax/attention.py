"""Unit selection and communication of one RIM step, in the unit-major layout ``(U, N, ...)``.

The top-k is a pairwise comparison of the units' ranks (a handful of units: cheaper than a
sort). The communication projects every unit's state with its own weights (a matmul batched
over units), then attends per batch element and head with matmuls batched over ``(N, Hc)``
(a ``custom_vjp`` whose backward pass keeps those layouts). XLA's CPU reductions and the
broadcast-multiply-reduce form of the ``U x U`` attention were measured slower, and in
float32 one such fusion returned a wrong gradient, so neither is used.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from rims.jax.config import RIMConfig
from rims.jax.unit_matmul import active_weight_grad_matmul, unit_matmul


def top_k_mask(rank: Array, k: int) -> Array:
    """The ``k`` highest-ranked units of every batch element, by pairwise comparison.

    Same choice as ``jax.lax.top_k`` and PyTorch's stable descending sort: ties go to the
    lower unit index and NaN ranks above every number.

    :param rank: ``(U, N)`` score per unit (higher = selected).
    :param k: number of units to select.
    :returns: ``(U, N)`` bool, ``True`` for the selected units.
    """
    u = rank.shape[0]
    if k == u:
        return jnp.ones(rank.shape, bool)
    mine, other = rank[:, None], rank[None, :]  # (U, 1, N) unit i, (1, U, N) unit j
    mine_nan, other_nan = jnp.isnan(mine), jnp.isnan(other)
    greater = (other > mine) | (other_nan & ~mine_nan)
    equal = (other == mine) | (other_nan & mine_nan)
    index = jnp.arange(u)
    lower = (index[None, :] < index[:, None])[..., None]  # (U, U, 1): j < i
    beaten_by = jnp.sum(greater | (equal & lower), axis=1, dtype=jnp.int32)  # (U, N)
    return beaten_by < k


class _Heads(NamedTuple):
    """Static sizes of the communication attention."""

    heads: int
    key: int
    value: int


def _split_heads(sizes: _Heads, qkv: Array) -> tuple[Array, Array, Array]:
    """``(U, N, Hc*(2Kc+Vc))`` -> ``q, k (N, Hc, U, Kc)``, ``v (N, Hc, U, Vc)``."""
    u, n = qkv.shape[:2]
    heads, key = sizes.heads, sizes.key
    q = qkv[..., : heads * key].reshape(u, n, heads, key)
    k = qkv[..., heads * key : 2 * heads * key].reshape(u, n, heads, key)
    v = qkv[..., 2 * heads * key :].reshape(u, n, heads, sizes.value)
    return tuple(jnp.transpose(a, (1, 2, 0, 3)) for a in (q, k, v))  # type: ignore[return-value]


def _merge_heads(a: Array) -> Array:
    """``(N, Hc, U, F)`` -> ``(U, N, Hc*F)``."""
    n, heads, u, f = a.shape
    return jnp.transpose(a, (2, 0, 1, 3)).reshape(u, n, heads * f)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attend(sizes: _Heads, qkv: Array, drop: Array | None) -> tuple[Array, Array]:
    """Scaled dot-product attention of every unit over all units, per batch element and head.

    A ``custom_vjp`` so that the backward pass computes in the same layouts as the forward
    one: differentiated automatically, XLA transposes the heads' gradients through slow
    minor-dimension copies and pads them back into the fused projection.

    :param qkv: ``(U, N, Hc*(2Kc+Vc))`` queries, keys and values of every unit.
    :param drop: ``(N, Hc, U, U)`` dropout multipliers (0 or ``1/(1-p)``), or ``None``.
    :returns: ``(read (U, N, Hc*Vc), weights (N, Hc, U, U))``, the weights before dropout.
    """
    return _attend_forward(sizes, qkv, drop)[0]


def _attend_forward(sizes: _Heads, qkv: Array, drop: Array | None) -> tuple[tuple[Array, Array], tuple[Array, ...]]:
    q, k, v = _split_heads(sizes, qkv)
    scores = jnp.einsum("nhik,nhjk->nhij", q, k) * (1.0 / math.sqrt(sizes.key))
    weights = jax.nn.softmax(scores, axis=-1)  # (N, Hc, U, U)
    used = weights if drop is None else weights * drop
    read = jnp.einsum("nhij,nhjv->nhiv", used, v)
    return (_merge_heads(read), weights), (q, k, v, weights, used, drop)


def _attend_backward(sizes: _Heads, residuals: tuple[Array, ...], grads: tuple[Array, Array]) -> tuple[Array, None]:
    q, k, v, weights, used, drop = residuals
    grad_read, grad_weights = grads
    u, n = grad_read.shape[:2]
    grad_read = jnp.transpose(grad_read.reshape(u, n, sizes.heads, sizes.value), (1, 2, 0, 3))  # (N, Hc, U, Vc)
    # contractions over the first unit index run on transposed (small) weights: XLA's batched
    # matmul is fast only when the left operand contracts its last dimension
    grad_v = jnp.einsum("nhji,nhiv->nhjv", jnp.swapaxes(used, -1, -2), grad_read)
    grad_used = jnp.einsum("nhiv,nhjv->nhij", grad_read, v)
    grad_w = grad_used if drop is None else grad_used * drop
    grad_w = grad_w + grad_weights
    # softmax backward, with the 1/sqrt(Kc) of the scores
    grad_scores = weights * (grad_w - jnp.sum(grad_w * weights, axis=-1, keepdims=True))
    grad_scores = grad_scores * (1.0 / math.sqrt(sizes.key))
    grad_q = jnp.einsum("nhij,nhjk->nhik", grad_scores, k)
    grad_k = jnp.einsum("nhji,nhik->nhjk", jnp.swapaxes(grad_scores, -1, -2), q)
    return jnp.concatenate([_merge_heads(g) for g in (grad_q, grad_k, grad_v)], axis=-1), None


_attend.defvjp(_attend_forward, _attend_backward)


def communicate(
    cfg: RIMConfig, qkv_weight: Array, out_weight: Array, states: Array, active: Array | None, rng: Array | None
) -> tuple[Array, Array]:
    """Multi-head attention of every unit over all units' states.

    Inactive units' keys and values do not train their projection at this step (their
    weight gradient is blocked, as in :class:`rims.RIMCell`).

    :param qkv_weight: ``(U, d, Hc*(2Kc+Vc))`` per-unit query/key/value projection.
    :param out_weight: ``(U, Hc*Vc, d)`` per-unit output projection.
    :param states: ``(U, N, d)`` states shown to the attention (inactive units: kept state).
    :param active: ``(U, N, 1)`` bool, or ``None`` when every unit is active.
    :param rng: PRNG key for attention dropout, or ``None``.
    :returns: ``(messages (U, N, d), weights (N, Hc, U, U))``; ``weights[n, h, i, j]`` is unit
        ``i``'s attention on unit ``j`` (before dropout).
    """
    u, n = states.shape[:2]
    # (U, N, Hc*(2Kc+Vc))
    qkv = unit_matmul(states, qkv_weight) if active is None else active_weight_grad_matmul(states, qkv_weight, active)
    drop = None
    if rng is not None:
        p = cfg.attention_dropout
        keep = jax.random.bernoulli(rng, 1.0 - p, (n, cfg.num_comm_heads, u, u))
        drop = jnp.where(keep, 1.0 / (1.0 - p), 0.0).astype(states.dtype)
    read, weights = _attend(_Heads(cfg.num_comm_heads, cfg.comm_key_size, cfg.comm_value_size), qkv, drop)
    return unit_matmul(read, out_weight), weights
