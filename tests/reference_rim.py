"""A slow, literal RIM-family layer written straight from the equations, for testing the fast one.

Loops over time, batch elements, units, heads, schemata and workspace slots; concatenates the
null input (and the top-down input, BRIMs) as real rows; no algebraic shortcuts. It reads the
parameters of a :class:`rims.RIMCell` so that both compute the same function, and it is
differentiable so gradients can be compared too (an inactive unit's communication key/value
use its detached weights: no parameter gradient from a step where the unit was inactive; the
schema choice is one-hot with the softmax's gradient, as in :mod:`rims.mechanisms.schemata`). Eval-mode
semantics (no attention dropout).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rims import RIMCell
from rims.rnn import _RIMBase


def _param(cell: RIMCell, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    p = getattr(cell, name)
    return torch.zeros(shape, dtype=dtype) if p is None else p


def _gates(cell: RIMCell, gx: Tensor, gh: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """One LSTM/GRU cell update of one unit from its pre-activations (gate order i, f, o, g / r, z, n)."""
    d = h.shape[0]
    if c is not None:
        g = gx + gh
        i_g, f_g, o_g = torch.sigmoid(g[: 3 * d]).chunk(3)
        c_new = f_g * c + i_g * torch.tanh(g[3 * d :])
        return o_g * torch.tanh(c_new), c_new
    r_g, z_g = torch.sigmoid(gx[: 2 * d] + gh[: 2 * d]).chunk(2)
    n_g = torch.tanh(gx[2 * d :] + r_g * gh[2 * d :])
    return (1 - z_g) * n_g + z_g * h, None


def _attend_inputs(cell: RIMCell, x: Tensor, top: Tensor | None, h: Tensor) -> tuple[list, Tensor, Tensor, Tensor]:
    """Input attention of one batch element: per unit the attended value, null attention, raw
    input score and top-down attention (mean over heads where a rank needs one)."""
    dtype = x.dtype
    heads, key_size, value_size = cell.num_input_heads, cell.input_key_size, cell.input_value_size
    u_count = cell.num_units
    bk = _param(cell, "bias_key", (heads * key_size,), dtype)
    bv = _param(cell, "bias_value", (heads * value_size,), dtype)
    bq = _param(cell, "bias_query", (u_count, heads * key_size), dtype)
    keys = [x @ cell.weight_key.T + bk]
    values = [x @ cell.weight_value.T + bv]
    if top is not None:
        keys.append(top @ cell.weight_key_top.T + _param(cell, "bias_key_top", (heads * key_size,), dtype))
        values.append(top @ cell.weight_value_top.T + _param(cell, "bias_value_top", (heads * value_size,), dtype))
    zeros = torch.zeros_like(x)
    keys.append(zeros @ cell.weight_key.T + bk)  # the null input
    values.append(zeros @ cell.weight_value.T + bv)
    keys_t = torch.stack(keys).view(len(keys), heads, key_size)
    values_t = torch.stack(values).view(len(values), heads, value_size)
    attended, null_att, input_score, top_att = [], [], [], []
    for i in range(u_count):
        q = (h[i] @ cell.weight_query[i] + bq[i]).view(heads, key_size)
        per_head, nulls, scores, tops = [], [], [], []
        for hd in range(heads):
            s = keys_t[:, hd] @ q[hd] / math.sqrt(key_size)
            p = torch.softmax(s, dim=0)
            per_head.append(p @ values_t[:, hd])
            nulls.append(p[-1])
            scores.append(s[0])
            tops.append(p[1] if top is not None else p[0] * 0)
        attended.append(torch.cat(per_head))
        null_att.append(torch.stack(nulls).mean())
        input_score.append(torch.stack(scores).mean())
        top_att.append(torch.stack(tops))
    return attended, torch.stack(null_att), torch.stack(input_score), torch.stack(top_att)


def _dynamics(cell: RIMCell, attended: list, h: Tensor, c: Tensor | None, i: int) -> tuple[Tensor, Tensor | None]:
    """Unit ``i``'s update: its own weights, or the best-matching schema's (straight-through choice)."""
    dtype, gates = h.dtype, cell.weight_ih.shape[2]
    bih = _param(cell, "bias_ih", (cell.weight_ih.shape[0], gates), dtype)
    bhh = _param(cell, "bias_hh", (cell.weight_ih.shape[0], gates), dtype)
    c_i = None if c is None else c[i]
    if cell.num_schemata is None:
        return _gates(cell, attended[i] @ cell.weight_ih[i] + bih[i], h[i] @ cell.weight_hh[i] + bhh[i], h[i], c_i)
    cands = [
        _gates(cell, attended[i] @ cell.weight_ih[s] + bih[s], h[i] @ cell.weight_hh[s] + bhh[s], h[i], c_i)
        for s in range(cell.num_schemata)
    ]
    bsq = _param(cell, "bias_schema_query", (cell.schema_key_size,), dtype)
    q = h[i] @ cell.weight_schema_query + bsq
    scores = torch.stack([(hs @ cell.weight_schema_key) @ q for hs, _ in cands]) / math.sqrt(cell.schema_key_size)
    soft = torch.softmax(scores, 0)
    choice = int(torch.argmax(scores))
    weight = torch.zeros_like(soft)
    weight[choice] = 1.0
    weight = weight + (soft - soft.detach())
    h_new = sum(weight[s] * cands[s][0] for s in range(len(cands)))
    c_new = None if c is None else sum(weight[s] * cands[s][1] for s in range(len(cands)))
    return h_new, c_new


def _pairwise(cell: RIMCell, h_tilde: Tensor, active: Tensor) -> list[Tensor | None]:
    """Messages to the active units (``None`` for the others)."""
    u_count = cell.num_units
    c_heads, c_key, c_value = cell.num_comm_heads, cell.comm_key_size, cell.comm_value_size
    wc, wo = cell.weight_comm_qkv, cell.weight_comm_out
    qkv = torch.stack([h_tilde[i] @ (wc[i] if active[i] else wc[i].detach()) for i in range(u_count)])
    q_all = qkv[:, : c_heads * c_key].view(u_count, c_heads, c_key)
    k_all = qkv[:, c_heads * c_key : 2 * c_heads * c_key].view(u_count, c_heads, c_key)
    v_all = qkv[:, 2 * c_heads * c_key :].view(u_count, c_heads, c_value)
    messages: list[Tensor | None] = []
    for i in range(u_count):
        if not active[i]:
            messages.append(None)
            continue
        read = []
        for hd in range(c_heads):
            w = torch.softmax(k_all[:, hd] @ q_all[i, hd] / math.sqrt(c_key), dim=0)  # over units
            read.append(w @ v_all[:, hd])
        messages.append(torch.cat(read) @ wo[i])
    return messages


def reference_workspace(cell: RIMCell, h_tilde: Tensor, active: Tensor) -> tuple[list[Tensor], Tensor]:
    """Write (active units, top ``write_k`` per slot, softmax over the writers), gated update,
    broadcast to every unit: ``(messages per unit, memory (S, m))`` of one batch element."""
    u_count, key, m = cell.num_units, cell.comm_key_size, cell.slot_size
    slots = cell.workspace_slots
    memory = []
    for j in range(cell.num_slots):
        q = slots[j] @ cell.weight_write_query
        scores, items = [], []
        for i in range(u_count):
            if active[i]:
                kv = h_tilde[i] @ cell.weight_write_kv[i]
                scores.append(kv[:key] @ q / math.sqrt(key))
                items.append(kv[key:])
        order = torch.argsort(torch.stack(scores), descending=True)[: min(cell.write_k, cell.k)]
        weights = torch.softmax(torch.stack([scores[int(o)] for o in order]), 0)
        written = sum(w * items[int(o)] for w, o in zip(weights, order, strict=True))
        gate = torch.cat([torch.tanh(slots[j]), written]) @ cell.weight_workspace_gate
        gate = gate + _param(cell, "bias_workspace_gate", (2 * m,), slots.dtype)
        write_gate, forget_gate = torch.sigmoid(gate[:m]), torch.sigmoid(gate[m:])
        memory.append(write_gate * torch.tanh(slots[j] + written) + forget_gate * slots[j])
    mem = torch.stack(memory)
    messages = []
    for i in range(u_count):
        q = h_tilde[i] @ cell.weight_read_query[i]
        kv = mem @ cell.weight_read_kv
        a = torch.softmax(kv[:, :key] @ q / math.sqrt(key), 0)
        messages.append((a @ kv[:, key:]) @ cell.weight_read_out[i])
    return messages, mem


def reference_step(
    cell: RIMCell, x: Tensor, h: Tensor, c: Tensor | None, top: Tensor | None = None
) -> tuple[Tensor, Tensor | None, Tensor]:
    """One step of one batch element: ``x (I,)``, ``h, c (U, d)``, ``top (T,)`` -> ``(h', c', active (U,))``."""
    u_count = cell.num_units
    attended, null_att, input_score, _ = _attend_inputs(cell, x, top, h)
    if cell.selection == "null_attention":
        order = torch.argsort(null_att, stable=True)  # least null attention first
    else:
        order = torch.argsort(input_score, descending=True, stable=True)
    active = torch.zeros(u_count, dtype=torch.bool)
    active[order[: cell.k]] = True
    h_tilde, c_next = h.clone(), None if c is None else c.clone()
    for i in range(u_count):
        if active[i]:
            h_new, c_new = _dynamics(cell, attended, h, c, i)
            h_tilde[i] = h_new
            if c_next is not None:
                c_next[i] = c_new
    if cell.communication == "workspace":
        messages, _ = reference_workspace(cell, h_tilde, active)
        receivers = [True] * u_count
    else:
        messages, receivers = _pairwise(cell, h_tilde, active), [bool(a) for a in active]
    h_next = h_tilde.clone()
    for i in range(u_count):
        if receivers[i]:
            h_next[i] = h_tilde[i] + messages[i]
            if cell.communication_update == "bounded":
                h_next[i] = torch.tanh(h_next[i])
    return h_next, c_next, active


def reference_sequence(
    cell: RIMCell, x: Tensor, states: tuple[Tensor, ...]
) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
    """Run ``cell`` literally over ``x`` ``(L, N, input_size)``.

    :returns: ``(output (L, N, hidden), final states, active (L, N, U) bool)``.
    """
    u_count, d = cell.num_units, cell.unit_size
    lstm = cell.dynamics == "lstm"
    seq_len, batch = x.shape[:2]
    h = [states[0][n].view(u_count, d) for n in range(batch)]
    c = [states[1][n].view(u_count, d) if lstm else None for n in range(batch)]
    outputs, actives = [], []
    for t in range(seq_len):
        act_t = []
        for n in range(batch):
            h[n], c[n], active = reference_step(cell, x[t, n], h[n], c[n])
            act_t.append(active)
        outputs.append(torch.stack([hn.reshape(-1) for hn in h]))
        actives.append(torch.stack(act_t))
    finals = (torch.stack([hn.reshape(-1) for hn in h]),)
    if lstm:
        finals += (torch.stack([cn.reshape(-1) for cn in c]),)
    return torch.stack(outputs), finals, torch.stack(actives)


def reference_stack(module: _RIMBase, x: Tensor, states: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """A stack with top-down input (BRIMs), literally: per step, layers bottom to top, layer ``l``
    reading layer ``l - 1`` at ``t`` and layer ``l + 1`` at ``t - 1``. Eval mode.

    :param x: ``(L, N, input_size)``; ``states`` each ``(num_layers, N, hidden_size)``.
    :returns: ``(output (L, N, hidden), final states each (num_layers, N, hidden))``.
    """
    layers = list(module.layers)
    lstm = module.dynamics == "lstm"
    u_count, d = module.num_units, layers[0].unit_size
    seq_len, batch = x.shape[:2]
    h = [[states[0][i, n].view(u_count, d) for n in range(batch)] for i in range(len(layers))]
    c = [[states[1][i, n].view(u_count, d) if lstm else None for n in range(batch)] for i in range(len(layers))]
    outputs = []
    for t in range(seq_len):
        above = [[h[i + 1][n].reshape(-1) for n in range(batch)] for i in range(len(layers) - 1)]
        for i, layer in enumerate(layers):
            for n in range(batch):
                below = x[t, n] if i == 0 else h[i - 1][n].reshape(-1)
                top = above[i][n] if i < len(layers) - 1 else None
                h[i][n], c[i][n], _ = reference_step(layer, below, h[i][n], c[i][n], top)
        outputs.append(torch.stack([hn.reshape(-1) for hn in h[-1]]))
    finals = (torch.stack([torch.stack([hn.reshape(-1) for hn in layer_h]) for layer_h in h]),)
    if lstm:
        finals += (torch.stack([torch.stack([cn.reshape(-1) for cn in layer_c]) for layer_c in c]),)
    return torch.stack(outputs), finals
