"""Fused LSTM / GRU gate arithmetic with the RIM keep-inactive rule, one autograd node each.

A RIM step applies the gate nonlinearities to every unit and keeps the old state of inactive
units. Written with plain ops this is a dozen autograd nodes per step (slices, chunks and
their ``cat``/zero-filled backward buffers); these functions do it in one node with a
hand-written backward. Inactive units get their previous state bit for bit (``torch.where``)
and send no gradient into their gate pre-activations.

Shapes: ``U`` units, ``N`` batch, ``d`` unit size; the mask is ``(U, N, 1)`` bool (``True`` =
active) or ``None`` when every unit is active.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def lstm_gates(pre: Tensor, h: Tensor, c: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """LSTM update of active units, kept state for the others.

    :param pre: ``(U, N, 4d)`` gate pre-activations in the order ``i, f, o, g``.
    :param h: ``(U, N, d)`` previous hidden state.
    :param c: ``(U, N, d)`` previous cell state.
    :param mask: ``(U, N, 1)`` bool active mask or ``None``.
    :returns: ``(h', c')``, each ``(U, N, d)``.
    """
    if torch.is_grad_enabled():
        return _LSTMGates.apply(pre, h, c, mask)
    return lstm_forward(pre, h, c, mask)[0]


def gru_gates(gx: Tensor, gh: Tensor, h: Tensor, mask: Tensor | None) -> Tensor:
    """GRU update of active units, kept state for the others.

    :param gx: ``(U, N, 3d)`` input-side pre-activations in the order ``r, z, n`` (with bias).
    :param gh: ``(U, N, 3d)`` hidden-side pre-activations ``h W_hh + b_hh``.
    :param h: ``(U, N, d)`` previous hidden state.
    :param mask: ``(U, N, 1)`` bool active mask or ``None``.
    :returns: ``h'`` ``(U, N, d)``.
    """
    if torch.is_grad_enabled():
        return _GRUGates.apply(gx, gh, h, mask)
    return gru_forward(gx, gh, h, mask)[0]


def lstm_gates_backward(
    grad_h: Tensor,
    grad_c: Tensor,
    sig: Tensor,
    g: Tensor,
    c: Tensor,
    tanh_c: Tensor,
    mask: Tensor | None,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Gradients of :func:`lstm_gates` (also the Python loops of :mod:`rims.fast_paths.python_loops`).

    :param grad_h: ``(U, N, d)`` gradient on ``h'``; ``grad_c`` the same on ``c'``.
    :param sig: ``(U, N, 3d)`` sigmoid gates ``i, f, o``; ``g`` ``(U, N, d)`` the tanh gate.
    :param c: ``(U, N, d)`` previous cell state; ``tanh_c`` ``tanh(c_new)``.
    :param mask: ``(U, N, 1)`` bool active mask or ``None``.
    :param out: ``(U, N, 4d)`` (rows may be strided) to write ``grad_pre`` into, or ``None``.
    :returns: ``(grad_pre (U, N, 4d), grad_h_prev or None, grad_c_prev)``; ``grad_h_prev`` is the
        kept-state gradient of inactive units (``None`` when all are active).
    """
    d = c.shape[-1]
    i, f, o = sig[..., :d], sig[..., d : 2 * d], sig[..., 2 * d :]
    zero = grad_h.new_zeros(())
    active_h = grad_h if mask is None else torch.where(mask, grad_h, zero)
    active_c = grad_c if mask is None else torch.where(mask, grad_c, zero)
    # total gradient on c' of active units: direct + through h' = o * tanh(c')
    dc = torch.addcmul(active_c, active_h * o, _one_minus_square(tanh_c))
    grad_pre = sig.new_empty(*sig.shape[:-1], 4 * d) if out is None else out
    torch.mul(dc * g, _slope(i), out=grad_pre[..., :d])
    torch.mul(dc * c, _slope(f), out=grad_pre[..., d : 2 * d])
    torch.mul(active_h * tanh_c, _slope(o), out=grad_pre[..., 2 * d : 3 * d])
    torch.mul(dc * i, _one_minus_square(g), out=grad_pre[..., 3 * d :])
    kept_h = None if mask is None else torch.where(mask, zero, grad_h)
    grad_c_prev = dc * f if mask is None else torch.where(mask, dc * f, grad_c)
    return grad_pre, kept_h, grad_c_prev


def gru_gates_backward(
    grad: Tensor,
    rz: Tensor,
    n: Tensor,
    gh_n: Tensor,
    h: Tensor,
    mask: Tensor | None,
    out: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`gru_gates` (also the Python loops of :mod:`rims.fast_paths.python_loops`).

    :param grad: ``(U, N, d)`` gradient on ``h'``.
    :param rz: ``(U, N, 2d)`` sigmoid gates ``r, z``; ``n`` ``(U, N, d)`` the candidate.
    :param gh_n: ``(U, N, d)`` hidden-side pre-activation of the candidate (with bias).
    :param h: ``(U, N, d)`` previous hidden state; ``mask`` ``(U, N, 1)`` bool or ``None``.
    :param out: two ``(U, N, 3d)`` tensors (rows may be strided) for ``grad_gx, grad_gh``, or ``None``.
    :returns: ``(grad_gx (U, N, 3d), grad_gh (U, N, 3d), grad_h_prev (U, N, d))``, the last
        without the part through ``W_hh``.
    """
    d = h.shape[-1]
    r, z = rz[..., :d], rz[..., d:]
    zero = grad.new_zeros(())
    active = grad if mask is None else torch.where(mask, grad, zero)
    dn = torch.addcmul(active, active, z, value=-1.0) * _one_minus_square(n)  # through tanh
    grad_gx, grad_gh = (rz.new_empty(*rz.shape[:-1], 3 * d), None) if out is None else out
    torch.mul(active * (h - n), _slope(z), out=grad_gx[..., d : 2 * d])
    torch.mul(dn * gh_n, _slope(r), out=grad_gx[..., :d])
    grad_gx[..., 2 * d :] = dn
    if grad_gh is None:
        grad_gh = grad_gx.clone()
    else:
        grad_gh[..., : 2 * d] = grad_gx[..., : 2 * d]
    torch.mul(dn, r, out=grad_gh[..., 2 * d :])
    grad_h = active * z if mask is None else torch.where(mask, active * z, grad)
    return grad_gx, grad_gh, grad_h


def tanh_gate(x: Tensor) -> Tensor:
    """``tanh(x)``; on CPU in float32 as ``2 sigmoid(2x) - 1`` (no autograd graph: for the gate kernels).

    ``torch.tanh`` on CPU costs about six ``sigmoid``s here (84 against 14 us for 32k float32
    values, one thread); the sigmoid form costs two. Its error is within 2e-7 absolute (relative
    error grows near 0), as the C++ loops' ``tanh_gate`` (:mod:`rims.fast_paths.native`). Other devices
    and dtypes use ``torch.tanh``.
    """
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return torch.tanh(x)
    return torch.sigmoid(x * 2.0).mul_(2.0).sub_(1.0)


def _slope(x: Tensor) -> Tensor:
    """``x - x * x``: the sigmoid's derivative at output ``x``, in one op."""
    return torch.addcmul(x, x, x, value=-1.0)


def _one_minus_square(x: Tensor) -> Tensor:
    """``1 - x * x``: tanh's derivative at output ``x``, in one op."""
    return torch.addcmul(x.new_ones(()), x, x, value=-1.0)


def keep_inactive(mask: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    """``new`` for active units, ``old`` (bit for bit, no gradient into ``new``) for the others."""
    return new if mask is None else torch.where(mask, new, old)


def lstm_forward(
    pre: Tensor, h: Tensor, c: Tensor, mask: Tensor | None
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """``((h', c'), (sigmoid gates, tanh gate, tanh(c_new)))`` without an autograd graph of its own.

    Shapes as :func:`lstm_gates`; ``pre`` may carry leading dimensions that ``h`` and ``c``
    broadcast over (SCOFF: one candidate per schema, ``(S, U, N, 4d)``).
    """
    d = h.shape[-1]
    sig = torch.sigmoid(pre[..., : 3 * d])  # i, f, o
    g = tanh_gate(pre[..., 3 * d :])
    i, f, o = sig[..., :d], sig[..., d : 2 * d], sig[..., 2 * d :]
    c_new = torch.addcmul(f * c, i, g)
    tanh_c = tanh_gate(c_new)
    h_new = o * tanh_c
    return (keep_inactive(mask, h_new, h), keep_inactive(mask, c_new, c)), (sig, g, tanh_c)


def gru_forward(gx: Tensor, gh: Tensor, h: Tensor, mask: Tensor | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """``(h', (sigmoid gates r z, candidate n))``; shapes as :func:`gru_gates`, with leading
    dimensions of ``gx``/``gh`` that ``h`` broadcasts over (as :func:`lstm_forward`)."""
    d = h.shape[-1]
    rz = torch.sigmoid(gx[..., : 2 * d] + gh[..., : 2 * d])
    r, z = rz[..., :d], rz[..., d:]
    n = tanh_gate(torch.addcmul(gx[..., 2 * d :], r, gh[..., 2 * d :]))
    return keep_inactive(mask, torch.addcmul(n, z, h - n), h), (rz, n)


class _LSTMGates(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: Tensor, h: Tensor, c: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        out, (sig, g, tanh_c) = lstm_forward(pre, h, c, mask)
        ctx.save_for_backward(sig, g, c, tanh_c, mask)
        return out

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor, grad_c: Tensor) -> tuple[Tensor | None, ...]:
        sig, g, c, tanh_c, mask = ctx.saved_tensors
        return (*lstm_gates_backward(grad_h, grad_c, sig, g, c, tanh_c, mask), None)


class _GRUGates(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gx: Tensor, gh: Tensor, h: Tensor, mask: Tensor | None) -> Tensor:
        out, (rz, n) = gru_forward(gx, gh, h, mask)
        ctx.save_for_backward(rz, n, gh, h, mask)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        rz, n, gh, h, mask = ctx.saved_tensors
        d = h.shape[-1]
        return (*gru_gates_backward(grad, rz, n, gh[..., 2 * d :], h, mask), None)
