"""Per-unit matrix products ``(U, N, a) @ (U, a, b)`` with a backward pass in XLA's fast layout.

XLA's CPU batched matmul is fast when the left operand contracts its last dimension and the
right one its second-to-last. Differentiated automatically, the weight gradient
``x^T @ grad`` contracts the batch dimension of ``x`` in place, which takes a slow path; here
the backward transposes the (small) operands explicitly instead.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import Array


@jax.custom_vjp
def unit_matmul(x: Array, weight: Array) -> Array:
    """``x @ weight`` per unit.

    :param x: ``(U, N, a)``.
    :param weight: ``(U, a, b)``.
    :returns: ``(U, N, b)``.
    """
    return jnp.einsum("una,uab->unb", x, weight)


def _unit_matmul_forward(x: Array, weight: Array) -> tuple[Array, tuple[Array, Array]]:
    return unit_matmul(x, weight), (x, weight)


def _unit_matmul_backward(residuals: tuple[Array, Array], grad: Array) -> tuple[Array, Array]:
    x, weight = residuals
    grad_x = jnp.einsum("unb,uba->una", grad, jnp.swapaxes(weight, 1, 2))
    grad_weight = jnp.einsum("uan,unb->uab", jnp.swapaxes(x, 1, 2), grad)
    return grad_x, grad_weight


unit_matmul.defvjp(_unit_matmul_forward, _unit_matmul_backward)


@jax.custom_vjp
def active_weight_grad_matmul(x: Array, weight: Array, active: Array) -> Array:
    """``x @ weight`` per unit whose weight gradient comes only from rows of active units.

    Gradients: ``x`` gets ``grad @ weight^T`` on every row, ``weight`` gets
    ``(x * active)^T @ grad`` (as ``rims.cell._ActiveWeightGradBmm``).

    :param x: ``(U, N, a)``.
    :param weight: ``(U, a, b)``.
    :param active: ``(U, N, 1)`` bool.
    :returns: ``(U, N, b)``.
    """
    return jnp.einsum("una,uab->unb", x, weight)


def _active_forward(x: Array, weight: Array, active: Array) -> tuple[Array, tuple[Array, Array, Array]]:
    return active_weight_grad_matmul(x, weight, active), (x, weight, active)


def _active_backward(residuals: tuple[Array, Array, Array], grad: Array) -> tuple[Array, Array, None]:
    x, weight, active = residuals
    grad_x = jnp.einsum("unb,uba->una", grad, jnp.swapaxes(weight, 1, 2))
    grad_weight = jnp.einsum("uan,unb->uab", jnp.swapaxes(jnp.where(active, x, 0.0), 1, 2), grad)
    return grad_x, grad_weight, None


active_weight_grad_matmul.defvjp(_active_forward, _active_backward)


@jax.custom_vjp
def shared_input_matmul(x: Array, weight: Array) -> Array:
    """``x @ weight[u]`` for every unit ``u``: one input seen through each unit's weights.

    :param x: ``(N, a)``.
    :param weight: ``(U, a, b)``.
    :returns: ``(U, N, b)``.
    """
    return unit_matmul(jnp.broadcast_to(x, (weight.shape[0], *x.shape)), weight)


def _shared_forward(x: Array, weight: Array) -> tuple[Array, tuple[Array, Array]]:
    return shared_input_matmul(x, weight), (x, weight)


def _shared_backward(residuals: tuple[Array, Array], grad: Array) -> tuple[Array, Array]:
    x, weight = residuals
    grad_x = jnp.einsum("unb,uba->una", grad, jnp.swapaxes(weight, 1, 2)).sum(0)
    x_t = jnp.broadcast_to(x.T, (weight.shape[0], *x.T.shape))
    return grad_x, jnp.einsum("uan,unb->uab", x_t, grad)


shared_input_matmul.defvjp(_shared_forward, _shared_backward)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def split_unit_matmul(x: Array, weight: Array, bias: Array | None, split: int) -> tuple[Array, Array]:
    """``x @ weight + bias`` per unit, returned as its first ``split`` columns and the rest.

    The backward pass concatenates the two gradients once (split by slicing, they would come
    back as two zero-padded arrays, summed).

    :param x: ``(U, N, a)``.
    :param weight: ``(U, a, b)``.
    :param bias: ``(U, 1, b)`` or ``None``.
    :returns: ``(U, N, split)`` and ``(U, N, b - split)``.
    """
    y = unit_matmul(x, weight)
    if bias is not None:
        y = y + bias
    return y[..., :split], y[..., split:]


def _split_forward(
    x: Array, weight: Array, bias: Array | None, split: int
) -> tuple[tuple[Array, Array], tuple[Array, Array, bool]]:
    return split_unit_matmul(x, weight, bias, split), (x, weight, bias is not None)


def _split_backward(
    split: int, residuals: tuple[Array, Array, bool], grads: tuple[Array, Array]
) -> tuple[Array, Array, Array | None]:
    x, weight, has_bias = residuals
    grad = jnp.concatenate(grads, axis=-1)
    grad_x, grad_weight = _unit_matmul_backward((x, weight), grad)
    grad_bias = None
    if has_bias:  # sum over the batch as a matmul with ones (XLA's reductions over rows are slow)
        ones = jnp.ones((x.shape[0], 1, x.shape[1]), grad.dtype)
        grad_bias = jnp.einsum("uon,unb->uob", ones, grad)
    return grad_x, grad_weight, grad_bias


split_unit_matmul.defvjp(_split_forward, _split_backward)


def row_dot(a: Array, b: Array) -> Array:
    """``sum(a * b, -1)`` as a matmul with a column of ones (XLA's CPU reductions are slow).

    :param a: ``(..., k)``; ``b`` broadcasts against it.
    :returns: ``(...)``.
    """
    return ((a * b) @ jnp.ones((a.shape[-1], 1), a.dtype))[..., 0]


@jax.custom_vjp
def weighted_heads(p: Array, proj: Array) -> Array:
    """``sum_h p[..., h] proj[..., h, :]``: the attended input through a unit's input weights.

    :param p: ``(U, N, H)`` attention on the input per head.
    :param proj: ``(U, N, H, G)`` projected input per head.
    :returns: ``(U, N, G)``.
    """
    return jnp.sum(p[..., None] * proj, axis=-2)


def _weighted_forward(p: Array, proj: Array) -> tuple[Array, tuple[Array, Array]]:
    return weighted_heads(p, proj), (p, proj)


def _weighted_backward(residuals: tuple[Array, Array], grad: Array) -> tuple[Array, Array]:
    p, proj = residuals
    return row_dot(proj, grad[..., None, :]), p[..., None] * grad[..., None, :]


weighted_heads.defvjp(_weighted_forward, _weighted_backward)
