"""Communication among the units of a RIM layer, step 4 of the RIM step (pairwise attention).

Active units read from all units by multi-head attention over their states (inactive units
show their kept state) and add the result to their own state; see :mod:`rims.mechanisms.workspace`
for the alternative that routes messages through a small shared workspace.

Shapes: ``U`` units, ``N`` batch, ``d`` unit size, ``Hc`` heads with key ``Kc`` and value ``Vc``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rims.mechanisms.layer import LayerParameters, LayerSpec
from rims.mechanisms.unit_attention import unit_attention


class PairwiseCommunication:
    """Multi-head attention among the units of one layer for one forward call (Goyal et al.
    2019, section 2.4).

    Built once per sequence so the per-step path does no attribute look-ups or reshapes of
    weights.
    """

    updates_inactive = False  # inactive units keep their state

    def __init__(self, spec: LayerSpec, p: LayerParameters, batch: int, dropout: float) -> None:
        """:param spec: the layer's sizes and options; ``p`` its parameters; ``batch``: ``N``;
        ``dropout``: the attention dropout in effect (``0.0`` when not training)."""
        self.u, self.batch = spec.num_units, batch
        options = spec.options
        self.heads, self.key, self.value = options.num_comm_heads, options.comm_key_size, options.comm_value_size
        self.weight_qkv = p.weight_comm_qkv
        self.weight_out = p.weight_comm_out
        self.dropout = dropout
        self.grad = torch.is_grad_enabled()
        self.block_grad = self.grad and p.weight_comm_qkv.requires_grad
        self.scale = 1.0 / math.sqrt(options.comm_key_size)
        self.split = [self.heads * self.key, self.heads * self.key, self.heads * self.value]

    def __call__(self, states: Tensor, mask: Tensor | None, record: bool) -> tuple[Tensor, dict[str, Tensor]]:
        """Messages to every unit.

        :param states: ``(U, N, d)`` states shown to the attention (inactive units: kept state).
        :param mask: ``(U, N, 1)`` bool active mask or ``None`` when all units are active.
        :param record: also return the attention weights.
        :returns: ``(messages (U, N, d), record)``; ``record`` holds ``comm_attention``
            ``(N, Hc, U, U)`` when recording, else it is empty.
        """
        u, n, heads = self.u, self.batch, self.heads
        if mask is not None and self.block_grad:
            # Inactive units' key/value must not train their own projection at this step.
            qkv = ActiveWeightGradBmm.apply(states, self.weight_qkv, mask)  # (U, N, Hc*(2K+V))
        else:
            qkv = torch.bmm(states, self.weight_qkv)
        if record or self.grad:
            read, weights = unit_attention(qkv, heads, self.key, self.value, self.scale, self.dropout)
            recorded = {"comm_attention": weights} if record else {}
        else:
            # Inference: one fused op is fastest; no attention weights are needed.
            q, k, v = qkv.split(self.split, dim=-1)
            q = q.view(u, n, heads, self.key).permute(1, 2, 0, 3)  # (N, Hc, U, K)
            k = k.view(u, n, heads, self.key).permute(1, 2, 0, 3)
            v = v.view(u, n, heads, self.value).permute(1, 2, 0, 3)  # (N, Hc, U, V)
            read = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout, scale=self.scale)
            read = read.permute(2, 0, 1, 3).reshape(u, n, heads * self.value)  # (U, N, Hc*V)
            recorded = {}
        return torch.bmm(read, self.weight_out), recorded


class ActiveWeightGradBmm(torch.autograd.Function):
    """``bmm(x, w)`` whose weight gradient only comes from rows of active units.

    Forward: ``x (U, N, d) @ w (U, d, F) -> (U, N, F)``. Backward: ``grad_x`` is the usual
    ``grad @ w^T`` (state gradients flow for every row), ``grad_w = (x * mask)^T @ grad``.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, mask: Tensor) -> Tensor:
        ctx.save_for_backward(x, w, mask)
        return torch.bmm(x, w)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, w, mask = ctx.saved_tensors
        grad_x = torch.bmm(grad, w.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm((x * mask).transpose(1, 2), grad) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None
