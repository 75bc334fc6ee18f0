"""Training path of one RIM layer over a whole sequence: one autograd node, hand-written BPTT.

With autograd, every RIM step is some forty small graph nodes, and every step's backward
computes its own small weight gradients and adds them up. Here the forward runs the same
equations as :meth:`rims.RIMCell.sequence` without recording a graph, keeps what the backward
needs in buffers laid out ``(U, L, N, ...)``, and the backward walks the steps in reverse
carrying only the state gradients. The weight gradients come at the end from one batched
matmul per weight over all ``L * N`` rows.

Used for one input head and without recording attention; everything else (LSTM and GRU
dynamics, both selection rules, bias or not, attention dropout, ``k == num_units``) takes this
path when gradients are recorded. The two time loops run in C++ (:mod:`rims._native`) when
that can be built, else the Python loops below run; both compute the same steps in the same
order (the C++ loops do some runs of element-wise operations in one pass, sum in another order
and, in float32, take the LSTM and GRU gates' exponentials from their own vectorised ``exp``,
so results agree up to rounding). Random numbers for attention dropout are drawn in the same
order and shapes as the step-by-step path, so every path gives the same result for a seed, up
to rounding.

Shapes: ``L`` steps, ``N`` batch, ``U`` units of width ``d``, ``G`` gate width (``4d`` LSTM,
``3d`` GRU), ``K`` input key size, ``Hc`` communication heads with key ``Kc`` and value ``Vc``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rims import _native, _workspace
from rims.gates import gru_gates_backward, lstm_gates_backward


class SequenceSpec(NamedTuple):
    """Static settings of one fused call."""

    lstm: bool
    k: int
    num_units: int
    unit_size: int
    key_size: int  # K, input attention key size (one head)
    comm_heads: int
    comm_key: int
    comm_value: int
    comm_scale: float
    dropout: float  # attention dropout probability, 0 outside training
    bounded: bool  # communication update h = tanh(h_tilde + m) (else the paper's h_tilde + m)
    null_key: Tensor | None  # (K,) scaled key bias for the ``input_score`` rule, else None


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
) -> tuple[Tensor, Tensor | None]:
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
        every step; ``c_n (U, N, d)`` is the final cell state (``None`` for GRU).
    """
    if spec.lstm:
        return _FusedSequence.apply(spec, proj, keys, h0, c0, w_h, h_bias, x_bias, null_proj, w_qkv, w_out)
    return _FusedSequence.apply(spec, proj, keys, h0, c0, w_h, h_bias, x_bias, null_proj, w_qkv, w_out), None


class _Buffers:
    """Per-step values the backward needs, each ``(U, L, ...)`` unless noted.

    All but ``hidden`` (an output of the autograd node) come from :mod:`rims._workspace` and go
    back to it when the autograd graph that holds them is freed.
    """

    def __init__(self, spec: SequenceSpec, proj: Tensor, h0: Tensor, c0: Tensor | None) -> None:
        seq_len, batch = proj.shape[0], proj.shape[1]
        u, d = spec.num_units, spec.unit_size
        rows = batch * spec.comm_heads
        self._owned: list[Tensor] = []
        new = self._new
        self.hidden: Tensor = h0.new_empty(u, seq_len + 1, batch, d)  # h0, then h after each step
        self.hidden[:, 0] = h0
        self.tilde = new(h0, u, seq_len, batch, d)  # state after the dynamics, before communication
        self.query = new(h0, u, seq_len, batch, spec.key_size)
        self.attn = new(h0, u, seq_len, batch, 1)  # attention on the real input
        self.mask = None if spec.k == u else new(h0, u, seq_len, batch, 1)  # 1.0 = active
        self.noise = new(h0, u, seq_len, batch, 2) if spec.dropout > 0 else None  # input dropout scale
        self.read = new(h0, u, seq_len, batch, spec.comm_heads * spec.comm_value)
        qkv_width = spec.comm_heads * (2 * spec.comm_key + spec.comm_value)
        self.qkv = new(h0, seq_len, u, batch, qkv_width)  # (L, U, N, Hc*(2Kc+Vc)): q, k, v per row
        self.weights = new(h0, seq_len, rows, u, u)  # (L, N*Hc, U, U) attention weights
        self.keep = new(h0, seq_len, rows, u, u) if spec.dropout > 0 else None
        if spec.lstm:
            assert c0 is not None
            self.cell = new(h0, u, seq_len + 1, batch, d)  # c0, then c after each step
            self.cell[:, 0] = c0
            self.gates = new(h0, u, seq_len, batch, 4 * d)  # sigmoid(i, f, o), tanh(g)
            self.tanh_c = new(h0, u, seq_len, batch, d)
        else:
            self.gates = new(h0, u, seq_len, batch, 2 * d)  # sigmoid(r, z)
            self.cand = new(h0, u, seq_len, batch, d)  # candidate n
            self.hidden_n = new(h0, u, seq_len, batch, d)  # hidden-side n pre-activation (with bias)
        self.split = False

    def split_steps(self, spec: SequenceSpec) -> None:
        """Per-step views for the Python loops (``unbind`` once instead of indexing every step)."""
        if self.split:
            return
        self.split = True
        d = spec.unit_size
        self.tilde_t = self.tilde.unbind(1)
        self.query_t = self.query.unbind(1)
        self.attn_t = self.attn.unbind(1)
        self.mask_t = None if self.mask is None else self.mask.unbind(1)
        self.noise_t = None if self.noise is None else self.noise.unbind(1)
        self.read_t = self.read.unbind(1)
        self.qkv_t, self.weights_t = self.qkv.unbind(0), self.weights.unbind(0)
        self.keep_t = None if self.keep is None else self.keep.unbind(0)
        self.gates_t = self.gates.unbind(1)
        if spec.lstm:
            self.cell_t = self.cell.unbind(1)
            self.tanh_c_t = self.tanh_c.unbind(1)
            self.sig_t = self.gates[..., : 3 * d].unbind(1)
            self.i_t, self.f_t = self.gates[..., :d].unbind(1), self.gates[..., d : 2 * d].unbind(1)
            self.o_t, self.g_t = self.gates[..., 2 * d : 3 * d].unbind(1), self.gates[..., 3 * d :].unbind(1)
        else:
            self.cand_t = self.cand.unbind(1)
            self.hidden_n_t = self.hidden_n.unbind(1)
            self.r_t, self.z_t = self.gates[..., :d].unbind(1), self.gates[..., d:].unbind(1)

    def native_args(self, backward: bool) -> list[Tensor | None]:
        """The buffers in the order of ``forward_loop`` or ``backward_loop`` in ``fused_loop.cpp``.

        The backward does not read ``read``.
        """
        get = self.__dict__.get
        middle = [self.qkv] if backward else [self.read, self.qkv]
        return [
            self.query, self.attn, self.mask, self.noise, *middle, self.weights, self.keep,
            get("cell"), self.gates, get("tanh_c"), get("cand"), get("hidden_n"),
        ]  # fmt: skip

    def _new(self, like: Tensor, *shape: int) -> Tensor:
        tensor = _workspace.take(shape, like)
        self._owned.append(tensor)
        return tensor

    def __del__(self) -> None:
        if _workspace is not None:  # None only at interpreter shutdown
            _workspace.give(self._owned)


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
        buf = _Buffers(spec, proj, h0, c0)
        loops = _native.loops_for(proj)
        if loops is None:
            _forward_python(spec, buf, proj, keys, w_h, h_bias, x_bias, null_proj, w_qkv, w_out)
        else:
            comm = (spec.comm_heads, spec.comm_key, spec.comm_value, spec.comm_scale)
            loops.forward_loop(
                spec.lstm, spec.bounded, spec.k, spec.dropout, *comm,
                proj, keys, w_h, h_bias, x_bias, null_proj, spec.null_key,
                w_qkv, w_out, buf.hidden, buf.tilde, *buf.native_args(backward=False),
            )  # fmt: skip
        c = buf.cell[:, -1] if spec.lstm else None
        hidden = buf.hidden
        del buf.hidden  # an output: saved below, not on ctx (no reference cycle)
        ctx.spec, ctx.buf, ctx.native = spec, buf, loops is not None
        ctx.has_bias = (h_bias is not None, x_bias is not None)
        ctx.save_for_backward(proj, keys, w_h, null_proj, w_qkv, w_out, hidden)
        if spec.lstm:
            return hidden, c.clone()
        return hidden

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_hidden: Tensor, grad_c: Tensor | None = None) -> tuple[Tensor | None, ...]:
        spec: SequenceSpec = ctx.spec
        buf: _Buffers = ctx.buf
        proj, keys, w_h, null_proj, w_qkv, w_out, hidden = ctx.saved_tensors
        u, d = spec.num_units, spec.unit_size
        seq_len, batch = proj.shape[0], proj.shape[1]
        gate_width = w_h.shape[2] - spec.key_size
        grad_hq = _workspace.take((u, seq_len, batch, w_h.shape[2]), proj)  # gradient on h W_h + b per step
        grad_qkv = _workspace.take((u, seq_len, batch, w_qkv.shape[2]), proj)
        grad_msg = _workspace.take((u, seq_len, batch, d), proj)
        scratch = [grad_hq, grad_qkv, grad_msg]
        if spec.lstm:
            grad_x = grad_hq[..., :gate_width]
        else:
            grad_x = _workspace.take((u, seq_len, batch, gate_width), proj)
            scratch.append(grad_x)
        grad_proj = torch.empty_like(proj)
        grad_keys = torch.empty_like(keys)

        loops = _native.loops_for(proj) if ctx.native else None
        grads = (grad_hidden, grad_c, grad_hq, grad_x, grad_qkv, grad_msg, grad_proj, grad_keys)
        if loops is None:
            carry_h, carry_c = _backward_python(spec, buf, grads, proj, keys, w_h, null_proj, w_qkv, w_out, hidden)
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
        _workspace.give(scratch)
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


def _forward_python(
    spec: SequenceSpec,
    buf: _Buffers,
    proj: Tensor,
    keys: Tensor,
    w_h: Tensor,
    h_bias: Tensor | None,
    x_bias: Tensor | None,
    null_proj: Tensor | None,
    w_qkv: Tensor,
    w_out: Tensor,
) -> None:
    """The forward time loop in Python (see :func:`fused_sequence` for the arguments); fills ``buf``."""
    buf.split_steps(spec)
    u, batch = spec.num_units, proj.shape[1]
    gate_width = w_h.shape[2] - spec.key_size
    inactive = torch.zeros(u, batch, 1, dtype=torch.bool, device=proj.device)
    h, c = buf.hidden[:, 0], (buf.cell[:, 0] if spec.lstm else None)
    hidden_t = buf.hidden.unbind(1)
    proj_steps, key_steps = proj.transpose(1, 2).unbind(0), keys.unbind(0)  # (U, N, G) and (N, K) each
    for t in range(proj.shape[0]):
        hq = torch.bmm(h, w_h) if h_bias is None else torch.baddbmm(h_bias, h, w_h)  # (U, N, G + K)
        gh, query = hq[..., :gate_width], hq[..., gate_width:]
        buf.query_t[t].copy_(query)
        score = torch.linalg.vecdot(query, key_steps[t]).unsqueeze(-1)  # (U, N, 1)
        attn = torch.sigmoid(score, out=buf.attn_t[t])
        mask = None
        if buf.mask is not None:
            rank = score if spec.null_key is None else score + torch.linalg.vecdot(query, spec.null_key)[..., None]
            top = rank.sort(dim=0, descending=True, stable=True).indices[: spec.k]
            mask = inactive.scatter(0, top, True)  # (U, N, 1)
            buf.mask_t[t].copy_(mask)
        proj_t = proj_steps[t]
        if spec.lstm:
            pre = _input_forward(spec, attn, proj_t, null_proj, buf, t, gh)
            h_tilde, c = _lstm_forward(pre, h, c, mask, buf, t)
        else:
            gx = _input_forward(spec, attn, proj_t, null_proj, buf, t, x_bias)
            h_tilde = _gru_forward(gx, gh, h, mask, buf, t)
        message = _comm_forward(spec, h_tilde, w_qkv, w_out, buf, t)
        h = hidden_t[t + 1]
        updated = torch.tanh(h_tilde + message) if spec.bounded else h_tilde + message
        if mask is None:
            h.copy_(updated)
        else:
            torch.where(mask, updated, h_tilde, out=h)


def _backward_python(
    spec: SequenceSpec,
    buf: _Buffers,
    grads: tuple[Tensor | None, ...],
    proj: Tensor,
    keys: Tensor,
    w_h: Tensor,
    null_proj: Tensor | None,
    w_qkv: Tensor,
    w_out: Tensor,
    hidden: Tensor,
) -> tuple[Tensor, Tensor | None]:
    """The backward time loop in Python; fills the gradient buffers in ``grads`` and returns
    the gradients on ``(h0, c0)``."""
    buf.split_steps(spec)
    grad_hidden, grad_c, grad_hq, grad_x, grad_qkv, grad_msg, grad_proj, grad_keys = grads
    assert grad_hidden is not None
    seq_len = proj.shape[0]
    gate_width = w_h.shape[2] - spec.key_size
    w_h_t, w_qkv_t, w_out_t = w_h.transpose(1, 2), w_qkv.transpose(1, 2), w_out.transpose(1, 2)
    hidden_t, grad_hidden_t = hidden.unbind(1), grad_hidden.unbind(1)
    grad_hq_t, grad_qkv_t, grad_msg_t, grad_x_t = (g.unbind(1) for g in (grad_hq, grad_qkv, grad_msg, grad_x))
    grad_query_t = grad_hq[..., gate_width:].unbind(1)
    grad_proj_t, grad_keys_t = grad_proj.transpose(1, 2).unbind(0), grad_keys.unbind(0)
    proj_steps, key_steps = proj.transpose(1, 2).unbind(0), keys.unbind(0)
    carry_h = grad_hidden_t[seq_len].clone()
    carry_c = grad_c.clone() if spec.lstm else None
    for t in range(seq_len - 1, -1, -1):
        g_h = carry_h if t == seq_len - 1 else carry_h + grad_hidden_t[t + 1]
        mask = None if buf.mask_t is None else buf.mask_t[t]
        # h = h_tilde + message (bounded: tanh of it) for active units, h_tilde for the others
        g_msg = grad_msg_t[t]
        g_pre = _bounded_backward(g_h, hidden_t[t + 1]) if spec.bounded else g_h
        if mask is None:
            g_msg.copy_(g_pre)
        else:
            torch.mul(g_pre, mask, out=g_msg)
        g_direct = g_h if g_pre is g_h else (g_pre if mask is None else torch.addcmul(g_h, mask, g_pre - g_h))
        g_read = torch.bmm(g_msg, w_out_t)  # (U, N, Hc*Vc)
        _attention_backward(spec, g_read, buf, t, grad_qkv_t[t])
        g_tilde = torch.baddbmm(g_direct, grad_qkv_t[t], w_qkv_t)  # (U, N, d)
        if spec.lstm:
            kept_h, carry_c = _lstm_backward(g_tilde, carry_c, mask, buf, t, grad_hq_t[t])
        else:
            kept_h = _gru_backward(g_tilde, mask, buf, t, hidden_t[t], grad_x_t[t], grad_hq_t[t])
        g_query = grad_query_t[t]
        _input_backward(
            grad_x_t[t], proj_steps[t], key_steps[t], null_proj, buf, t, grad_proj_t[t], g_query, grad_keys_t[t]
        )
        g_hq = grad_hq_t[t]
        carry_h = torch.bmm(g_hq, w_h_t) if kept_h is None else torch.baddbmm(kept_h, g_hq, w_h_t)
    return carry_h, carry_c


def _bounded_backward(g_h: Tensor, h_next: Tensor) -> Tensor:
    """Gradient on ``h_tilde + m`` from the gradient ``g_h`` on ``h_next = tanh(h_tilde + m)``,
    ``g_h * (1 - h_next^2)``, all ``(U, N, d)`` (meaningful for active units only)."""
    return torch.addcmul(g_h, g_h * h_next, h_next, value=-1.0)


def _input_forward(
    spec: SequenceSpec,
    attn: Tensor,
    proj_t: Tensor,
    null_proj: Tensor | None,
    buf: _Buffers,
    t: int,
    base: Tensor | None,
) -> Tensor:
    """Input-side pre-activations of one step, ``(U, N, G)``: ``base + a * proj_t`` with ``a``
    the attention on the input, plus the null value's part under attention dropout.

    :param base: added to the result (LSTM: the hidden side ``gh``; GRU: the input bias or ``None``).
    """
    weight, total = attn, None
    if buf.noise_t is not None:
        # the step-by-step path drops out stack([attn, 1 - attn]) with F.dropout: same draws
        noise = torch.empty(*attn.shape, 2, dtype=attn.dtype, device=attn.device)
        noise.bernoulli_(1.0 - spec.dropout).div_(1.0 - spec.dropout)  # (U, N, 1, 2)
        noise = noise.view(*attn.shape[:-1], 2)
        buf.noise_t[t].copy_(noise)
        weight = attn * noise[..., :1]
        if null_proj is not None:
            total = torch.addcmul(weight, 1.0 - attn, noise[..., 1:])  # weight of the null value's projection
    part = weight * proj_t if base is None else torch.addcmul(base, weight, proj_t)
    return part if total is None else torch.addcmul(part, total, null_proj)


def _input_backward(
    g_x: Tensor,
    proj_t: Tensor,
    key_t: Tensor,
    null_proj: Tensor | None,
    buf: _Buffers,
    t: int,
    g_proj_t: Tensor,
    g_query: Tensor,
    g_key_t: Tensor,
) -> None:
    """Gradients of one step's input side.

    :param g_x: ``(U, N, G)`` gradient on the input-side pre-activations.
    :param proj_t: ``(U, N, G)``; ``key_t`` ``(N, K)``.
    :param g_proj_t: ``(U, N, G)`` written: gradient on ``proj_t``.
    :param g_query: ``(U, N, K)`` written: gradient on the query.
    :param g_key_t: ``(N, K)`` written: gradient on ``key_t``.
    """
    attn = buf.attn_t[t]
    g_attn = torch.linalg.vecdot(g_x, proj_t).unsqueeze(-1)  # (U, N, 1)
    if buf.noise_t is None:
        torch.mul(g_x, attn, out=g_proj_t)
    else:
        keep_in, keep_null = buf.noise_t[t][..., :1], buf.noise_t[t][..., 1:]
        torch.mul(g_x, attn * keep_in, out=g_proj_t)
        g_attn = g_attn * keep_in
        if null_proj is not None:
            g_total = torch.linalg.vecdot(g_x, null_proj).unsqueeze(-1)
            g_attn = torch.addcmul(g_attn, g_total, keep_in - keep_null)
    g_score = g_attn * torch.addcmul(attn, attn, attn, value=-1.0)  # (U, N, 1), sigmoid'
    torch.mul(g_score, key_t, out=g_query)
    torch.sum(g_score * buf.query_t[t], dim=0, out=g_key_t)


def _lstm_forward(
    pre: Tensor, h: Tensor, c: Tensor, mask: Tensor | None, buf: _Buffers, t: int
) -> tuple[Tensor, Tensor]:
    """LSTM gates of one step; records the gates. Returns ``(h_tilde, c)`` each ``(U, N, d)``."""
    d = h.shape[-1]
    torch.sigmoid(pre[..., : 3 * d], out=buf.sig_t[t])
    torch.tanh(pre[..., 3 * d :], out=buf.g_t[t])
    i, f, o, g = buf.i_t[t], buf.f_t[t], buf.o_t[t], buf.g_t[t]
    c_new = torch.addcmul(f * c, i, g)
    tanh_c = torch.tanh(c_new, out=buf.tanh_c_t[t])
    h_new = o * tanh_c
    c_next, tilde = buf.cell_t[t + 1], buf.tilde_t[t]
    if mask is None:
        c_next.copy_(c_new)
        tilde.copy_(h_new)
    else:
        torch.where(mask, c_new, c, out=c_next)
        torch.where(mask, h_new, h, out=tilde)
    return tilde, c_next


def _lstm_backward(
    g_tilde: Tensor, g_c: Tensor, mask: Tensor | None, buf: _Buffers, t: int, g_hq: Tensor
) -> tuple[Tensor | None, Tensor]:
    """Backward of :func:`_lstm_forward` (:func:`rims.gates.lstm_gates_backward`); writes the
    gate gradient into ``g_hq[..., :4d]``.

    :param mask: ``(U, N, 1)`` float active mask (1.0 = active) or ``None``.
    :returns: ``(kept_h, g_c_prev)``: the gradient on the previous ``h`` through the kept state
        of inactive units (``None`` when all are active) and the gradient on the previous ``c``.
    """
    active = None if mask is None else mask.bool()
    width = 4 * g_tilde.shape[-1]
    _, kept_h, g_c_prev = lstm_gates_backward(
        g_tilde, g_c, buf.sig_t[t], buf.g_t[t], buf.cell_t[t], buf.tanh_c_t[t], active, out=g_hq[..., :width]
    )
    return kept_h, g_c_prev


def _gru_forward(gx: Tensor, gh: Tensor, h: Tensor, mask: Tensor | None, buf: _Buffers, t: int) -> Tensor:
    """GRU gates of one step; records the gates. Returns ``h_tilde`` ``(U, N, d)``."""
    d = h.shape[-1]
    torch.sigmoid(gx[..., : 2 * d] + gh[..., : 2 * d], out=buf.gates_t[t])
    r, z = buf.r_t[t], buf.z_t[t]
    buf.hidden_n_t[t].copy_(gh[..., 2 * d :])
    n = torch.tanh(torch.addcmul(gx[..., 2 * d :], r, gh[..., 2 * d :]), out=buf.cand_t[t])
    h_new = torch.addcmul(n, z, h - n)
    tilde = buf.tilde_t[t]
    if mask is None:
        tilde.copy_(h_new)
    else:
        torch.where(mask, h_new, h, out=tilde)
    return tilde


def _gru_backward(
    g_tilde: Tensor, mask: Tensor | None, buf: _Buffers, t: int, h: Tensor, g_x: Tensor, g_hq: Tensor
) -> Tensor:
    """Backward of :func:`_gru_forward` (:func:`rims.gates.gru_gates_backward`); writes the
    input-side gradient into ``g_x`` and the hidden-side one into ``g_hq[..., :3d]``. Returns the
    gradient on the previous state ``h`` that does not pass through ``W_hh``.

    :param mask: ``(U, N, 1)`` float active mask (1.0 = active) or ``None``.
    """
    active = None if mask is None else mask.bool()
    grad_gx, grad_gh, grad_h = gru_gates_backward(g_tilde, buf.gates_t[t], buf.cand_t[t], buf.hidden_n_t[t], h, active)
    g_x.copy_(grad_gx)
    g_hq[..., : grad_gh.shape[-1]].copy_(grad_gh)
    return grad_h


def _heads(spec: SequenceSpec, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values of one step in the attention layout, ``(N*Hc, U, Kc)`` (values
    ``(N*Hc, U, Vc)``), copied out of ``qkv`` ``(U, N, Hc*(2Kc+Vc))``."""
    u, n = qkv.shape[0], qkv.shape[1]
    heads, key, value = spec.comm_heads, spec.comm_key, spec.comm_value
    qk = qkv[..., : 2 * heads * key].view(u, n, 2, heads, key).permute(2, 1, 3, 0, 4).reshape(2, n * heads, u, key)
    v = qkv[..., 2 * heads * key :].view(u, n, heads, value).permute(1, 2, 0, 3).reshape(n * heads, u, value)
    return qk[0], qk[1], v


def _comm_forward(spec: SequenceSpec, tilde: Tensor, w_qkv: Tensor, w_out: Tensor, buf: _Buffers, t: int) -> Tensor:
    """Messages of one step, ``(U, N, d)``; records ``qkv`` and the attention for the backward."""
    u, n = tilde.shape[0], tilde.shape[1]
    heads, value = spec.comm_heads, spec.comm_value
    q, k, v = _heads(spec, torch.bmm(tilde, w_qkv, out=buf.qkv_t[t]))
    scores = torch.bmm(q, k.transpose(1, 2)).mul_(spec.comm_scale)  # (N*Hc, U, U)
    weights = torch.exp(scores.sub_(scores.amax(-1, keepdim=True)))
    weights = torch.div(weights, weights.sum(-1, keepdim=True), out=buf.weights_t[t])
    used = weights
    if buf.keep_t is not None:
        keep = buf.keep_t[t]
        keep.bernoulli_(1.0 - spec.dropout).div_(1.0 - spec.dropout)
        used = weights * keep
    read = torch.bmm(used, v)  # (N*Hc, U, Vc)
    buf.read_t[t].view(u, n, heads, value).copy_(read.view(n, heads, u, value).permute(2, 0, 1, 3))
    return torch.bmm(buf.read_t[t], w_out)


def _attention_backward(spec: SequenceSpec, g_read: Tensor, buf: _Buffers, t: int, g_qkv: Tensor) -> None:
    """Backward of the attention of :func:`_comm_forward` from ``g_read`` ``(U, N, Hc*Vc)``;
    writes the gradient on ``qkv`` into ``g_qkv`` ``(U, N, Hc*(2Kc+Vc))``."""
    u, n = g_read.shape[0], g_read.shape[1]
    heads, key, value = spec.comm_heads, spec.comm_key, spec.comm_value
    q, k, v = _heads(spec, buf.qkv_t[t])
    weights = buf.weights_t[t]
    g = g_read.view(u, n, heads, value).permute(1, 2, 0, 3).reshape(n * heads, u, value)
    keep = None if buf.keep_t is None else buf.keep_t[t]
    used = weights if keep is None else weights * keep
    grad_v = torch.bmm(used.transpose(1, 2), g)  # (N*Hc, U, Vc)
    grad_w = torch.bmm(g, v.transpose(1, 2))  # (N*Hc, U, U)
    if keep is not None:
        grad_w = grad_w * keep
    grad_s = weights * (grad_w - (grad_w * weights).sum(-1, keepdim=True))
    grad_s = grad_s.mul_(spec.comm_scale)
    qk_width = 2 * heads * key
    g_qk = g_qkv[..., :qk_width].view(u, n, 2, heads, key).permute(2, 1, 3, 0, 4)  # (2, N, Hc, U, Kc)
    g_qk[0].copy_(torch.bmm(grad_s, k).view(n, heads, u, key))
    g_qk[1].copy_(torch.bmm(grad_s.transpose(1, 2), q).view(n, heads, u, key))
    g_qkv[..., qk_width:].view(u, n, heads, value).copy_(grad_v.view(n, heads, u, value).permute(2, 0, 1, 3))
