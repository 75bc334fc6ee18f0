"""Pure JAX functions of one RIM layer, the same model as :class:`rims.RIMCell`.

Parameters are a flat dict with the PyTorch names and shapes (``weight_key``, ``weight_ih``,
...), so conversion is a rename-free copy. Arrays use the batch-major layout ``(N, U, d)``
inside a step; XLA fuses the elementwise work, so none of the PyTorch CPU tricks are needed.

Everything here works under ``jax.jit``, ``jax.vmap``, ``jax.grad`` and ``jax.lax.scan``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from rims._checks import (
    DYNAMICS,
    SELECTION_RULES,
    check_choice,
    check_positive_int,
    check_probability,
    check_rim_sizes,
)

Params = dict[str, Array]
State = tuple[Array, ...]
_GATES = {"lstm": 4, "gru": 3}


@dataclass(frozen=True)
class RIMConfig:
    """Static configuration of one RIM layer; the arguments of :class:`rims.RIMCell`.

    Validated at construction with the PyTorch module's errors.
    """

    input_size: int
    hidden_size: int
    num_units: int
    k: int
    bias: bool = True
    dynamics: str = "lstm"
    selection: str = "null_attention"
    num_input_heads: int = 1
    input_key_size: int = 64
    input_value_size: int = 400
    num_comm_heads: int = 4
    comm_key_size: int = 32
    comm_value_size: int = 32
    attention_dropout: float = 0.1

    def __post_init__(self) -> None:
        check_positive_int("input_size", self.input_size)
        check_rim_sizes(self.hidden_size, self.num_units, self.k)
        check_choice("dynamics", self.dynamics, DYNAMICS)
        check_choice("selection", self.selection, SELECTION_RULES)
        for name in ("num_input_heads", "input_key_size", "input_value_size", "num_comm_heads"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("comm_key_size", self.comm_key_size)
        check_positive_int("comm_value_size", self.comm_value_size)
        check_probability("attention_dropout", self.attention_dropout)

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


class StepInfo(NamedTuple):
    """What one step did, per batch element.

    :ivar active: ``(N, U)`` bool.
    :ivar input_attention: ``(N, U, H)`` attention on the real input (before dropout).
    :ivar comm_attention: ``(N, Hc, U, U)`` communication weights (before dropout).
    """

    active: Array
    input_attention: Array
    comm_attention: Array


def init_params(key: Array, cfg: RIMConfig, dtype: jnp.dtype = jnp.float32) -> Params:
    """Uniform ``+-1/sqrt(fan_in)`` initialisation, like ``RIMCell.reset_parameters``."""
    shapes = cfg.param_shapes()
    keys = jax.random.split(key, len(shapes))
    return {
        name: jax.random.uniform(k, shape, dtype, -cfg.init_bound(name), cfg.init_bound(name))
        for k, (name, shape) in zip(keys, shapes.items(), strict=True)
    }


def project_inputs(params: Params, cfg: RIMConfig, x: Array) -> tuple[Array, Array]:
    """Input-side work of a step, any leading shape (hoisted out of the time loop).

    The attended input ``a v(x) + (1 - a) b_v`` is affine in the attention ``a``, so its
    projection by each unit's input weights splits into ``a W_ih,i (x W_v)``, computed here
    for all steps at once, and a constant null-value term added in :func:`step`.

    :param x: ``(..., input_size)``.
    :returns: bias-free keys ``(..., H, K)`` and ``W_ih,i (x W_v)`` per unit and head
        ``(..., U, H, G)``.
    """
    heads, value = cfg.num_input_heads, cfg.input_value_size
    keys = (x @ params["weight_key"].T).reshape(*x.shape[:-1], heads, cfg.input_key_size)
    values = (x @ params["weight_value"].T).reshape(*x.shape[:-1], heads, value)
    w_ih = params["weight_ih"].reshape(cfg.num_units, heads, value, cfg.gate_width)
    return keys, jnp.einsum("...hv,uhvg->...uhg", values, w_ih)


def step(
    params: Params, cfg: RIMConfig, keys: Array, proj: Array, state: State, dropout_rng: Array | None = None
) -> tuple[State, StepInfo]:
    """One RIM step from projected inputs (see :func:`project_inputs`).

    :param keys: ``(N, H, K)`` bias-free input keys.
    :param proj: ``(N, U, H, G)`` projected input values (see :func:`project_inputs`).
    :param state: ``(h, c)`` (LSTM) or ``(h,)`` (GRU), each ``(N, hidden_size)``.
    :param dropout_rng: PRNG key for attention dropout, or ``None`` for none (eval).
    :returns: ``(new_state, info)``.
    """
    n = keys.shape[0]
    u, d, heads = cfg.num_units, cfg.unit_size, cfg.num_input_heads
    lstm = cfg.dynamics == "lstm"
    scale = 1.0 / math.sqrt(cfg.input_key_size)
    h = state[0].reshape(n, u, d)

    # 1. input attention over {input, null}; the key bias is the null key and cancels
    query = jnp.einsum("nud,udk->nuk", h, params["weight_query"])
    if cfg.bias:
        query = query + params["bias_query"]
    query = query.reshape(n, u, heads, cfg.input_key_size)
    score = jnp.einsum("nuhk,nhk->nuh", query, keys) * scale  # input minus null score
    attn = jax.nn.sigmoid(score)  # (N, U, H)

    # 2. top-k selection
    if cfg.selection == "null_attention":
        rank = score[..., 0] if heads == 1 else attn.mean(-1)
    else:
        raw = score
        if cfg.bias:
            null_key = params["bias_key"].reshape(heads, cfg.input_key_size)
            raw = raw + jnp.einsum("nuhk,hk->nuh", query, null_key) * scale
        rank = raw.mean(-1)
    top = jax.lax.top_k(rank, cfg.k)[1]  # (N, k)
    active = jax.nn.one_hot(top, u, dtype=jnp.int32).sum(1) > 0  # (N, U)

    rng_in = rng_comm = None
    if dropout_rng is not None and cfg.attention_dropout > 0.0:
        rng_in, rng_comm = jax.random.split(dropout_rng)
    p_in, p_null = attn, 1.0 - attn
    if rng_in is not None:
        keep = jax.random.bernoulli(rng_in, 1.0 - cfg.attention_dropout, (2, *attn.shape))
        p_in = jnp.where(keep[0], p_in / (1.0 - cfg.attention_dropout), 0.0)
        p_null = jnp.where(keep[1], p_null / (1.0 - cfg.attention_dropout), 0.0)
    # attended input p_in v(x) + p_null v(null), v(null) = b_v, through each unit's input weights
    gx = jnp.einsum("nuh,nuhg->nug", p_in, proj)
    if cfg.bias:
        w_ih = params["weight_ih"].reshape(u, heads, cfg.input_value_size, cfg.gate_width)
        null_proj = jnp.einsum("hv,uhvg->uhg", params["bias_value"].reshape(heads, -1), w_ih)  # (U, H, G)
        gx = gx + jnp.einsum("nuh,uhg->nug", p_in + p_null, null_proj)

    # 3. independent dynamics (all units computed, inactive ones discarded)
    gh = jnp.einsum("nud,udg->nug", h, params["weight_hh"])
    if cfg.bias:
        gx, gh = gx + params["bias_ih"], gh + params["bias_hh"]
    keep_unit = active[..., None]
    if lstm:
        c = state[1].reshape(n, u, d)
        pre = gx + gh
        i_g, f_g, o_g = jnp.split(jax.nn.sigmoid(pre[..., : 3 * d]), 3, axis=-1)
        c_new = f_g * c + i_g * jnp.tanh(pre[..., 3 * d :])
        h_new = o_g * jnp.tanh(c_new)
        c_next = jnp.where(keep_unit, c_new, c)
    else:
        r_g, z_g = jnp.split(jax.nn.sigmoid(gx[..., : 2 * d] + gh[..., : 2 * d]), 2, axis=-1)
        n_g = jnp.tanh(gx[..., 2 * d :] + r_g * gh[..., 2 * d :])
        h_new = (1.0 - z_g) * n_g + z_g * h
    h_tilde = jnp.where(keep_unit, h_new, h)

    # 4. communication: active units read all units; inactive units' projection weights get
    # no gradient from this step (their key/value use the stopped weights).
    message, comm_weights = _communicate(params, cfg, h_tilde, keep_unit, rng_comm)
    h_next = jnp.where(keep_unit, h_tilde + message, h_tilde)
    new_h = h_next.reshape(n, cfg.hidden_size)
    new_state = (new_h, c_next.reshape(n, cfg.hidden_size)) if lstm else (new_h,)
    return new_state, StepInfo(active, attn, comm_weights)


def _communicate(
    params: Params, cfg: RIMConfig, states: Array, keep_unit: Array, rng: Array | None
) -> tuple[Array, Array]:
    """Multi-head attention among units: ``(messages (N, U, d), weights (N, Hc, U, U))``."""
    n, u = states.shape[0], cfg.num_units
    heads, key, value = cfg.num_comm_heads, cfg.comm_key_size, cfg.comm_value_size
    weight = params["weight_comm_qkv"]
    live = jnp.einsum("nud,udf->nuf", states, weight)
    frozen = jnp.einsum("nud,udf->nuf", states, jax.lax.stop_gradient(weight))
    qkv = jnp.where(keep_unit, live, frozen)
    q = qkv[..., : heads * key].reshape(n, u, heads, key)
    k = qkv[..., heads * key : 2 * heads * key].reshape(n, u, heads, key)
    v = qkv[..., 2 * heads * key :].reshape(n, u, heads, value)
    weights = jax.nn.softmax(jnp.einsum("nihk,njhk->nhij", q, k) / math.sqrt(key), axis=-1)
    used = weights
    if rng is not None:
        keep = jax.random.bernoulli(rng, 1.0 - cfg.attention_dropout, weights.shape)
        used = jnp.where(keep, weights / (1.0 - cfg.attention_dropout), 0.0)
    read = jnp.einsum("nhij,njhv->nihv", used, v).reshape(n, u, heads * value)
    return jnp.einsum("nuv,uvd->nud", read, params["weight_comm_out"]), weights


def zero_state(cfg: RIMConfig, batch: int, dtype: jnp.dtype = jnp.float32) -> State:
    """Zero state of one layer: ``n_states`` arrays of ``(batch, hidden_size)``."""
    return tuple(jnp.zeros((batch, cfg.hidden_size), dtype) for _ in range(cfg.n_states))


def layer_sequence(
    params: Params,
    cfg: RIMConfig,
    x: Array,
    state: State,
    episode_starts: Array | None = None,
    dropout_rng: Array | None = None,
) -> tuple[Array, State, StepInfo]:
    """Run one layer over a time-major sequence with ``jax.lax.scan``.

    :param x: ``(L, N, input_size)``.
    :param state: ``n_states`` arrays of ``(N, hidden_size)``.
    :param episode_starts: optional ``(L, N)``; where true the state is zeroed before that step
        (RL rollouts spanning episode boundaries).
    :param dropout_rng: PRNG key for attention dropout, or ``None`` (eval).
    :returns: ``(output (L, N, hidden_size), final state, info stacked over time)``.
    """
    keys, proj = project_inputs(params, cfg, x)
    length = x.shape[0]
    starts = jnp.zeros(x.shape[:2], bool) if episode_starts is None else episode_starts.astype(bool)
    rngs = None if dropout_rng is None else jax.random.split(dropout_rng, length)

    def body(carry: State, inputs: tuple) -> tuple[State, tuple[Array, StepInfo]]:
        keys_t, proj_t, start_t, rng_t = inputs
        carry = tuple(jnp.where(start_t[:, None], jnp.zeros_like(s), s) for s in carry)
        new, info = step(params, cfg, keys_t, proj_t, carry, rng_t)
        return new, (new[0], info)

    final, (out, info) = jax.lax.scan(body, tuple(state), (keys, proj, starts, rngs))
    return out, final, info
