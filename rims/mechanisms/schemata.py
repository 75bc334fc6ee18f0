"""Schemata: a few shared sets of recurrent weights that each active unit picks per step (SCOFF).

Goyal et al., ICLR 2021 ("Factorizing Declarative and Procedural Knowledge in Structured,
Dynamical Environments", arXiv:2006.16225): ``U`` object files (the units) keep their own
state and share ``S`` schemata (LSTM/GRU weight sets). At a step, every active file computes
the update each schema would make; its previous state queries those candidates (query ``h W_q``,
keys ``h_s W_k``; both projections shared by all files, as the paper's Algorithm 1 writes them)
and the file takes the update of the best-matching schema: a hard choice in the forward pass,
with the softmax's gradient in the backward (straight-through; scores scaled by
``1/sqrt(Ks)``). The paper adds Gumbel noise to the choice while training (the authors' GRU
code at temperature 0.5; their LSTM code mixes softly). It is left out here: without noise the
choice made while acting and while training is the same, which PPO's probability ratio needs.

Shapes: ``S`` schemata, ``U`` units (object files), ``N`` batch, ``d`` unit size, ``Ks``
schema key size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rims.mechanisms.dynamics import gru_forward, gru_gates_backward, keep_inactive, lstm_forward, lstm_gates_backward


def schema_gates(gh: Tensor, part: Tensor, x_bias: Tensor | None, lstm: bool) -> tuple[Tensor, Tensor | None]:
    """The inputs of :func:`schema_dynamics`: LSTM ``(gh + part, None)``, GRU ``(part + x_bias, gh)``.

    :param gh: ``(S, U, N, G)`` hidden-side pre-activations under each schema (with bias).
    :param part: ``(S, U, N, G)`` input-side pre-activations under each schema's input weights.
    :param x_bias: ``(S, 1, G)`` input-side bias (GRU), else ``None``.
    """
    if lstm:
        return gh + part, None
    return (part if x_bias is None else part + x_bias.unsqueeze(1)), gh


def schema_dynamics(
    gates: Tensor,
    gh: Tensor | None,
    h: Tensor,
    c: Tensor | None,
    query: Tensor,
    weight_key: Tensor,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Every schema's update of every unit, each unit's choice, and the chosen update.

    One autograd node with a hand-written backward (the literal composition is some thirty small
    nodes per step). The forward is the literal computation: the candidates
    ``h_s, c_s = cell_s(x, h, c)``, keys ``k_s = h_s W_k``, scores ``<k_s, q> / sqrt(Ks)``, the
    choice ``argmax_s``, and the chosen candidate for active units (the previous state, bit for
    bit, for the others). The backward is that of ``h~ = sum_s w_s h_s`` with
    ``w = onehot + softmax - stop_gradient(softmax)`` (straight-through).

    :param gates: LSTM: ``(S, U, N, 4d)`` gate pre-activations; GRU: ``(S, U, N, 3d)`` the input
        side with its bias (see :func:`schema_gates`).
    :param gh: GRU: ``(S, U, N, 3d)`` the hidden side with its bias; LSTM: ``None``.
    :param h: ``(U, N, d)`` previous state; ``c`` the previous cell state (LSTM) or ``None``.
    :param query: ``(U, N, Ks)`` the units' queries ``h W_q + b_q``.
    :param weight_key: ``(d, Ks)`` key weights.
    :param mask: ``(U, N, 1)`` bool active mask or ``None``.
    :returns: ``(h~ (U, N, d), c~ (U, N, d) or None, choice (U, N) long)``; ties go to the lower
        schema index.
    """
    if torch.is_grad_enabled():
        return _SchemaDynamics.apply(gates, gh, h, c, query, weight_key, mask)
    return _schema_forward(gates, gh, h, c, query, weight_key, mask)[0]


def _schema_forward(
    gates: Tensor,
    gh: Tensor | None,
    h: Tensor,
    c: Tensor | None,
    query: Tensor,
    weight_key: Tensor,
    mask: Tensor | None,
) -> tuple[tuple[Tensor, Tensor | None, Tensor], tuple[Tensor, ...]]:
    """``((h~, c~, choice), (candidates h_s, c_s, keys, softmax, gate values...))``."""
    if gh is None:  # LSTM: saved (sigmoid gates, tanh gate, tanh(c_s)); GRU: (r z, candidate n)
        assert c is not None
        (cand_h, cand_c), saved = lstm_forward(gates, h, c, None)
    else:
        cand_h, saved = gru_forward(gates, gh, h, None)
        cand_c = None
    keys = torch.matmul(cand_h, weight_key)  # (S, U, N, Ks)
    scores = torch.linalg.vecdot(keys, query) / math.sqrt(weight_key.shape[-1])  # (S, U, N)
    choice = scores.argmax(0)  # (U, N)
    index = choice.unsqueeze(0).unsqueeze(-1).expand(1, *h.shape)
    h_new = keep_inactive(mask, cand_h.gather(0, index)[0], h)
    c_new = None if cand_c is None or c is None else keep_inactive(mask, cand_c.gather(0, index)[0], c)
    return (h_new, c_new, choice), (cand_h, cand_c, keys, torch.softmax(scores, dim=0), *saved)


class _SchemaDynamics(torch.autograd.Function):
    """Autograd function behind :func:`schema_dynamics`."""

    @staticmethod
    def forward(ctx: Any, *inputs: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor]:
        """``inputs``: the arguments of :func:`schema_dynamics`, in order."""
        _, gh, h, c, query, weight_key, mask = inputs
        (h_new, c_new, choice), (cand_h, cand_c, keys, soft, *saved) = _schema_forward(*inputs)
        ctx.save_for_backward(h, c, gh, query, weight_key, mask, choice, cand_h, cand_c, keys, soft, *saved)
        ctx.mark_non_differentiable(choice)
        return h_new, c_new, choice

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_h: Tensor | None, grad_c: Tensor | None, _grad_choice: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        h, c, gh, query, weight_key, mask, choice, cand_h, cand_c, keys, soft, *saved = ctx.saved_tensors
        lstm = c is not None
        grad_h = torch.zeros_like(h) if grad_h is None else grad_h
        zero = grad_h.new_zeros(())
        active_h = grad_h if mask is None else torch.where(mask, grad_h, zero)
        kept_h = None if mask is None else torch.where(mask, zero, grad_h)
        schemata = torch.arange(cand_h.shape[0], device=choice.device).view(-1, 1, 1)
        onehot = (schemata == choice).unsqueeze(-1).to(cand_h.dtype)  # (S, U, N, 1)
        grad_w = torch.linalg.vecdot(cand_h, active_h)  # (S, U, N) gradient on the weights w_s
        active_c = kept_c = None
        if lstm:
            grad_c = torch.zeros_like(c) if grad_c is None else grad_c
            active_c = grad_c if mask is None else torch.where(mask, grad_c, zero)
            kept_c = None if mask is None else torch.where(mask, zero, grad_c)
            grad_w = grad_w + torch.linalg.vecdot(cand_c, active_c)
        # through the softmax (straight-through) to the scores, the keys and the query
        grad_s = soft * (grad_w - (soft * grad_w).sum(0, keepdim=True))
        grad_s = (grad_s / math.sqrt(weight_key.shape[-1])).unsqueeze(-1)  # (S, U, N, 1)
        grad_keys = grad_s * query  # (S, U, N, Ks)
        grad_query = (grad_s * keys).sum(0)
        d, ks = weight_key.shape
        grad_wk = torch.mm(cand_h.reshape(-1, d).t(), grad_keys.reshape(-1, ks))
        grad_cand_h = torch.addcmul(torch.matmul(grad_keys, weight_key.t()), onehot, active_h)
        if lstm:
            sig, g, tanh_c = saved
            grad_gates, _, grad_c_prev = lstm_gates_backward(grad_cand_h, onehot * active_c, sig, g, c, tanh_c, None)
            grad_c_prev = grad_c_prev.sum(0)
            grad_c_prev = grad_c_prev if kept_c is None else grad_c_prev + kept_c
            return grad_gates, None, kept_h, grad_c_prev, grad_query, grad_wk, None
        rz, n = saved
        grad_gx, grad_gh, grad_h_prev = gru_gates_backward(grad_cand_h, rz, n, gh[..., 2 * d :], h, None)
        grad_h_prev = grad_h_prev.sum(0)
        grad_h_prev = grad_h_prev if kept_h is None else grad_h_prev + kept_h
        return grad_gx, grad_gh, grad_h_prev, None, grad_query, grad_wk, None
