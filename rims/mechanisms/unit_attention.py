"""Multi-head attention among a handful of units, fast on CPU.

RIM communication attends over ``U`` units (4-8) per batch element and head: thousands of
4x4 problems. ``F.scaled_dot_product_attention`` and autograd through ``torch.softmax`` are
slow at that size on CPU (a softmax over a last dimension of 4 costs more than the matmuls,
and ``bmm`` on permuted views falls back to a per-matrix loop in backward). This module lays
``q, k, v`` out contiguously once, uses an explicit softmax and a hand-written backward with
contiguous ``bmm`` calls only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def unit_attention(
    qkv: Tensor, heads: int, key_size: int, value_size: int, scale: float, dropout: float
) -> tuple[Tensor, Tensor]:
    """Attention of every unit over all units, per batch element and head.

    :param qkv: ``(U, N, heads * (2 * key_size + value_size))``: per unit the query, key and
        value blocks, each head-major.
    :param heads: number of heads ``Hc``.
    :param key_size: query/key size per head ``K``.
    :param value_size: value size per head ``V``.
    :param scale: score scale, usually ``key_size ** -0.5``.
    :param dropout: dropout probability on the attention weights (pass 0 outside training).
    :returns: ``(read, weights)``: ``read (U, N, Hc * V)`` and the attention weights
        ``(N, Hc, U, U)`` before dropout (not differentiable).
    """
    return _UnitAttention.apply(qkv, heads, key_size, value_size, scale, dropout)


class _UnitAttention(torch.autograd.Function):
    """Autograd function behind :func:`unit_attention`."""

    @staticmethod
    def forward(
        ctx: Any, qkv: Tensor, heads: int, key_size: int, value_size: int, scale: float, dropout: float
    ) -> tuple[Tensor, Tensor]:
        u, n = qkv.shape[0], qkv.shape[1]
        qk_width = 2 * heads * key_size
        # (U, N, 2, Hc, K) -> (2, N*Hc, U, K) and (U, N, Hc, V) -> (N*Hc, U, V), contiguous
        qk = qkv[..., :qk_width].reshape(u, n, 2, heads, key_size).permute(2, 1, 3, 0, 4)
        qk = qk.reshape(2, n * heads, u, key_size)
        v = qkv[..., qk_width:].reshape(u, n, heads, value_size).permute(1, 2, 0, 3).reshape(n * heads, u, value_size)
        q, k = qk[0], qk[1]
        scores = torch.bmm(q, k.transpose(1, 2)).mul_(scale)  # (N*Hc, U, U)
        weights = torch.exp(scores.sub_(scores.amax(-1, keepdim=True)))
        weights = weights.div_(weights.sum(-1, keepdim=True))
        keep = None
        used = weights
        if dropout > 0.0:
            keep = torch.empty_like(weights).bernoulli_(1.0 - dropout).div_(1.0 - dropout)
            used = weights * keep
        read = torch.bmm(used, v)  # (N*Hc, U, V)
        ctx.save_for_backward(qk, v, weights, keep)
        ctx.sizes = (u, n, heads, key_size, value_size, scale)
        ctx.mark_non_differentiable(weights)
        read = read.view(n, heads, u, value_size).permute(2, 0, 1, 3).reshape(u, n, heads * value_size)
        return read, weights.view(n, heads, u, u)

    @staticmethod
    def backward(ctx: Any, grad_read: Tensor, _grad_weights: Tensor | None) -> tuple[Tensor | None, ...]:
        qk, v, weights, keep = ctx.saved_tensors
        u, n, heads, key_size, value_size, scale = ctx.sizes
        q, k = qk[0], qk[1]
        g = grad_read.reshape(u, n, heads, value_size).permute(1, 2, 0, 3).reshape(n * heads, u, value_size)
        used = weights if keep is None else weights * keep
        grad_v = torch.bmm(used.transpose(1, 2), g)  # (N*Hc, U, V)
        grad_w = torch.bmm(g, v.transpose(1, 2))  # (N*Hc, U, U)
        if keep is not None:
            grad_w = grad_w * keep
        grad_s = weights * (grad_w - (grad_w * weights).sum(-1, keepdim=True))
        grad_s = grad_s.mul_(scale)
        grad_qk = torch.empty_like(qk)
        torch.bmm(grad_s, k, out=grad_qk[0])
        torch.bmm(grad_s.transpose(1, 2), q, out=grad_qk[1])
        grad_qk = grad_qk.view(2, n, heads, u, key_size).permute(3, 1, 0, 2, 4).reshape(u, n, 2 * heads * key_size)
        grad_v = grad_v.view(n, heads, u, value_size).permute(2, 0, 1, 3).reshape(u, n, heads * value_size)
        return torch.cat([grad_qk, grad_v], dim=-1), None, None, None, None, None
