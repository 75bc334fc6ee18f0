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

import torch
import torch.nn.functional as F
from torch import Tensor

from rims.gates import gru_gates, lstm_gates


def schema_candidates(
    lstm: bool, part: Tensor, h: Tensor, c: Tensor | None, hh: Tensor, hh_bias: Tensor | None, x_bias: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """The update every schema would make to every unit, ``(S, U, N, d)`` (and the cell state).

    :param part: ``(S, U, N, G)`` input-side pre-activations under each schema's input weights.
    :param h: ``(U, N, d)`` previous state; ``c`` the previous cell state (LSTM) or ``None``.
    :param hh: ``(S, d, G)`` recurrent weights; ``hh_bias`` ``(S, 1, G)`` (LSTM: with the input bias).
    :param x_bias: ``(S, 1, G)`` input-side bias (GRU), else ``None``.
    """
    s, (u, n, d) = hh.shape[0], h.shape
    # one batched product per schema over all units' rows: its output is laid out (S, U, N, G) as
    # the input part is, so the sum below and its backward read and write contiguous memory
    rows = h.reshape(1, u * n, d).expand(s, u * n, d)
    gh = torch.bmm(rows, hh) if hh_bias is None else torch.baddbmm(hh_bias, rows, hh)  # (S, U*N, G)
    gh = gh.view(s, u, n, -1)
    h_all = h.unsqueeze(0).expand(s, u, n, d).reshape(s * u, n, d)
    if lstm:
        assert c is not None
        c_all = c.unsqueeze(0).expand(s, u, n, d).reshape(s * u, n, d)
        h_new, c_new = lstm_gates((gh + part).reshape(s * u, n, -1), h_all, c_all, None)
        return h_new.view(s, u, n, d), c_new.view(s, u, n, d)
    gx = part if x_bias is None else part + x_bias.unsqueeze(1)
    h_new = gru_gates(gx.reshape(s * u, n, -1), gh.reshape(s * u, n, -1), h_all, None)
    return h_new.view(s, u, n, d), None


def choose_schema(
    h: Tensor, candidates: Tensor, weight_query: Tensor, bias_query: Tensor | None, weight_key: Tensor
) -> tuple[Tensor, Tensor]:
    """Each unit's schema: one-hot weights with a straight-through gradient, and the choice.

    :param h: ``(U, N, d)`` previous state (the query's source).
    :param candidates: ``(S, U, N, d)`` updates under each schema (the keys' source).
    :param weight_query: ``(d, Ks)`` query weights; ``bias_query`` ``(Ks,)`` or ``None``.
    :param weight_key: ``(d, Ks)`` key weights.
    :returns: ``(weights (S, U, N, 1), choice (U, N) long)``: ``weights`` is exactly one-hot in
        the forward pass; when gradients are recorded its gradient is the softmax's.
    """
    query = torch.matmul(h, weight_query)  # (U, N, Ks)
    if bias_query is not None:
        query = query + bias_query
    keys = torch.matmul(candidates, weight_key)  # (S, U, N, Ks)
    scores = (keys * query).sum(-1) / math.sqrt(weight_key.shape[-1])  # (S, U, N)
    choice = scores.argmax(0)  # (U, N); ties go to the lower schema index
    hard = F.one_hot(choice, candidates.shape[0]).permute(2, 0, 1).to(scores.dtype)  # (S, U, N)
    if torch.is_grad_enabled():
        soft = torch.softmax(scores, dim=0)
        hard = hard + (soft - soft.detach())  # forward: exactly one-hot; backward: the softmax
    return hard.unsqueeze(-1), choice


def apply_choice(weights: Tensor, candidates: Tensor) -> Tensor:
    """The chosen schema's update per unit, ``(U, N, d)``: ``sum_s weights_s * candidates_s``.

    With one-hot ``weights`` the other schemata's terms are exact zeros, so the result equals the
    chosen candidate bit for bit.
    """
    return (weights * candidates).sum(0)


def keep_inactive(mask: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    """``new`` for active units, ``old`` (bit for bit, no gradient into ``new``) for the others."""
    return new if mask is None else torch.where(mask, new, old)
