"""Communication through a shared workspace (RIMs + SW), the alternative to pairwise attention.

Goyal et al., ICLR 2022 ("Coordination Among Neural Modules Through a Shared Global
Workspace", arXiv:2103.01197), per step, after the units' own update:

1. *Write*: ``S`` workspace slots query the units (query ``M0 W_q``, keys and values
   ``h_i W_k,i``, ``h_i W_v,i`` per unit, scores scaled by ``1/sqrt(Kc)``). Only active units
   compete, and each slot takes the ``write_k`` best-scoring of them (the write bottleneck); the
   softmax runs over those writers only, so a unit that did not write cannot change the
   workspace. (The authors' Transformer code keeps the top-k weights of a softmax over all
   specialists without renormalising; renormalising over the writers is our choice, so that
   the non-writers have no influence at all.)
2. *Update*: the slots are updated with the written content through input and forget gates,
   as in the relational memory the authors build on: ``[i, f] = sigmoid([tanh(M0), A V] W_g +
   b_g)`` (forget bias 1), ``M = i * tanh(M0 + A V) + f * M0``. The authors' layer norms and MLP
   inside the update are left out.
3. *Broadcast*: every unit, active or not, reads the workspace (query ``h_i W_r,i``, keys and
   values ``M W_rk``, ``M W_rv``, softmax over slots) and adds ``read W_o,i`` to its state, as the
   paper broadcasts to all specialists. So with this communication inactive units do change
   (their cell state and their own recurrent update are still kept and skipped).

Where the workspace lives: the paper carries ``M`` across time steps (their library code resets
it per sequence). Here it is re-derived at every step from learned initial slots ``M0``, so the
recurrent state stays ``nn.LSTM``'s ``(h, c)`` and two chained calls equal one call; the
workspace is a per-step, bandwidth-limited channel rather than a memory. One attention head
for writing and reading (key size ``comm_key_size``, read value size ``comm_value_size``).

Shapes: ``U`` units, ``N`` batch, ``d`` unit size, ``S`` slots of size ``m``, ``Kc`` key size,
``Vc`` read value size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rims.mechanisms.layer import LayerParameters, LayerSpec


class WorkspaceCommunication:
    """Write -> gated update -> broadcast, for one layer and one forward call.

    :param spec: the layer's sizes and options; ``p`` its parameters; ``batch``: ``N``.
    """

    updates_inactive = True  # the broadcast reaches every unit

    def __init__(self, spec: LayerSpec, p: LayerParameters, batch: int) -> None:
        self.p, self.batch, self.k = p, batch, spec.k
        self.key, self.value = spec.options.comm_key_size, spec.options.comm_value_size
        self.write_k = spec.write_k
        self.slot_size = spec.options.slot_size
        self.scale = 1.0 / math.sqrt(self.key)

    def write(self, states: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """The workspace after this step's writes, ``(N, S, m)``, and who wrote ``(N, U)`` bool.

        :param states: ``(U, N, d)`` the units' states after their own update.
        :param mask: ``(U, N, 1)`` bool active mask, or ``None`` when every unit is active.
        """
        p, m = self.p, self.slot_size
        slots = p.workspace_slots  # (S, m)
        query = slots @ p.weight_write_query  # (S, Kc), the same for every batch element
        kv = torch.bmm(states, p.weight_write_kv)  # (U, N, Kc + m)
        keys, values = kv[..., : self.key], kv[..., self.key :]
        scores = torch.einsum("sk,unk->nsu", query, keys) * self.scale  # (N, S, U)
        if mask is not None:
            scores = scores.masked_fill(~mask[..., 0].t().unsqueeze(1), float("-inf"))
        writers = min(self.write_k, self.k)
        top = scores.topk(writers, dim=-1).indices  # (N, S, write_k)
        chosen = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, top, True)
        weights = torch.softmax(scores.masked_fill(~chosen, float("-inf")), dim=-1)  # over the writers
        written = torch.bmm(weights, values.transpose(0, 1))  # (N, S, m)
        base = slots.unsqueeze(0).expand(self.batch, -1, -1)
        gates = torch.cat([torch.tanh(base), written], dim=-1) @ p.weight_workspace_gate  # (N, S, 2m)
        if p.bias_workspace_gate is not None:
            gates = gates + p.bias_workspace_gate
        write_gate, forget_gate = torch.sigmoid(gates).split(m, dim=-1)
        memory = write_gate * torch.tanh(base + written) + forget_gate * base
        return memory, chosen.any(1)

    def read(self, states: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Messages ``(U, N, d)`` read from ``memory`` ``(N, S, m)``, and the read attention ``(N, U, S)``."""
        p = self.p
        query = torch.bmm(states, p.weight_read_query)  # (U, N, Kc)
        kv = memory @ p.weight_read_kv  # (N, S, Kc + Vc)
        scores = torch.bmm(query.transpose(0, 1), kv[..., : self.key].transpose(1, 2)) * self.scale  # (N, U, S)
        attention = torch.softmax(scores, dim=-1)
        read = torch.bmm(attention, kv[..., self.key :])  # (N, U, Vc)
        return torch.bmm(read.transpose(0, 1), p.weight_read_out), attention

    def __call__(self, states: Tensor, mask: Tensor | None, record: bool) -> tuple[Tensor, dict[str, Tensor]]:
        """Messages to every unit ``(U, N, d)`` and, when recording, ``workspace_writes``
        ``(N, U)`` and ``workspace_read`` ``(N, U, S)``."""
        memory, wrote = self.write(states, mask)
        messages, attention = self.read(states, memory)
        recorded = {"workspace_writes": wrote, "workspace_read": attention} if record else {}
        return messages, recorded
