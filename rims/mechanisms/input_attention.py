"""Input attention and selection of a RIM layer, steps 1-2 of the RIM step.

Each unit queries its candidates: the real input, optionally a top-down input (the state of
the layer above at the previous step, BRIMs: Mittal et al. 2020) and the null input (zeros).
Keys are ``x W_k + b_k``; the null key is ``b_k``, so scores are measured relative to null and
the key bias cancels. The softmax is per unit and head over the candidates. The ``k`` units
that put the least attention on null are active (the paper's rule), or, as a named
alternative, the ``k`` with the highest raw score on the real input.

Shapes: ``U`` units, ``N`` batch, ``H`` input heads with key ``K``, ``G`` gate width, ``W``
weight sets (units, or schemata), ``C`` candidates (``[input, null]`` or ``[input, top, null]``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def candidate_attention(score_in: Tensor, score_top: Tensor | None) -> Tensor:
    """Attention of every unit and head on its candidates, null last, ``(U, N, H, C)``.

    :param score_in: ``(U, N, H)`` score of the real input minus the null score (scaled).
    :param score_top: ``(U, N, H)`` score of the top-down input minus the null score, or ``None``.
    """
    if score_top is None:
        attn = torch.sigmoid(score_in)  # the two-way softmax
        return torch.stack([attn, 1.0 - attn], dim=-1)
    return torch.softmax(torch.stack([score_in, score_top, torch.zeros_like(score_in)], dim=-1), dim=-1)


Ranker = Callable[[Tensor, Tensor | None, Tensor, Tensor, Tensor | None], Tensor]
"""``(score_in, score_top, probs, query, null_key) -> rank``: see :func:`selection_rank`."""


def _rank_null_attention(
    score_in: Tensor, score_top: Tensor | None, probs: Tensor, query: Tensor, null_key: Tensor | None
) -> Tensor:
    """The paper's rule: least (mean over heads) attention on null."""
    if score_in.shape[-1] == 1:
        # -log(attention on null) is monotone in it and does not saturate: logsumexp of
        # the scores relative to null (with two candidates, ranking by the score itself)
        if score_top is None:
            return score_in
        return torch.logsumexp(torch.stack([score_in, score_top, torch.zeros_like(score_in)], -1), dim=-1)
    return 1.0 - probs[..., -1].mean(-1, keepdim=True)


def _rank_input_score(
    score_in: Tensor, score_top: Tensor | None, probs: Tensor, query: Tensor, null_key: Tensor | None
) -> Tensor:
    """Highest mean raw score on the real input: the score relative to null plus the null key's."""
    raw = score_in if null_key is None else score_in + torch.linalg.vecdot(query, null_key)
    return raw.mean(-1, keepdim=True)


RANKS: dict[str, Ranker] = {"null_attention": _rank_null_attention, "input_score": _rank_input_score}
"""The step path's ranking of every selection rule (:data:`rims.options.SELECTION_RULES`) by name."""


def selection_rank(
    rule: str, score_in: Tensor, score_top: Tensor | None, probs: Tensor, query: Tensor, null_key: Tensor | None
) -> Tensor:
    """Score to rank units by (higher = selected), ``(U, N, 1)``.

    :param rule: a name of :data:`RANKS`: ``"null_attention"`` (least mean attention on null) or
        ``"input_score"`` (highest mean raw score on the real input: the score plus the null key's).
    :param score_in: ``(U, N, H)``; ``score_top`` as in :func:`candidate_attention`.
    :param probs: ``(U, N, H, C)`` from :func:`candidate_attention`.
    :param query: ``(U, N, H, K)`` queries.
    :param null_key: ``(H, K)`` scaled null key (the key bias) for ``input_score``, else ``None``.
    :raises NotImplementedError: a rule without a ranking here.
    """
    if rule not in RANKS:
        raise NotImplementedError(
            f"selection={rule!r} has no ranking in rims.mechanisms.input_attention.RANKS {list(RANKS)}"
        )
    return RANKS[rule](score_in, score_top, probs, query, null_key)


def top_k_mask(rank: Tensor, k: int) -> Tensor:
    """Bool mask ``(U, N, 1)`` of the ``k`` highest-ranked units (ties go to the lower index).

    :param rank: ``(U, N, 1)`` from :func:`selection_rank`.
    """
    top = rank.sort(dim=0, descending=True, stable=True).indices[:k]  # stable: as jax.lax.top_k
    return torch.zeros_like(rank, dtype=torch.bool).scatter(0, top, True)


def drop_candidates(probs: Tensor, p: float) -> Tensor:
    """Attention dropout on the candidate distributions (training only), ``(U, N, H, C)``."""
    return F.dropout(probs, p, training=True)


def input_part(probs: Tensor, proj_in: Tensor, proj_top: Tensor | None, null_proj: Tensor | None) -> Tensor:
    """Input-side gate pre-activations without the input bias, ``(..., N, G)``.

    The attended value is ``a_in (x W_v + b_v) + a_top (t W_t + b_t) + a_null b_v``, projected by
    the weight set's input weights: ``a_in P_in + a_top P_top + (a_in + a_null) P_null`` with
    ``P_in = W_ih (x W_v)``, ``P_top = W_ih (t W_t + b_t)`` and ``P_null = W_ih b_v``.

    :param probs: ``(U, N, H, C)`` attention on the candidates (after dropout, if any).
    :param proj_in: ``(U, N, H, G)`` per unit, or ``(S, 1, N, H, G)`` per schema (broadcast over units).
    :param proj_top: like ``proj_in`` for the top-down input, or ``None`` without one.
    :param null_proj: ``(U, H, G)`` or ``(S, 1, H, G)``: ``P_null``; ``None`` when it is folded into
        the bias (then ``a_in + a_null`` must be 1).
    :returns: ``(U, N, G)``, or ``(S, U, N, G)`` per schema.
    """
    if probs.shape[-2] == 1:  # one head: element-wise products, not batches of 1 x 1 matmuls
        part = probs[..., 0, :1] * proj_in[..., 0, :]
        if proj_top is not None:
            part = torch.addcmul(part, probs[..., 0, 1:2], proj_top[..., 0, :])
        if null_proj is not None:
            part = torch.addcmul(part, probs[..., 0, :1] + probs[..., 0, -1:], null_proj[..., 0, :].unsqueeze(-2))
        return part
    a_in = probs[..., 0].unsqueeze(-2)  # (U, N, 1, H)
    part = torch.matmul(a_in, proj_in).squeeze(-2)
    if proj_top is not None:
        part = part + torch.matmul(probs[..., 1].unsqueeze(-2), proj_top).squeeze(-2)
    if null_proj is not None:
        weight = (probs[..., 0] + probs[..., -1]).unsqueeze(-2)  # (U, N, 1, H) weight of the null value
        part = part + torch.matmul(weight, null_proj.unsqueeze(-3)).squeeze(-2)
    return part


@dataclass
class Selection:
    """One call's additions to the ranking score, and what the remedies against selection collapse
    (:mod:`rims.remedies`) read back from it; the step path and the fast paths fill it.

    :param offset: ``(L, U, N, 1)`` added to the ranking score for the top-k choice (noise,
        detached, plus the balancing bias), or ``None``.
    :param noise: ``(L, U, N, 1)`` the noise term (differentiable in a learned scale), or ``None``.
    :param keep_masks: the paths fill ``masks`` ``(L, U, N, 1)`` (1 = active).
    :param keep_logits: the paths fill ``logits`` ``(L, U, N, 1)``: the ranking score, differentiable.
    """

    offset: Tensor | None
    noise: Tensor | None
    keep_masks: bool
    keep_logits: bool
    masks: Tensor | None = None
    logits: Tensor | None = None
