"""Pure JAX functions of one RIM layer, the same model as :class:`rims.RIMCell`.

Parameters are a flat dict with the PyTorch names and shapes (see :mod:`rims.jax.config`).
The public functions take and return PyTorch's batch-major states ``(N, hidden_size)``.
Inside a sequence the state is unit-major, ``(U, N, d)``, so that every per-unit matmul is a
batched matmul in XLA's canonical layout (:mod:`rims.jax.unit_matmul`); the weights are
rearranged once per sequence, the keys (and values) of all steps computed before the scan
(:mod:`rims.jax.input_side`), and each step is recomputed in the backward pass rather than
stored: on CPU the many small intermediates of a step cost more to keep than to recompute.

Everything here works under ``jax.jit``, ``jax.vmap``, ``jax.grad`` and ``jax.lax.scan``;
the hand-written backward passes (``custom_vjp``) do not support forward-mode
differentiation (``jax.jvp``, ``jax.jacfwd``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from rims.jax.attention import communicate, top_k_mask
from rims.jax.config import Params, RIMConfig, State, init_params, zero_state
from rims.jax.gates import gru_update, lstm_update
from rims.jax.input_side import input_source, project_inputs
from rims.jax.unit_matmul import shared_input_matmul, split_unit_matmul, weighted_heads

__all__ = [
    "RIMConfig",
    "StepInfo",
    "init_params",
    "layer_sequence",
    "project_inputs",
    "selection_offset",
    "step",
    "update_balance",
    "zero_state",
]


class StepInfo(NamedTuple):
    """What one step did, per batch element.

    :ivar active: ``(N, U)`` bool.
    :ivar input_attention: ``(N, U, H)`` attention on the real input (before dropout).
    :ivar comm_attention: ``(N, Hc, U, U)`` communication weights (before dropout).
    """

    active: Array
    input_attention: Array
    comm_attention: Array


class _Weights(NamedTuple):
    """Parameters rearranged once per sequence (``U`` units, ``G`` gate width)."""

    recurrent: Array  # (U, d, G + H*K): [W_hh | W_query], one batched matmul per step
    recurrent_bias: Array | None  # (U, 1, G + H*K): [b_hh (LSTM: + input-side bias) | b_query]
    input_bias: Array | None  # (U, 1, G) input-side bias of GRU dynamics
    null_proj: Array | None  # (U, H, G) W_ih b_v per head, only under attention dropout
    null_key: Array | None  # (H, K) key bias, only for the input_score rule
    comm_qkv: Array  # (U, d, Hc*(2Kc+Vc))
    comm_out: Array  # (U, Hc*Vc, d)


def _weights(params: Params, cfg: RIMConfig, dropping: bool) -> _Weights:
    """Rearrange the parameters for :func:`_unit_step` (differentiable).

    The attended input ``a v(x) + (1 - a) v(null)`` with ``v(null) = b_v`` projects through a
    unit's input weights to ``a W_ih (x W_v) + W_ih b_v``: the null value's term is a
    constant folded into the input-side bias, unless attention dropout reweights the input
    and null candidates separately (``dropping``).
    """
    u, heads, gates = cfg.num_units, cfg.num_input_heads, cfg.gate_width
    lstm = cfg.dynamics == "lstm"
    recurrent = jnp.concatenate([params["weight_hh"], params["weight_query"]], axis=-1)
    recurrent_bias = input_bias = null_proj = null_key = None
    if cfg.bias:
        w_ih = params["weight_ih"].reshape(u, heads, cfg.input_value_size, gates)
        per_head = jnp.einsum("hv,uhvg->uhg", params["bias_value"].reshape(heads, -1), w_ih)  # (U, H, G)
        null_proj = per_head if dropping else None
        input_bias = params["bias_ih"] if dropping else params["bias_ih"] + per_head.sum(1)  # (U, G)
        hidden_bias = params["bias_hh"] + input_bias if lstm else params["bias_hh"]
        recurrent_bias = jnp.concatenate([hidden_bias, params["bias_query"]], axis=-1)[:, None]
        input_bias = None if lstm else input_bias[:, None]
        if cfg.selection == "input_score":
            null_key = params["bias_key"].reshape(heads, cfg.input_key_size)
    return _Weights(
        recurrent, recurrent_bias, input_bias, null_proj, null_key, params["weight_comm_qkv"], params["weight_comm_out"]
    )


def _unit_step(
    w: _Weights,
    cfg: RIMConfig,
    keys: Array,
    proj: Array,
    h: Array,
    c: Array | None,
    rng: Array | None,
    offset: Array | None = None,
) -> tuple[Array, Array | None, tuple[Array, Array, Array]]:
    """One RIM step in the unit-major layout.

    :param keys: ``(N, H, K)`` bias-free input keys.
    :param proj: ``(U, N, H, G)`` projected input values.
    :param h: ``(U, N, d)`` hidden state; ``c`` the same cell state (LSTM) or ``None`` (GRU).
    :param rng: PRNG key for attention dropout, or ``None`` (eval).
    :param offset: ``(U, N)`` added to the ranking score for the top-k choice only (the remedies'
        noise and balancing bias, :func:`selection_offset`), or ``None``.
    :returns: ``(h', c' or None, (active (U, N), input attention (U, N, H), communication
        weights (N, Hc, U, U)))``.
    """
    u, n, _ = h.shape
    heads, gates = cfg.num_input_heads, cfg.gate_width
    scale = 1.0 / math.sqrt(cfg.input_key_size)

    # 1. input attention over {input, null}; the key bias is the null key and cancels
    gh, query = split_unit_matmul(h, w.recurrent, w.recurrent_bias, gates)  # (U, N, G), (U, N, H*K)
    query = query.reshape(u, n, heads, cfg.input_key_size)
    score = jnp.einsum("unhk,nhk->unh", query, keys) * scale  # (U, N, H) input minus null score
    attn = jax.nn.sigmoid(score)

    # 2. top-k selection (the paper's rule: least attention on null)
    if cfg.selection == "null_attention":
        rank = score[..., 0] if heads == 1 else attn.mean(-1)
    else:
        raw = score if w.null_key is None else score + jnp.einsum("unhk,hk->unh", query, w.null_key) * scale
        rank = raw.mean(-1)
    active = top_k_mask(rank if offset is None else rank + offset, cfg.k)  # (U, N)
    mask = None if cfg.k == u else active[..., None]  # (U, N, 1)

    rng_in = rng_comm = None
    if rng is not None:
        rng_in, rng_comm = jax.random.split(rng)
    p_in, p_null = attn, 1.0 - attn
    if rng_in is not None:
        keep = jax.random.bernoulli(rng_in, 1.0 - cfg.attention_dropout, (2, *attn.shape))
        p_in = jnp.where(keep[0], attn / (1.0 - cfg.attention_dropout), 0.0)
        p_null = jnp.where(keep[1], p_null / (1.0 - cfg.attention_dropout), 0.0)
    gx = weighted_heads(p_in, proj)  # (U, N, G)
    if w.null_proj is not None:  # only under dropout; else part of the bias
        gx = gx + jnp.einsum("unh,uhg->ung", p_in + p_null, w.null_proj)

    # 3. independent dynamics (all units computed, inactive ones keep their state)
    if c is not None:
        h_tilde, c = lstm_update(gh + gx, h, c, mask)
    else:
        h_tilde = gru_update(gx if w.input_bias is None else gx + w.input_bias, gh, h, mask)

    # 4. communication: active units read all units' states and add the message
    message, comm_weights = communicate(cfg, w.comm_qkv, w.comm_out, h_tilde, mask, rng_comm)
    updated = h_tilde + message
    if cfg.communication_update == "bounded":
        updated = jnp.tanh(updated)
    h_next = updated if mask is None else jnp.where(mask, updated, h_tilde)
    return h_next, c, (active, attn, comm_weights)


def _info(active: Array, attn: Array, comm: Array) -> StepInfo:
    """:class:`StepInfo` in PyTorch's batch-major layout from :func:`_unit_step`'s, with any
    leading dimensions (e.g. time)."""
    return StepInfo(
        jnp.swapaxes(active, -1, -2),  # (..., N, U)
        jnp.swapaxes(attn, -2, -3),  # (..., N, U, H)
        comm,  # (..., N, Hc, U, U)
    )


def _dropping(cfg: RIMConfig, dropout_rng: Array | None) -> bool:
    return dropout_rng is not None and cfg.attention_dropout > 0.0


def _to_units(cfg: RIMConfig, s: Array) -> Array:
    """``(N, hidden_size)`` -> ``(U, N, d)``."""
    return jnp.swapaxes(s.reshape(s.shape[0], cfg.num_units, cfg.unit_size), 0, 1)


def selection_offset(
    cfg: RIMConfig, length: int, batch: int, noise_rng: Array | None, selection_bias: Array | None, dtype: jnp.dtype
) -> Array | None:
    """The remedies' additive ranking-score offset of a sequence, ``(L, U, N)``, or ``None`` (see
    :mod:`rims.remedies`): ``selection_noise * eps`` with ``eps ~ N(0, 1)`` drawn from ``noise_rng``
    (training; ``None``: no noise) plus the balancing bias ``selection_bias`` ``(U,)``, if any.
    """
    offset = None
    if noise_rng is not None and cfg.selection_noise > 0 and cfg.k < cfg.num_units:
        offset = cfg.selection_noise * jax.random.normal(noise_rng, (length, cfg.num_units, batch), dtype)
    if selection_bias is not None:
        bias = jnp.broadcast_to(selection_bias.astype(dtype)[None, :, None], (length, cfg.num_units, batch))
        offset = bias if offset is None else offset + bias
    return offset


def update_balance(selection_bias: Array, active: Array, rate: float) -> Array:
    """Loss-free balancing's update (Wang et al. 2024, as :mod:`rims.remedies`), outside the gradient:
    ``b_i + rate * sign(mean_j load_j - load_i)``, ``load_i`` the number of rows where unit ``i`` was active.

    :param selection_bias: ``(U,)``; ``active``: ``(..., N, U)`` bool (:attr:`StepInfo.active`).
    :returns: the new bias ``(U,)``.
    """
    load = jax.lax.stop_gradient(active).reshape(-1, active.shape[-1]).sum(0).astype(selection_bias.dtype)
    return selection_bias + rate * jnp.sign(load.mean() - load)


def step(
    params: Params,
    cfg: RIMConfig,
    keys: Array,
    proj: Array,
    state: State,
    dropout_rng: Array | None = None,
    score_offset: Array | None = None,
) -> tuple[State, StepInfo]:
    """One RIM step from projected inputs (see :func:`project_inputs`).

    :param keys: ``(N, H, K)`` bias-free input keys.
    :param proj: ``(N, U, H, G)`` projected input values (see :func:`project_inputs`).
    :param state: ``(h, c)`` (LSTM) or ``(h,)`` (GRU), each ``(N, hidden_size)``.
    :param dropout_rng: PRNG key for attention dropout, or ``None`` for none (eval).
    :param score_offset: ``(U, N)`` added to the ranking score for the top-k choice, or ``None``.
    :returns: ``(new_state, info)``.
    """
    dropping = _dropping(cfg, dropout_rng)
    w = _weights(params, cfg, dropping)
    units = tuple(_to_units(cfg, s) for s in state)
    c = units[1] if cfg.dynamics == "lstm" else None
    rng = dropout_rng if dropping else None
    h, c, info = _unit_step(w, cfg, keys, jnp.swapaxes(proj, 0, 1), units[0], c, rng, score_offset)
    new_state = tuple(jnp.swapaxes(s, 0, 1).reshape(keys.shape[0], cfg.hidden_size) for s in (h, c) if s is not None)
    return new_state, _info(*info)


PER_STEP_SOURCE_WIDTH = 128
"""Widest source (``x`` or ``x W_v``, see :mod:`rims.jax.input_side`) that a sequence projects
through the units' input weights step by step, recomputed in the backward pass; wider sources
are projected for all steps at once (fewer multiply-adds, but a ``U``-times-larger array to
store and move). Measured on one CPU thread, forward+backward: input 64 (issue 14's shape)
0.96x the time step by step; ``x W_v`` of width 400 (the seed configuration) 1.24x.
"""


def layer_sequence(
    params: Params,
    cfg: RIMConfig,
    x: Array,
    state: State,
    episode_starts: Array | None = None,
    dropout_rng: Array | None = None,
    *,
    record: bool = True,
    score_offset: Array | None = None,
) -> tuple[Array, State, StepInfo | None]:
    """Run one layer over a time-major sequence with ``jax.lax.scan``.

    :param x: ``(L, N, input_size)``.
    :param state: ``n_states`` arrays of ``(N, hidden_size)``.
    :param episode_starts: optional ``(L, N)``; where true the state is zeroed before that step
        (RL rollouts spanning episode boundaries).
    :param dropout_rng: PRNG key for attention dropout, or ``None`` (eval).
    :param record: also return what each step did; ``False`` returns ``None`` for it.
    :param score_offset: ``(L, U, N)`` added to the ranking score for the top-k choice only
        (:func:`selection_offset`), or ``None``.
    :returns: ``(output (L, N, hidden_size), final state, info stacked over time or None)``.
    """
    length, batch = x.shape[:2]
    lstm = cfg.dynamics == "lstm"
    dropping = _dropping(cfg, dropout_rng)
    w = _weights(params, cfg, dropping)
    keys, source, w_in = input_source(params, cfg, x)  # (L, N, H, K), (L, N, S), (U, S, H*G)
    u, heads = cfg.num_units, cfg.num_input_heads
    per_step = source.shape[-1] <= PER_STEP_SOURCE_WIDTH
    if not per_step:  # the projections of all steps, (L, U, N, H, G)
        source = jnp.einsum("lns,usf->lunf", source, w_in).reshape(length, u, batch, heads, cfg.gate_width)
    starts = None if episode_starts is None else episode_starts.astype(bool)
    rngs = jax.random.split(dropout_rng, length) if dropping else None
    units = tuple(_to_units(cfg, s) for s in state)  # each (U, N, d)

    def body(carry: State, inputs: tuple) -> tuple[State, tuple]:
        keys_t, source_t, start_t, rng_t, offset_t = inputs
        proj_t = shared_input_matmul(source_t, w_in).reshape(u, batch, heads, -1) if per_step else source_t
        if start_t is not None:
            carry = tuple(jnp.where(start_t[None, :, None], jnp.zeros_like(s), s) for s in carry)
        h, c, info = _unit_step(w, cfg, keys_t, proj_t, carry[0], carry[1] if lstm else None, rng_t, offset_t)
        new = (h, c) if lstm else (h,)
        return new, (jnp.swapaxes(h, 0, 1).reshape(batch, cfg.hidden_size), info if record else None)

    # Recompute each step in the backward pass instead of storing its intermediates: a step's
    # intermediates are many small arrays whose allocation costs more on CPU than the recompute.
    body = jax.checkpoint(body, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
    finals, (out, info) = jax.lax.scan(body, units, (keys, source, starts, rngs, score_offset))
    finals = tuple(jnp.swapaxes(s, 0, 1).reshape(batch, cfg.hidden_size) for s in finals)
    return out, finals, None if info is None else _info(*info)
