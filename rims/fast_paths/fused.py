"""Training path of one RIM layer over a whole sequence: one autograd node, hand-written BPTT.

With autograd, every RIM step is some forty small graph nodes, and every step's backward
computes its own small weight gradients and adds them up. Here the forward runs the same
equations as :meth:`rims.RIMCell.sequence` without recording a graph, keeps what the backward
needs in buffers laid out ``(U, L, N, ...)``, and the backward walks the steps in reverse
carrying only the state gradients. The weight gradients come at the end from one batched
matmul per weight over all ``L * N`` rows.

Used for one input head and without recording attention; everything else (LSTM and GRU
dynamics, both selection rules, bias or not, attention dropout, ``k == num_units``) takes this
path when gradients are recorded. The two time loops run in C++ (:mod:`rims.fast_paths.native`) when
that can be built, else the Python loops of :mod:`rims.fast_paths.python_loops` run; both compute the
same steps in the same order (the C++ loops do some runs of element-wise operations in one
pass, sum in another order and, in float32, take the LSTM and GRU gates' exponentials from
their own vectorised ``exp``, so results agree up to rounding). Random numbers for attention
dropout are drawn in the same order and shapes as the step-by-step path, so every path gives
the same result for a seed, up to rounding. The settings and buffers are in
:mod:`rims.fast_paths.buffers`.

Shapes: ``L`` steps, ``N`` batch, ``U`` units of width ``d``, ``G`` gate width (``4d`` LSTM,
``3d`` GRU), ``K`` input key size, ``Hc`` communication heads with key ``Kc`` and value ``Vc``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rims.fast_paths import native, scratch
from rims.fast_paths.buffers import Buffers, SequenceSpec
from rims.fast_paths.python_loops import backward_python, forward_python


def fused_sequence(
    spec: SequenceSpec,
    proj: Tensor,
    keys: Tensor,
    h0: Tensor,
    c0: Tensor | None,
    w_h: Tensor,
    h_bias: Tensor | None,
    x_bias: Tensor | None,
    null_proj: Tensor | None,
    w_qkv: Tensor,
    w_out: Tensor,
) -> tuple[Tensor | None, ...]:
    """Run one RIM layer over a sequence as a single autograd node.

    :param spec: static settings.
    :param proj: ``(L, N, U, G)`` input projection ``W_ih,i (x W_v)`` per step and unit.
    :param keys: ``(L, N, K)`` input keys, already divided by ``sqrt(K)``.
    :param h0: ``(U, N, d)`` initial hidden state.
    :param c0: ``(U, N, d)`` initial cell state (LSTM) or ``None`` (GRU).
    :param w_h: ``(U, d, G + K)`` recurrent and query weights side by side.
    :param h_bias: ``(U, 1, G + K)`` their bias (LSTM: includes the input-side bias) or ``None``.
    :param x_bias: ``(U, 1, G)`` input-side bias for GRU dynamics, else ``None``.
    :param null_proj: ``(U, 1, G)`` null value's projection ``W_ih,i b_v`` when attention dropout
        weighs it separately, else ``None`` (then it is part of the bias).
    :param w_qkv: ``(U, d, Hc * (2 Kc + Vc))`` communication query/key/value weights.
    :param w_out: ``(U, Hc * Vc, d)`` communication output weights.
    :returns: ``(hidden, c_n)``: ``hidden (U, L + 1, N, d)`` holds ``h0`` then the state after
        every step; ``c_n (U, N, d)`` is the final cell state (``None`` for GRU). With
        ``spec.keep_mask`` a third element, the active mask ``(U, L, N, 1)`` (1.0 = active; no gradient).
    """
    outputs = _FusedSequence.apply(spec, proj, keys, h0, c0, w_h, h_bias, x_bias, null_proj, w_qkv, w_out)
    if spec.keep_mask:  # (hidden, c_n, mask)
        return outputs if spec.lstm else (outputs[0], None, outputs[1])  # type: ignore[return-value]
    if spec.lstm:
        return outputs
    return outputs, None


class _FusedSequence(torch.autograd.Function):
    """The autograd node behind :func:`fused_sequence` (C++ or Python time loops inside)."""

    @staticmethod
    def forward(
        ctx: Any,
        spec: SequenceSpec,
        proj: Tensor,
        keys: Tensor,
        h0: Tensor,
        c0: Tensor | None,
        w_h: Tensor,
        h_bias: Tensor | None,
        x_bias: Tensor | None,
        null_proj: Tensor | None,
        w_qkv: Tensor,
        w_out: Tensor,
    ) -> Tensor | tuple[Tensor, Tensor]:
        buf = Buffers(spec, proj, h0, c0)
        loops = native.loops_for(proj)
        if loops is None:
            forward_python(spec, buf, proj, keys, w_h, h_bias, x_bias, null_proj, w_qkv, w_out)
        else:
            comm = (spec.comm_heads, spec.comm_key, spec.comm_value, spec.comm_scale)
            loops.forward_loop(
                spec.lstm, spec.bounded, spec.k, spec.dropout, *comm,
                proj, keys, w_h, h_bias, x_bias, null_proj, spec.null_key, spec.score_offset,
                w_qkv, w_out, buf.hidden, buf.tilde, *buf.native_args(backward=False),
            )  # fmt: skip
        c = buf.cell[:, -1] if spec.lstm else None
        hidden = buf.hidden
        del buf.hidden  # an output: saved below, not on ctx (no reference cycle)
        ctx.spec, ctx.buf, ctx.native = spec, buf, loops is not None
        ctx.has_bias = (h_bias is not None, x_bias is not None)
        ctx.save_for_backward(proj, keys, w_h, null_proj, w_qkv, w_out, hidden)
        outputs = (hidden, c.clone()) if spec.lstm else (hidden,)
        if spec.keep_mask:
            assert buf.mask is not None  # kept only with k < U
            mask = buf.mask.clone()  # (U, L, N, 1)
            ctx.mark_non_differentiable(mask)
            outputs = (*outputs, mask)
        return outputs if len(outputs) > 1 else hidden

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_hidden: Tensor, *grad_rest: Tensor | None) -> tuple[Tensor | None, ...]:
        spec: SequenceSpec = ctx.spec
        grad_c = grad_rest[0] if spec.lstm else None
        buf: Buffers = ctx.buf
        proj, keys, w_h, null_proj, w_qkv, w_out, hidden = ctx.saved_tensors
        u, d = spec.num_units, spec.unit_size
        seq_len, batch = proj.shape[0], proj.shape[1]
        gate_width = w_h.shape[2] - spec.key_size
        grad_hq = scratch.take((u, seq_len, batch, w_h.shape[2]), proj)  # gradient on h W_h + b per step
        grad_qkv = scratch.take((u, seq_len, batch, w_qkv.shape[2]), proj)
        grad_msg = scratch.take((u, seq_len, batch, d), proj)
        borrowed = [grad_hq, grad_qkv, grad_msg]
        if spec.lstm:
            grad_x = grad_hq[..., :gate_width]
        else:
            grad_x = scratch.take((u, seq_len, batch, gate_width), proj)
            borrowed.append(grad_x)
        grad_proj = torch.empty_like(proj)
        grad_keys = torch.empty_like(keys)

        loops = native.loops_for(proj) if ctx.native else None
        grads = (grad_hidden, grad_c, grad_hq, grad_x, grad_qkv, grad_msg, grad_proj, grad_keys)
        if loops is None:
            carry_h, carry_c = backward_python(spec, buf, grads, proj, keys, w_h, null_proj, w_qkv, w_out, hidden)
        else:
            comm = (spec.comm_heads, spec.comm_key, spec.comm_value, spec.comm_scale)
            carry_h, carry_c = loops.backward_loop(
                spec.lstm, spec.bounded, *comm, *grads,
                proj, keys, w_h, null_proj, w_qkv, w_out, hidden, *buf.native_args(True),
            )  # fmt: skip
        rows = seq_len * batch
        hq_rows = grad_hq.view(u, rows, -1)
        grad_w_h = torch.bmm(hidden[:, :seq_len].reshape(u, rows, d).transpose(1, 2), hq_rows)
        has_h_bias, has_x_bias = ctx.has_bias
        grad_h_bias = hq_rows.sum(1, keepdim=True) if has_h_bias else None
        x_rows = hq_rows[..., :gate_width] if spec.lstm else grad_x.view(u, rows, gate_width)  # no copy
        grad_x_bias = x_rows.sum(1, keepdim=True) if has_x_bias else None
        grad_null = None
        if null_proj is not None:
            assert buf.noise is not None
            weight = buf.attn * (buf.noise[..., :1] - buf.noise[..., 1:]) + buf.noise[..., 1:]  # (U, L, N, 1)
            grad_null = torch.bmm(weight.view(u, 1, rows), x_rows)
        tilde = buf.tilde if buf.mask is None else buf.tilde * buf.mask
        grad_w_qkv = torch.bmm(tilde.view(u, rows, d).transpose(1, 2), grad_qkv.view(u, rows, -1))
        grad_w_out = torch.bmm(buf.read.view(u, rows, -1).transpose(1, 2), grad_msg.view(u, rows, d))
        grad_h0 = carry_h + grad_hidden[:, 0]
        scratch.give(borrowed)
        return (
            None,
            grad_proj,
            grad_keys,
            grad_h0,
            carry_c,
            grad_w_h,
            grad_h_bias,
            grad_x_bias,
            grad_null,
            grad_w_qkv,
            grad_w_out,
        )
