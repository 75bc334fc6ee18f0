"""A slow, literal RIM layer written straight from the equations, for testing the fast one.

Loops over time, batch elements, units and heads; concatenates the null input as a real row;
no algebraic shortcuts. It reads the parameters of a :class:`rims.RIMCell` so that both compute
the same function, and it is differentiable so gradients can be compared too (an inactive
unit's communication key/value use its detached weights: no parameter gradient from a step
where the unit was inactive). Eval-mode semantics (no attention dropout).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rims import RIMCell


def reference_sequence(
    cell: RIMCell, x: Tensor, states: tuple[Tensor, ...]
) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
    """Run ``cell`` literally over ``x`` ``(L, N, input_size)``.

    :returns: ``(output (L, N, hidden), final states, active (L, N, U) bool)``.
    """
    u_count, d = cell.num_units, cell.unit_size
    heads, key_size, value_size = cell.num_input_heads, cell.input_key_size, cell.input_value_size
    c_heads, c_key, c_value = cell.num_comm_heads, cell.comm_key_size, cell.comm_value_size
    lstm = cell.dynamics == "lstm"

    def b(name: str, shape: tuple[int, ...]) -> Tensor:
        p = getattr(cell, name)
        return torch.zeros(shape, dtype=x.dtype) if p is None else p

    wk, bk = cell.weight_key, b("bias_key", (heads * key_size,))
    wv, bv = cell.weight_value, b("bias_value", (heads * value_size,))
    wq, bq = cell.weight_query, b("bias_query", (u_count, heads * key_size))
    wih, bih = cell.weight_ih, b("bias_ih", cell.weight_ih.shape[::2])
    whh, bhh = cell.weight_hh, b("bias_hh", cell.weight_hh.shape[::2])
    wc, wo = cell.weight_comm_qkv, cell.weight_comm_out

    seq_len, batch = x.shape[:2]
    h = states[0].view(batch, u_count, d)
    c = states[1].view(batch, u_count, d) if lstm else None
    outputs, actives = [], []
    for t in range(seq_len):
        out_t, act_t = [], []
        for n in range(batch):
            inputs = torch.stack([x[t, n], torch.zeros_like(x[t, n])])  # rows: real input, null
            keys = (inputs @ wk.T + bk).view(2, heads, key_size)
            values = (inputs @ wv.T + bv).view(2, heads, value_size)
            attended, null_att, input_score = [], [], []
            for i in range(u_count):
                q = (h[n, i] @ wq[i] + bq[i]).view(heads, key_size)
                per_head = []
                nulls, scores = [], []
                for hd in range(heads):
                    s = keys[:, hd] @ q[hd] / math.sqrt(key_size)  # (2,)
                    p = torch.softmax(s, dim=0)
                    per_head.append(p @ values[:, hd])
                    nulls.append(p[1])
                    scores.append(s[0])
                attended.append(torch.cat(per_head))
                null_att.append(torch.stack(nulls).mean())
                input_score.append(torch.stack(scores).mean())
            if cell.selection == "null_attention":
                order = torch.argsort(torch.stack(null_att), stable=True)  # least null attention first
            else:
                order = torch.argsort(torch.stack(input_score), descending=True, stable=True)
            active = torch.zeros(u_count, dtype=torch.bool)
            active[order[: cell.k]] = True

            h_tilde, c_next = h[n].clone(), None if c is None else c[n].clone()
            for i in range(u_count):
                gx = attended[i] @ wih[i] + bih[i]
                gh = h[n, i] @ whh[i] + bhh[i]
                if lstm:
                    g = gx + gh
                    i_g, f_g, o_g = torch.sigmoid(g[: 3 * d]).chunk(3)
                    c_new = f_g * c[n, i] + i_g * torch.tanh(g[3 * d :])
                    h_new = o_g * torch.tanh(c_new)
                else:
                    r_g, z_g = torch.sigmoid(gx[: 2 * d] + gh[: 2 * d]).chunk(2)
                    n_g = torch.tanh(gx[2 * d :] + r_g * gh[2 * d :])
                    h_new = (1 - z_g) * n_g + z_g * h[n, i]
                    c_new = None
                if active[i]:
                    h_tilde[i] = h_new
                    if lstm:
                        c_next[i] = c_new

            qkv = torch.stack([h_tilde[i] @ (wc[i] if active[i] else wc[i].detach()) for i in range(u_count)])
            q_all = qkv[:, : c_heads * c_key].view(u_count, c_heads, c_key)
            k_all = qkv[:, c_heads * c_key : 2 * c_heads * c_key].view(u_count, c_heads, c_key)
            v_all = qkv[:, 2 * c_heads * c_key :].view(u_count, c_heads, c_value)
            h_next = h[n].clone()
            for i in range(u_count):
                if not active[i]:
                    continue
                read = []
                for hd in range(c_heads):
                    w = torch.softmax(k_all[:, hd] @ q_all[i, hd] / math.sqrt(c_key), dim=0)  # over units
                    read.append(w @ v_all[:, hd])
                h_next[i] = h_tilde[i] + torch.cat(read) @ wo[i]
                if cell.communication_update == "bounded":
                    h_next[i] = torch.tanh(h_next[i])
            new_h = h.clone()
            new_h[n] = h_next
            h = new_h
            if lstm:
                new_c = c.clone()
                new_c[n] = c_next
                c = new_c
            out_t.append(h[n].reshape(-1))
            act_t.append(active)
        outputs.append(torch.stack(out_t))
        actives.append(torch.stack(act_t))
    finals = (h.reshape(batch, -1),) + ((c.reshape(batch, -1),) if lstm else ())
    return torch.stack(outputs), finals, torch.stack(actives)
