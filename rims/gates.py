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
    return _lstm_forward(pre, h, c, mask)[0]


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
    return _gru_forward(gx, gh, h, mask)[0]


def _keep(mask: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    return new if mask is None else torch.where(mask, new, old)


def _lstm_forward(
    pre: Tensor, h: Tensor, c: Tensor, mask: Tensor | None
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """``((h', c'), (sigmoid gates, tanh gate, tanh(c_new)))``."""
    d = h.shape[-1]
    sig = torch.sigmoid(pre[..., : 3 * d])  # i, f, o
    g = torch.tanh(pre[..., 3 * d :])
    i, f, o = sig[..., :d], sig[..., d : 2 * d], sig[..., 2 * d :]
    c_new = torch.addcmul(f * c, i, g)
    tanh_c = torch.tanh(c_new)
    h_new = o * tanh_c
    return (_keep(mask, h_new, h), _keep(mask, c_new, c)), (sig, g, tanh_c)


def _gru_forward(gx: Tensor, gh: Tensor, h: Tensor, mask: Tensor | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """``(h', (sigmoid gates r z, candidate n))``."""
    d = h.shape[-1]
    rz = torch.sigmoid(gx[..., : 2 * d] + gh[..., : 2 * d])
    r, z = rz[..., :d], rz[..., d:]
    n = torch.tanh(torch.addcmul(gx[..., 2 * d :], r, gh[..., 2 * d :]))
    return _keep(mask, torch.addcmul(n, z, h - n), h), (rz, n)


class _LSTMGates(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: Tensor, h: Tensor, c: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        out, (sig, g, tanh_c) = _lstm_forward(pre, h, c, mask)
        ctx.save_for_backward(sig, g, c, tanh_c, mask)
        return out

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor, grad_c: Tensor) -> tuple[Tensor | None, ...]:
        sig, g, c, tanh_c, mask = ctx.saved_tensors
        d = c.shape[-1]
        i, f, o = sig[..., :d], sig[..., d : 2 * d], sig[..., 2 * d :]
        zero = grad_h.new_zeros(())
        active_h = grad_h if mask is None else torch.where(mask, grad_h, zero)
        active_c = grad_c if mask is None else torch.where(mask, grad_c, zero)
        # total gradient on c' of active units: direct + through h' = o * tanh(c')
        dc = torch.addcmul(active_c, active_h * o, 1.0 - tanh_c * tanh_c)
        grad_pre = sig.new_empty(*sig.shape[:-1], 4 * d)
        torch.mul(dc * g, i * (1.0 - i), out=grad_pre[..., :d])
        torch.mul(dc * c, f * (1.0 - f), out=grad_pre[..., d : 2 * d])
        torch.mul(active_h * tanh_c, o * (1.0 - o), out=grad_pre[..., 2 * d : 3 * d])
        torch.mul(dc * i, 1.0 - g * g, out=grad_pre[..., 3 * d :])
        kept_h = None if mask is None else torch.where(mask, zero, grad_h)
        grad_c_prev = dc * f if mask is None else torch.where(mask, dc * f, grad_c)
        return grad_pre, kept_h, grad_c_prev, None


class _GRUGates(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gx: Tensor, gh: Tensor, h: Tensor, mask: Tensor | None) -> Tensor:
        out, (rz, n) = _gru_forward(gx, gh, h, mask)
        ctx.save_for_backward(rz, n, gh, h, mask)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        rz, n, gh, h, mask = ctx.saved_tensors
        d = h.shape[-1]
        r, z = rz[..., :d], rz[..., d:]
        zero = grad.new_zeros(())
        active = grad if mask is None else torch.where(mask, grad, zero)
        dn = active * (1.0 - z) * (1.0 - n * n)  # through tanh
        grad_gx = torch.empty_like(gh)
        torch.mul(active * (h - n), z * (1.0 - z), out=grad_gx[..., d : 2 * d])
        torch.mul(dn * gh[..., 2 * d :], r * (1.0 - r), out=grad_gx[..., :d])
        grad_gx[..., 2 * d :] = dn
        grad_gh = grad_gx.clone()
        grad_gh[..., 2 * d :].mul_(r)
        grad_h = active * z if mask is None else torch.where(mask, active * z, grad)
        return grad_gx, grad_gh, grad_h, None
