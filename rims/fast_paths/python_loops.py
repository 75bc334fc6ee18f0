"""The fused RIM training path's time loops in Python (:mod:`rims.fast_paths.fused`).

Used when the C++ loops (:mod:`rims.fast_paths.native`) cannot be built or ``RIMS_NATIVE=0``; both compute
the same steps in the same order and fill the same :class:`rims.fast_paths.buffers.Buffers`. The
forward runs the equations of :meth:`rims.RIMCell.sequence` without recording a graph; the
backward walks the steps in reverse carrying only the state gradients.

Shapes as in :mod:`rims.fast_paths.fused`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rims.fast_paths.buffers import Buffers, SequenceSpec
from rims.mechanisms.dynamics import gru_gates_backward, lstm_gates_backward


def forward_python(
    spec: SequenceSpec,
    buf: Buffers,
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
            rank = rank if spec.score_offset is None else rank + spec.score_offset[t]
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


def backward_python(
    spec: SequenceSpec,
    buf: Buffers,
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
    buf: Buffers,
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
    buf: Buffers,
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
    pre: Tensor, h: Tensor, c: Tensor, mask: Tensor | None, buf: Buffers, t: int
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
    g_tilde: Tensor, g_c: Tensor, mask: Tensor | None, buf: Buffers, t: int, g_hq: Tensor
) -> tuple[Tensor | None, Tensor]:
    """Backward of :func:`_lstm_forward` (:func:`rims.mechanisms.dynamics.lstm_gates_backward`); writes the
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


def _gru_forward(gx: Tensor, gh: Tensor, h: Tensor, mask: Tensor | None, buf: Buffers, t: int) -> Tensor:
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
    g_tilde: Tensor, mask: Tensor | None, buf: Buffers, t: int, h: Tensor, g_x: Tensor, g_hq: Tensor
) -> Tensor:
    """Backward of :func:`_gru_forward` (:func:`rims.mechanisms.dynamics.gru_gates_backward`); writes the
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


def _comm_forward(spec: SequenceSpec, tilde: Tensor, w_qkv: Tensor, w_out: Tensor, buf: Buffers, t: int) -> Tensor:
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


def _attention_backward(spec: SequenceSpec, g_read: Tensor, buf: Buffers, t: int, g_qkv: Tensor) -> None:
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
