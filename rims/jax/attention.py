"""Unit selection and communication of one RIM step, in the unit-major layout ``(U, N, ...)``.

Every op here is either a matmul batched over units (``(U, N, a) @ (U, a, b)``, XLA's
canonical batch-first layout, so no transposes) or elementwise work that XLA fuses: with a
handful of units the ``U x U`` attention among units and the top-k are cheaper as broadcast
products and comparisons than as thousands of tiny matmuls or a sort.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import Array

from rims.jax.config import RIMConfig


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


def active_weight_grad_matmul(x: Array, weight: Array, active: Array) -> Array:
    """``x @ weight`` per unit whose weight gradient comes only from rows of active units.

    The value is one product; gradients: ``x`` gets ``grad @ weight^T`` on every row,
    ``weight`` gets ``(x * active)^T @ grad``. Written with ``stop_gradient`` instead of a
    ``custom_vjp`` so that forward-mode differentiation works too; XLA computes the two
    identical products once, and ``b - b`` adds an exact zero.

    :param x: ``(U, N, a)``.
    :param weight: ``(U, a, b)``.
    :param active: ``(U, N, 1)`` bool.
    :returns: ``(U, N, b)``.
    """
    sg = jax.lax.stop_gradient
    to_weight = jnp.einsum("una,uab->unb", sg(x), weight)
    to_x = jnp.einsum("una,uab->unb", x, sg(weight))
    return jnp.where(active, to_weight, sg(to_weight)) + (to_x - sg(to_x))


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
    :returns: ``(messages (U, N, d), weights (U, U, N, Hc))``; ``weights[i, j]`` is unit
        ``i``'s attention on unit ``j`` (before dropout).
    """
    u, n = states.shape[:2]
    heads, key, value = cfg.num_comm_heads, cfg.comm_key_size, cfg.comm_value_size
    if active is None:
        qkv = jnp.einsum("und,udf->unf", states, qkv_weight)
    else:
        qkv = active_weight_grad_matmul(states, qkv_weight, active)  # (U, N, Hc*(2Kc+Vc))
    q = qkv[..., : heads * key].reshape(u, n, heads, key)
    k = qkv[..., heads * key : 2 * heads * key].reshape(u, n, heads, key)
    v = qkv[..., 2 * heads * key :].reshape(u, n, heads, value)
    scores = jnp.einsum("inhk,jnhk->ijnh", q, k) * (1.0 / math.sqrt(key))  # (U_i, U_j, N, Hc)
    weights = jax.nn.softmax(scores, axis=1)
    used = weights
    if rng is not None:
        keep = jax.random.bernoulli(rng, 1.0 - cfg.attention_dropout, weights.shape)
        used = jnp.where(keep, weights / (1.0 - cfg.attention_dropout), 0.0)
    read = jnp.einsum("ijnh,jnhv->inhv", used, v).reshape(u, n, heads * value)  # (U, N, Hc*Vc)
    return jnp.einsum("unv,uvd->und", read, out_weight), weights
