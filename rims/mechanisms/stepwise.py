"""The step-by-step path of a RIM-family layer: input attention -> selection -> dynamics ->
communication, one mechanism module each, composed per step with autograd.

Every layer option runs here (several input heads, recording, a top-down input, schemata, a
shared workspace); the plain RIM's training and acting also have fast paths
(:mod:`rims.fast_paths.fused`, :mod:`rims.fast_paths.native`) that tests compare with this one.

:class:`StepRunner` holds one layer's state over a sequence and advances it one step at a time,
so that stacked layers can be interleaved per step when a layer reads the state of the layer
above (BRIMs).

Shapes: ``L`` steps, ``N`` batch, ``U`` units of width ``d``, ``G`` gate width, ``H`` input
heads with key ``K``, ``W`` weight sets (``U``, or ``S`` schemata).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rims.info import RIMInfo
from rims.mechanisms.communication import PairwiseCommunication
from rims.mechanisms.dynamics import gru_gates, keep_inactive, lstm_gates
from rims.mechanisms.input_attention import (
    Selection,
    candidate_attention,
    drop_candidates,
    input_part,
    selection_rank,
    top_k_mask,
)
from rims.mechanisms.layer import LayerParameters, LayerSpec
from rims.mechanisms.schemata import schema_dynamics, schema_gates
from rims.mechanisms.weights import Weights, combine_for_steps, input_projection, top_key, top_projection
from rims.mechanisms.workspace import WorkspaceCommunication


class StepRunner:
    """One layer run step by step over a sequence.

    :param spec: the layer's sizes and options; ``p``: its parameters.
    :param weights: its parameters rearranged for this call (:func:`rims.mechanisms.weights.build_weights`,
        the null value's projection folded into the input bias exactly when ``dropout`` is zero).
    :param states: ``(h, c)`` (LSTM) or ``(h,)`` (GRU), each ``(N, hidden_size)``.
    :param x: ``(L, N, input_size)`` the whole input when it is known in advance (its input
        side is then projected for all steps at once), or ``None`` to pass it per step.
    :param record: keep what :class:`rims.RIMInfo` reports.
    :param dropout: the attention dropout in effect (``0.0`` when not training).
    :param top_down: the layer reads a top-down input at every step (see :meth:`step`).
    :param steps: how many steps the runner will make when ``x`` is ``None`` (the per-step
        input and the top-down input are then projected through weights combined once for all
        steps, when that costs fewer multiply-adds).
    :param selection: the remedies' score offset for the top-k choice, and what they read back
        (:class:`rims.mechanisms.input_attention.Selection`, filled by :meth:`finish`), or ``None``.

    Without attention dropout the null value's projection is folded into the input bias; with a
    top-down candidate the top-down value is then taken relative to the null value
    (``a_in P_in + a_top P_top + a_null P_null = P_null + a_in (P_in - P_null) + a_top (P_top - P_null)``,
    where ``P_in`` already omits the null's part; see :func:`rims.mechanisms.input_attention.input_part`).
    """

    def __init__(
        self,
        spec: LayerSpec,
        p: LayerParameters,
        weights: Weights,
        states: tuple[Tensor, ...],
        x: Tensor | None,
        record: bool,
        dropout: float = 0.0,
        top_down: bool = False,
        steps: int = 1,
        selection: Selection | None = None,
    ) -> None:
        self.spec, self.p, self.record, self.top_down = spec, p, record, top_down
        self.selection = selection
        self._offsets = None if selection is None or selection.offset is None else selection.offset.unbind(0)
        self._masks: list[Tensor] = []
        self._ranks: list[Tensor] = []
        self.lstm = spec.options.dynamics == "lstm"
        self.dropout = dropout
        self.heads, self.u, self.d = spec.options.num_input_heads, spec.num_units, spec.unit_size
        self.schemata = spec.options.num_schemata is not None
        fold = self.dropout == 0.0
        self.w = weights
        batch = states[0].shape[0]
        self.batch = batch
        if x is None and self.w.combined is None and steps > 1:
            self.w = combine_for_steps(spec, p, self.w, steps * batch)
        self._top = top_projection(spec, p, self.w, fold, steps * batch) if top_down else None
        gates = self.w.h_split[0]
        self._gh_weight, self._gh_bias = _columns(self.w.h, self.w.h_bias, 0, gates) if gates else (None, None)
        self._query_weight, self._query_bias = _columns(self.w.h, self.w.h_bias, gates, self.w.h.shape[-1])
        if spec.options.communication == "workspace":
            self.comm: PairwiseCommunication | WorkspaceCommunication = WorkspaceCommunication(spec, p, batch)
        else:
            self.comm = PairwiseCommunication(spec, p, batch, dropout)
        self.h = states[0].view(batch, self.u, self.d).transpose(0, 1).contiguous()  # (U, N, d)
        self.c = states[1].view(batch, self.u, self.d).transpose(0, 1).contiguous() if self.lstm else None
        self.outputs: list[Tensor] = []
        self.log: list[dict[str, Tensor]] = []
        self._key_steps: tuple[Tensor, ...] | None = None
        self._proj_steps: tuple[Tensor, ...] | None = None
        if x is not None:
            keys, proj = self._input_side(x)
            # unbind, not [t]: indexing would make backward scatter into a full (L, ...) zeros tensor per step
            self._key_steps, self._proj_steps = keys.unbind(0), proj.unbind(0)

    def _input_side(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys ``(L, N, H, K)`` (scaled) and the input projection ``(L, W, N, H, G)`` of ``x`` ``(L, N, I)``."""
        spec, p, heads = self.spec, self.p, self.heads
        seq_len, batch = x.shape[0], x.shape[1]
        keys = F.linear(x, self.w.key).view(seq_len, batch, heads, spec.options.input_key_size)
        proj = input_projection(spec, p, x.reshape(seq_len * batch, spec.input_size), self.w)  # (H, L*N, W*G)
        sets = p.weight_ih.shape[0]
        proj = proj.view(heads, seq_len, batch, sets, -1).permute(1, 3, 2, 0, 4)  # (L, W, N, H, G) strided view
        return keys, proj

    def _top_side(self, top: Tensor) -> tuple[Tensor, Tensor]:
        """Scaled top-down keys relative to the null key ``(N, H, K)`` and the top-down value's
        projection ``(W, N, H, G)`` of ``top`` ``(N, top_size)`` (relative to the null value's
        when that is folded into the bias)."""
        spec, p, heads = self.spec, self.p, self.heads
        assert self._top is not None
        keys = F.linear(top, *top_key(spec, p)).view(-1, heads, spec.options.input_key_size)
        tp = self._top
        if tp.combined is None:  # two steps: (t W_t + b) W_ih
            values = F.linear(top, tp.weight, tp.bias)  # (N, H*V)
            values = values.view(-1, heads, spec.options.input_value_size).transpose(0, 1)  # (H, N, V)
            proj = torch.bmm(values, self.w.ih)  # (H, N, W*G)
        elif heads == 1:
            combined, bias = tp.combined[0], tp.combined_bias
            proj = (torch.mm(top, combined) if bias is None else torch.addmm(bias[0], top, combined)).unsqueeze(0)
        else:
            proj = torch.matmul(top, tp.combined)  # (H, N, W*G)
            proj = proj if tp.combined_bias is None else proj + tp.combined_bias
        sets = p.weight_ih.shape[0]
        return keys, proj.view(heads, -1, sets, proj.shape[-1] // sets).permute(2, 1, 0, 3)

    def step(self, t: int, x_t: Tensor | None = None, top: Tensor | None = None) -> Tensor:
        """Advance one step; returns the new hidden state ``(U, N, d)``.

        :param t: the step's index into the ``x`` given at construction (ignored with ``x_t``).
        :param x_t: ``(N, input_size)`` this step's input, when ``x`` was not given.
        :param top: ``(N, top_size)`` the top-down input (BRIMs: the state of the layer above at
            the previous step); ``None`` for none (then the layer attends over input and null).
        """
        spec, w, u, batch, heads = self.spec, self.w, self.u, self.batch, self.heads
        if x_t is not None:
            keys, proj = self._input_side(x_t.unsqueeze(0))
            key_t, proj_t = keys[0], proj[0]
        else:
            assert self._key_steps is not None and self._proj_steps is not None
            key_t, proj_t = self._key_steps[t], self._proj_steps[t]
        h, c = self.h, self.c
        # two products rather than one split in two: a split's backward concatenates every step
        gh = None if self._gh_weight is None else _affine(h, self._gh_weight, self._gh_bias)  # (U, N, G)
        query = _affine(h, self._query_weight, self._query_bias)  # (U, N, H*K)
        query = query.view(u, batch, heads, -1)  # (U, N, H, K)
        score_in = torch.linalg.vecdot(query, key_t)  # (U, N, H) input minus null score
        score_top = proj_top = None
        if top is not None:
            key_top, proj_top = self._top_side(top)
            score_top = torch.linalg.vecdot(query, key_top)
        probs = candidate_attention(score_in, score_top)  # (U, N, H, C)

        mask = None
        if spec.k < u:
            rank = selection_rank(spec.options.selection, score_in, score_top, probs, query, w.null_key)  # (U, N, 1)
            mask = top_k_mask(rank if self._offsets is None else rank + self._offsets[t], spec.k)
            if self.selection is not None and self.selection.keep_masks:
                self._masks.append(mask)
                if self.selection.keep_logits:
                    self._ranks.append(rank)
        used = drop_candidates(probs, self.dropout) if self.dropout > 0.0 else probs

        choice = None
        if self.schemata:
            h_tilde, c, choice = self._schema_dynamics(used, proj_t, proj_top, mask)
        else:
            part = input_part(used, proj_t, proj_top, w.null_proj)  # (U, N, G)
            assert gh is not None
            if self.lstm:
                assert c is not None
                h_tilde, c = lstm_gates(gh + part, h, c, mask)
            else:
                gx = part if w.x_bias is None else part + w.x_bias
                h_tilde = gru_gates(gx, gh, h, mask)

        message, recorded = self.comm(h_tilde, mask, self.record)
        new = h_tilde + message
        new = torch.tanh(new) if spec.options.communication_update == "bounded" else new
        self.h = new if self.comm.updates_inactive else keep_inactive(mask, new, h_tilde)
        self.c = c
        self.outputs.append(self.h)
        if self.record:
            active = torch.ones(u, batch, 1, dtype=torch.bool, device=h.device) if mask is None else mask
            entry = {"active": active[..., 0].t(), "input_attention": probs[..., 0].transpose(0, 1), **recorded}
            if score_top is not None:
                entry["top_down_attention"] = probs[..., 1].transpose(0, 1)
            if choice is not None:
                entry["schema"] = torch.where(active[..., 0], choice, -1).t()
            self.log.append(entry)
        return self.h

    def _schema_dynamics(
        self, probs: Tensor, proj_t: Tensor, proj_top: Tensor | None, mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Candidates under every schema, each unit's choice, and the kept state of inactive units."""
        p, w = self.p, self.w
        null = None if w.null_proj is None else w.null_proj.unsqueeze(1)  # (S, 1, H, G)
        top = None if proj_top is None else proj_top.unsqueeze(1)
        part = input_part(probs, proj_t.unsqueeze(1), top, null)  # (S, U, N, G)
        assert w.hh is not None
        s, (u, n, d) = w.hh.shape[0], self.h.shape
        # one batched product per schema over all units' rows: laid out (S, U, N, G) as the input
        # part is, so the sum and its backward read and write contiguous memory
        rows = self.h.reshape(1, u * n, d).expand(s, u * n, d)
        gh = torch.bmm(rows, w.hh) if w.hh_bias is None else torch.baddbmm(w.hh_bias, rows, w.hh)
        gates, gh_gru = schema_gates(gh.view(s, u, n, -1), part, w.x_bias, self.lstm)
        query = torch.matmul(self.h, p.weight_schema_query)  # (U, N, Ks)
        if p.bias_schema_query is not None:
            query = query + p.bias_schema_query
        h_tilde, c, choice = schema_dynamics(gates, gh_gru, self.h, self.c, query, p.weight_schema_key, mask)
        return h_tilde, c, choice

    def finish(self) -> tuple[Tensor, tuple[Tensor, ...], RIMInfo | None]:
        """``(output (L, N, hidden_size), final states (N, hidden_size) each, info or None)``."""
        batch, hidden = self.batch, self.spec.hidden_size
        states = (self.h, self.c) if self.lstm else (self.h,)
        finals = tuple(s.transpose(0, 1).reshape(batch, hidden) for s in states)
        if len(self.outputs) == 1:  # acting: the output is the final hidden state
            out = finals[0].unsqueeze(0)
        else:
            out = torch.stack(self.outputs).permute(0, 2, 1, 3).reshape(len(self.outputs), batch, hidden)
        info = RIMInfo.from_steps(self.log) if self.record else None
        if self._masks:
            assert self.selection is not None
            self.selection.masks = torch.stack(self._masks)  # (L, U, N, 1)
            self.selection.logits = torch.stack(self._ranks) if self._ranks else None
        return out, finals, info


def _columns(weight: Tensor, bias: Tensor | None, start: int, stop: int) -> tuple[Tensor, Tensor | None]:
    """Columns ``start:stop`` of a per-unit weight ``(U, d, C)`` and its bias ``(U, 1, C)``, contiguous."""
    return weight[..., start:stop].contiguous(), None if bias is None else bias[..., start:stop].contiguous()


def _affine(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``h W + b`` per unit: ``h`` ``(U, N, d)``, ``weight`` ``(U, d, C)``, ``bias`` ``(U, 1, C)``."""
    return torch.bmm(h, weight) if bias is None else torch.baddbmm(bias, h, weight)
