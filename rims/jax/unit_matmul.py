"""Per-unit matrix products ``(U, N, a) @ (U, a, b)`` with a backward pass in XLA's fast layout.

XLA's CPU batched matmul is fast when the left operand contracts its last dimension and the
right one its second-to-last. Differentiated automatically, the weight gradient
``x^T @ grad`` contracts the batch dimension of ``x`` in place, which takes a slow path; here
the backward transposes the (small) operands explicitly instead.
"""

from __future__ import annotations

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
