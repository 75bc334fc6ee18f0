"""LSTM and GRU updates of a RIM step with the keep-inactive rule, each one ``custom_vjp``.

Differentiated automatically, the gate slices of the pre-activations come back as one padded
array per gate, summed; here the backward pass writes the gradient of the gate
pre-activations in one concatenation, recomputing the gates from the pre-activations (as
:mod:`rims.mechanisms.dynamics` does for PyTorch). Inactive units keep their previous state bit for bit
and send no gradient into their gate pre-activations.

Shapes: ``U`` units, ``N`` batch, ``d`` unit size; ``mask`` is ``(U, N, 1)`` bool (``True`` =
active) or ``None`` when every unit is active.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array


def _keep(mask: Array | None, new: Array, old: Array) -> Array:
    return new if mask is None else jnp.where(mask, new, old)


def _active(mask: Array | None, grad: Array) -> Array:
    return grad if mask is None else jnp.where(mask, grad, 0.0)


def _inactive(mask: Array | None, grad: Array) -> Array | None:
    return None if mask is None else jnp.where(mask, 0.0, grad)


def _lstm_gates(pre: Array, c: Array) -> tuple[Array, Array, Array, Array, Array]:
    d = c.shape[-1]
    i, f, o = jnp.split(jax.nn.sigmoid(pre[..., : 3 * d]), 3, axis=-1)
    g = jnp.tanh(pre[..., 3 * d :])
    return i, f, o, g, f * c + i * g


@jax.custom_vjp
def lstm_update(pre: Array, h: Array, c: Array, mask: Array | None) -> tuple[Array, Array]:
    """LSTM update of active units, kept state for the others.

    :param pre: ``(U, N, 4d)`` gate pre-activations in the order ``i, f, o, g``.
    :param h: ``(U, N, d)`` previous hidden state; ``c`` the previous cell state.
    :returns: ``(h', c')``, each ``(U, N, d)``.
    """
    _, _, o, _, c_new = _lstm_gates(pre, c)
    return _keep(mask, o * jnp.tanh(c_new), h), _keep(mask, c_new, c)


def _lstm_forward(
    pre: Array, h: Array, c: Array, mask: Array | None
) -> tuple[tuple[Array, Array], tuple[Array, Array, Array | None]]:
    return lstm_update(pre, h, c, mask), (pre, c, mask)


def _lstm_backward(
    residuals: tuple[Array, Array, Array | None], grads: tuple[Array, Array]
) -> tuple[Array, Array, Array, None]:
    pre, c, mask = residuals
    grad_h, grad_c = grads
    i, f, o, g, c_new = _lstm_gates(pre, c)
    tanh_c = jnp.tanh(c_new)
    active_h = _active(mask, grad_h)
    grad_c_new = _active(mask, grad_c) + active_h * o * (1.0 - tanh_c * tanh_c)
    grad_pre = jnp.concatenate(
        [
            grad_c_new * g * i * (1.0 - i),
            grad_c_new * c * f * (1.0 - f),
            active_h * tanh_c * o * (1.0 - o),
            grad_c_new * i * (1.0 - g * g),
        ],
        axis=-1,
    )
    kept_h = _inactive(mask, grad_h)
    grad_h_prev = jnp.zeros_like(grad_h) if kept_h is None else kept_h
    grad_c_prev = grad_c_new * f if mask is None else jnp.where(mask, grad_c_new * f, grad_c)
    return grad_pre, grad_h_prev, grad_c_prev, None


lstm_update.defvjp(_lstm_forward, _lstm_backward)


def _gru_gates(gx: Array, gh: Array) -> tuple[Array, Array, Array]:
    d = gx.shape[-1] // 3
    r, z = jnp.split(jax.nn.sigmoid(gx[..., : 2 * d] + gh[..., : 2 * d]), 2, axis=-1)
    return r, z, jnp.tanh(gx[..., 2 * d :] + r * gh[..., 2 * d :])


@jax.custom_vjp
def gru_update(gx: Array, gh: Array, h: Array, mask: Array | None) -> Array:
    """GRU update of active units, kept state for the others.

    :param gx: ``(U, N, 3d)`` input-side pre-activations in the order ``r, z, n`` (with bias).
    :param gh: ``(U, N, 3d)`` hidden-side pre-activations ``h W_hh + b_hh``.
    :param h: ``(U, N, d)`` previous hidden state.
    :returns: ``h'`` ``(U, N, d)``.
    """
    _, z, n = _gru_gates(gx, gh)
    return _keep(mask, (1.0 - z) * n + z * h, h)


def _gru_forward(
    gx: Array, gh: Array, h: Array, mask: Array | None
) -> tuple[Array, tuple[Array, Array, Array, Array | None]]:
    return gru_update(gx, gh, h, mask), (gx, gh, h, mask)


def _gru_backward(
    residuals: tuple[Array, Array, Array, Array | None], grad_h: Array
) -> tuple[Array, Array, Array, None]:
    gx, gh, h, mask = residuals
    d = h.shape[-1]
    r, z, n = _gru_gates(gx, gh)
    active_h = _active(mask, grad_h)
    grad_n = active_h * (1.0 - z) * (1.0 - n * n)
    grad_r = grad_n * gh[..., 2 * d :] * r * (1.0 - r)
    grad_z = active_h * (h - n) * z * (1.0 - z)
    grad_gx = jnp.concatenate([grad_r, grad_z, grad_n], axis=-1)
    grad_gh = jnp.concatenate([grad_r, grad_z, grad_n * r], axis=-1)
    kept_h = _inactive(mask, grad_h)
    grad_h_prev = active_h * z if kept_h is None else active_h * z + kept_h
    return grad_gx, grad_gh, grad_h_prev, None


gru_update.defvjp(_gru_forward, _gru_backward)
