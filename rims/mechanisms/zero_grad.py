"""Give parameters that cannot change a result an exact zero gradient.

``nn.LSTM`` gives every parameter a gradient after ``backward()``; client code relies on it
(hand-written SGD loops read ``p.grad`` of every parameter, ``DistributedDataParallel``
without ``find_unused_parameters`` waits for every gradient). A RIM layer's key bias is the
null input's key and cancels in the two-way softmax, so it gets zeros instead of ``None``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class _AttachZeroGrad(torch.autograd.Function):
    """Identity on ``x``; the gradient on each of ``params`` is zeros of its shape."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, *params: Tensor) -> Tensor:
        ctx.shapes = [(p.shape, p.dtype, p.device) for p in params]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        zeros = tuple(torch.zeros(shape, dtype=dtype, device=device) for shape, dtype, device in ctx.shapes)
        return (grad, *zeros)


def attach_zero_grad(x: Tensor, *params: Tensor | None) -> Tensor:
    """``x`` unchanged, such that a backward through it gives each parameter a zero gradient.

    :param x: any tensor on the autograd path to the loss (returned as a view of itself).
    :param params: parameters (``None`` is skipped); only those that require grad are attached.
    """
    attached = [p for p in params if p is not None and p.requires_grad]
    if not attached or not torch.is_grad_enabled():
        return x
    return _AttachZeroGrad.apply(x, *attached)
