"""One RIM layer (Goyal et al. 2019, arXiv:1909.10893, section 2).

Per step, for ``U = num_units`` units of width ``d = hidden_size // U``:

1. *Input attention*: unit ``i`` queries ``{x_t, null}`` (null = zeros) with
   ``q_i = h_i W_q,i + b_q,i``; keys ``x W_k + b_k`` (null key ``b_k``), values ``x W_v + b_v``
   (null value ``b_v``). The softmax is per unit and head over the two candidates, so the
   attention on the real input is ``a_i = sigmoid(q_i . (x W_k) / sqrt(key))``.
2. *Selection*: the ``k`` units with the least attention on null are active (``null_attention``,
   the paper's rule) or, as a named alternative, the ``k`` with the highest raw score on the
   real input (``input_score``; differs only when the key projection has a bias). Ties go to
   the lower unit index.
3. *Independent dynamics*: every unit has its own LSTM/GRU weights, applied to all units in one
   batched matmul. Because the attended input is affine in ``a_i``, its projection by the unit's
   input weights is computed for the whole sequence before the time loop:
   ``W_ih,i (a_i v(x) + (1 - a_i) b_v) = a_i W_ih,i (x W_v) + W_ih,i b_v``.
4. *Communication*: multi-head attention from every unit over all units' states (inactive units
   show their kept state), added residually to the active units: ``h = tanh(h_tilde + m)``
   (``communication_update="bounded"``, the default: ``|h| < 1`` at every step) or the paper's
   ``h = h_tilde + m`` (``"residual"``, unbounded on long carried streams).
5. Inactive units keep ``h`` and ``c`` bit-identical. A unit's parameters get no gradient from a
   step where it was inactive: its new state is discarded (``torch.where`` in
   :mod:`rims.gates`) and the weight gradient of its communication key/value projection is
   masked (gradient still reaches its state from earlier steps).

When gradients are recorded (training) and there is one input head, :meth:`RIMCell.sequence`
runs the whole sequence as one autograd node with a hand-written backward
(:mod:`rims.fused`); a one-step call without gradients (acting) is one C++ call when
:mod:`rims._native` is available. Otherwise (other inference, several input heads,
``record=True``) it steps through time with autograd. All paths compute the same function;
tests compare them.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rims._checks import (
    COMMUNICATION_UPDATES,
    DYNAMICS,
    SELECTION_RULES,
    check_choice,
    check_positive_int,
    check_probability,
    check_rim_sizes,
)
from rims._native import loops_for
from rims._zero_grad import attach_zero_grad
from rims.fused import SequenceSpec, fused_sequence
from rims.gates import gru_gates, lstm_gates
from rims.info import RIMInfo
from rims.unit_attention import unit_attention

_GATES = {"lstm": 4, "gru": 3}
_ATTENTION_PARAMETERS = (
    "weight_key", "bias_key", "weight_value", "bias_value", "weight_query", "bias_query",
    "weight_comm_qkv", "weight_comm_out",
)  # fmt: skip


class RIMCell(nn.Module):
    """A layer of Recurrent Independent Mechanisms, usable like ``nn.LSTMCell``/``nn.GRUCell``.

    ``forward`` runs one time step; :meth:`sequence` runs a whole sequence with the
    input-side work batched over time (what :class:`rims.RIMLSTM` uses).

    :param input_size: features of the input ``x``.
    :param hidden_size: total hidden width, ``num_units * unit_size``.
    :param num_units: number of units (mechanisms).
    :param k: number of units active per step, ``1 <= k <= num_units``.
    :param bias: if ``False``, no projection of the layer has a bias.
    :param dynamics: ``"lstm"`` or ``"gru"``.
    :param selection: top-k rule, one of :data:`rims.SELECTION_RULES`.
    :param num_input_heads: heads of the input attention (paper: 1).
    :param input_key_size: key/query size of the input attention (paper: 64).
    :param input_value_size: value size per input head (paper: 400).
    :param num_comm_heads: heads of the communication attention (paper: 4).
    :param comm_key_size: key/query size per communication head (paper: 32).
    :param comm_value_size: value size per communication head (paper: 32).
    :param attention_dropout: dropout on both attention distributions, training only (paper: 0.1).
    :param communication_update: how active units add the message, one of
        :data:`rims.COMMUNICATION_UPDATES`: ``"bounded"`` (default) ``h = tanh(h_tilde + m)``
        or ``"residual"`` (the paper's) ``h = h_tilde + m``.

    Parameters (``U`` units, ``d`` unit size, ``G = 4d`` for LSTM or ``3d`` for GRU, gate order
    ``i, f, o, g`` and ``r, z, n``): ``weight_key (H*K, input_size)``, ``weight_value
    (H*V, input_size)``, ``weight_query (U, d, H*K)``, ``weight_ih (U, H*V, G)``, ``weight_hh
    (U, d, G)``, ``weight_comm_qkv (U, d, Hc*(2Kc+Vc))`` (query, key, value blocks, each
    head-major), ``weight_comm_out (U, Hc*Vc, d)`` and, with ``bias``, ``bias_key``,
    ``bias_value``, ``bias_query (U, H*K)``, ``bias_ih (U, G)``, ``bias_hh (U, G)``.
    ``bias_key`` is also the null input's key, so it cancels in the two-way softmax and cannot
    change the output; it only shifts the raw score ranked by the ``input_score`` rule. It stays
    a parameter so that saved state dicts keep loading, and gets an exact zero gradient from
    every forward (as every other parameter gets a gradient, what ``DistributedDataParallel``
    and hand-written SGD loops expect).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_units: int,
        k: int,
        bias: bool = True,
        *,
        dynamics: str = "lstm",
        selection: str = "null_attention",
        num_input_heads: int = 1,
        input_key_size: int = 64,
        input_value_size: int = 400,
        num_comm_heads: int = 4,
        comm_key_size: int = 32,
        comm_value_size: int = 32,
        attention_dropout: float = 0.1,
        communication_update: str = "bounded",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size, self.num_units, self.k = check_rim_sizes(hidden_size, num_units, k)
        self.bias = bool(bias)
        self.dynamics = check_choice("dynamics", dynamics, DYNAMICS)
        self.selection = check_choice("selection", selection, SELECTION_RULES)
        self.num_input_heads = check_positive_int("num_input_heads", num_input_heads)
        self.input_key_size = check_positive_int("input_key_size", input_key_size)
        self.input_value_size = check_positive_int("input_value_size", input_value_size)
        self.num_comm_heads = check_positive_int("num_comm_heads", num_comm_heads)
        self.comm_key_size = check_positive_int("comm_key_size", comm_key_size)
        self.comm_value_size = check_positive_int("comm_value_size", comm_value_size)
        self.attention_dropout = check_probability("attention_dropout", attention_dropout)
        self.communication_update = check_choice("communication_update", communication_update, COMMUNICATION_UPDATES)
        self.unit_size = self.hidden_size // self.num_units

        kw = {"device": device, "dtype": dtype}
        u, d, g = self.num_units, self.unit_size, _GATES[self.dynamics] * self.unit_size
        heads_key = self.num_input_heads * self.input_key_size
        heads_value = self.num_input_heads * self.input_value_size
        comm_width = self.num_comm_heads * (2 * self.comm_key_size + self.comm_value_size)
        self.weight_key = nn.Parameter(torch.empty(heads_key, self.input_size, **kw))
        self.weight_value = nn.Parameter(torch.empty(heads_value, self.input_size, **kw))
        self.weight_query = nn.Parameter(torch.empty(u, d, heads_key, **kw))
        self.weight_ih = nn.Parameter(torch.empty(u, heads_value, g, **kw))
        self.weight_hh = nn.Parameter(torch.empty(u, d, g, **kw))
        self.weight_comm_qkv = nn.Parameter(torch.empty(u, d, comm_width, **kw))
        self.weight_comm_out = nn.Parameter(torch.empty(u, self.num_comm_heads * self.comm_value_size, d, **kw))
        if self.bias:
            self.bias_key = nn.Parameter(torch.empty(heads_key, **kw))
            self.bias_value = nn.Parameter(torch.empty(heads_value, **kw))
            self.bias_query = nn.Parameter(torch.empty(u, heads_key, **kw))
            self.bias_ih = nn.Parameter(torch.empty(u, g, **kw))
            self.bias_hh = nn.Parameter(torch.empty(u, g, **kw))
        else:
            for name in ("bias_key", "bias_value", "bias_query", "bias_ih", "bias_hh"):
                self.register_parameter(name, None)
        self._cache: tuple[tuple[object, ...], _Weights] | None = None
        self._fast_paths = True  # False: step-by-step path only (tests compare both)
        self.reset_parameters()

    def attention_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The attention mechanisms' parameters: input attention (query, key, value projections)
        and communication, as ``(name, parameter)`` pairs in registration order.

        What Madan et al. (ICLR 2021, "Fast and slow learning of recurrent independent
        mechanisms") train slowly; the rest (each unit's recurrent weights) is the fast group.
        """
        return [(n, p) for n, p in self.named_parameters(recurse=False) if n in _ATTENTION_PARAMETERS]

    def reset_parameters(self) -> None:
        """Uniform init in ``+-1/sqrt(fan_in)``, as ``nn.Linear`` and ``nn.LSTM`` (per unit)."""
        unit_bound = 1.0 / math.sqrt(self.unit_size)
        in_bound = 1.0 / math.sqrt(self.input_size)
        bounds = {
            "weight_key": in_bound,
            "weight_value": in_bound,
            "bias_key": in_bound,
            "bias_value": in_bound,
            "weight_comm_out": 1.0 / math.sqrt(self.num_comm_heads * self.comm_value_size),
        }
        for name, param in self.named_parameters(recurse=False):
            bound = bounds.get(name, unit_bound)
            nn.init.uniform_(param, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_units={self.num_units}, k={self.k}, "
            f"dynamics={self.dynamics!r}, selection={self.selection!r}, bias={self.bias}, "
            f"communication_update={self.communication_update!r}"
        )

    def forward(
        self, input: Tensor, hx: Tensor | tuple[Tensor, Tensor] | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """One step, like ``nn.LSTMCell`` (LSTM dynamics) or ``nn.GRUCell`` (GRU dynamics).

        :param input: ``(N, input_size)`` or unbatched ``(input_size,)``.
        :param hx: ``(h, c)`` each ``(N, hidden_size)`` for LSTM dynamics, ``h`` for GRU;
            unbatched ``(hidden_size,)``; ``None`` means zeros.
        :returns: ``(h', c')`` for LSTM dynamics, ``h'`` for GRU, shaped like the state.
        """
        if input.dim() not in (1, 2):
            raise ValueError(f"RIMCell: Expected input to be 1D or 2D, got {input.dim()}D input")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        states = self._cell_state(hx, x, batched)
        _, finals, _ = self.sequence(x.unsqueeze(0), states)
        finals = tuple(s if batched else s.squeeze(0) for s in finals)
        return finals if self.dynamics == "lstm" else finals[0]

    def _cell_state(self, hx: Tensor | tuple[Tensor, Tensor] | None, x: Tensor, batched: bool) -> tuple[Tensor, ...]:
        """Normalise a cell-level state to a tuple of ``(N, hidden_size)`` tensors."""
        n_states = 2 if self.dynamics == "lstm" else 1
        if hx is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            return (zeros,) * n_states
        states = tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)
        if len(states) != n_states:
            raise ValueError(f"RIMCell ({self.dynamics}): expected hx with {n_states} tensor(s), got {len(states)}")
        expected = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
        for i, s in enumerate(states):
            if tuple(s.shape) != expected:
                raise RuntimeError(f"RIMCell: Expected hx[{i}] size {expected}, got {tuple(s.shape)}")
        return states if batched else tuple(s.unsqueeze(0) for s in states)

    def sequence(
        self, x: Tensor, states: tuple[Tensor, ...], record: bool = False
    ) -> tuple[Tensor, tuple[Tensor, ...], RIMInfo | None]:
        """Run the layer over a time-major sequence.

        :param x: ``(L, N, input_size)``.
        :param states: ``(h, c)`` for LSTM dynamics or ``(h,)`` for GRU, each ``(N, hidden_size)``.
        :param record: if ``True``, also return a :class:`RIMInfo` with a layer dimension of 1.
        :returns: ``(output, final_states, info)``; ``output`` is ``(L, N, hidden_size)``, the
            final states have the shapes of ``states``, ``info`` is ``None`` unless recorded.
        """
        if x.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.shape[-1]}"
            )
        seq_len, batch = x.shape[0], x.shape[1]
        if batch == 0:
            return self._empty_batch(x, states, record)
        u, d, heads = self.num_units, self.unit_size, self.num_input_heads
        gates = _GATES[self.dynamics] * d
        dropping = self.training and self.attention_dropout > 0.0
        lstm = self.dynamics == "lstm"
        bounded = self.communication_update == "bounded"
        w = self._weights(dropping)
        if self._fast_paths and heads == 1 and not record:
            if torch.is_grad_enabled():
                return self._fused_sequence(x, states, w, dropping)
            loops = loops_for(x) if seq_len == 1 and not dropping else None
            if loops is not None:  # acting: one C++ call for the step
                return self._native_step(loops, x[0], states, w)
        fused_input = heads == 1 and not dropping  # input part is one addcmul

        # Input side for the whole sequence (one large matmul each).
        keys = F.linear(x, w.key).view(seq_len, batch, heads, self.input_key_size)  # (L, N, H, K) scaled
        proj = self._input_projection(x.reshape(seq_len * batch, self.input_size), w)  # (H, L*N, U*G)
        # (L, U, N, H, G) as a strided view: the per-step elementwise ops read it in place
        proj = proj.view(heads, seq_len, batch, u, gates).permute(1, 3, 2, 0, 4)
        proj = proj.squeeze(3) if heads == 1 else proj
        # unbind, not proj[t]: indexing would make backward scatter into a full (L, ...) zeros tensor per step
        proj_steps, key_steps = proj.unbind(0), keys.unbind(0)

        comm = _Communication(self, batch)
        k, full = self.k, self.k == u
        inactive = torch.zeros(u, batch, 1, dtype=torch.bool, device=x.device)
        h = states[0].view(batch, u, d).transpose(0, 1).contiguous()  # (U, N, d)
        c = states[1].view(batch, u, d).transpose(0, 1).contiguous() if lstm else h
        outputs: list[Tensor] = []
        log: list[tuple[Tensor, Tensor, Tensor | None]] = []
        for t in range(seq_len):
            hq = torch.bmm(h, w.h) if w.h_bias is None else torch.baddbmm(w.h_bias, h, w.h)  # (U, N, G + H*K)
            gh, query = hq.split(w.h_split, dim=-1)
            query = query.view(u, batch, heads, -1)  # (U, N, H, K)
            score = torch.linalg.vecdot(query, key_steps[t])  # (U, N, H) input minus null score
            attn = torch.sigmoid(score)  # (U, N, H) attention on the real input

            mask = None
            if not full:
                rank = self._selection_score(score, attn, query, w.null_key)  # (U, N, 1)
                # stable sort: ties go to the lower unit index (as jax.lax.top_k)
                top = rank.sort(dim=0, descending=True, stable=True).indices[:k]
                mask = inactive.scatter(0, top, True)  # (U, N, 1) True = active

            if lstm:
                if fused_input:
                    pre = torch.addcmul(gh, attn, proj_steps[t])
                else:
                    pre = gh + self._input_part(attn, proj_steps[t], w.null_proj, dropping)
                h_tilde, c = lstm_gates(pre, h, c, mask)
            else:
                if fused_input:
                    gx = torch.addcmul(w.x_bias, attn, proj_steps[t]) if w.x_bias is not None else attn * proj_steps[t]
                else:
                    gx = self._input_part(attn, proj_steps[t], w.null_proj, dropping)
                    gx = gx if w.x_bias is None else gx + w.x_bias
                h_tilde = gru_gates(gx, gh, h, mask)

            # Active units read from all units (inactive ones show their kept state).
            message, weights = comm(h_tilde, mask, record)
            h = h_tilde + message
            h = torch.tanh(h) if bounded else h
            h = h if mask is None else torch.where(mask, h, h_tilde)
            outputs.append(h)
            if record:
                active = torch.ones(u, batch, dtype=torch.bool, device=x.device) if mask is None else mask[..., 0]
                log.append((active.t(), attn.transpose(0, 1), weights))

        finals = tuple(s.transpose(0, 1).reshape(batch, self.hidden_size) for s in ((h, c) if lstm else (h,)))
        if seq_len == 1:  # acting: the output is the final hidden state
            out = finals[0].unsqueeze(0)
        else:
            out = torch.stack(outputs).permute(0, 2, 1, 3).reshape(seq_len, batch, self.hidden_size)
        info = None
        if record:
            info = RIMInfo(
                active=torch.stack([r[0] for r in log]).unsqueeze(0),
                input_attention=torch.stack([r[1] for r in log]).unsqueeze(0).detach(),
                comm_attention=torch.stack([r[2] for r in log]).unsqueeze(0).detach(),
            )
        return out, finals, info

    def _empty_batch(
        self, x: Tensor, states: tuple[Tensor, ...], record: bool
    ) -> tuple[Tensor, tuple[Tensor, ...], RIMInfo | None]:
        """:meth:`sequence` for a batch of size zero, as ``nn.LSTM`` runs it: empty outputs, and
        a backward through them gives every parameter a zero gradient.

        :param x: ``(L, 0, input_size)``; ``states`` as in :meth:`sequence`, each ``(0, hidden_size)``.
        """
        seq_len, u = x.shape[0], self.num_units
        params = [p for p in self.parameters() if p is not None]
        out = attach_zero_grad(x.new_zeros(seq_len, 0, self.hidden_size), x, *params)
        finals = tuple(attach_zero_grad(s.clone(), *params) for s in states)
        info = None
        if record:
            info = RIMInfo(
                active=torch.zeros(1, seq_len, 0, u, dtype=torch.bool, device=x.device),
                input_attention=x.new_zeros(1, seq_len, 0, u, self.num_input_heads),
                comm_attention=x.new_zeros(1, seq_len, 0, self.num_comm_heads, u, u),
            )
        return out, finals, info

    def _fused_sequence(
        self, x: Tensor, states: tuple[Tensor, ...], w: _Weights, dropping: bool
    ) -> tuple[Tensor, tuple[Tensor, ...], None]:
        """Training path of :meth:`sequence` for one input head: one autograd node
        (:mod:`rims.fused`). Same arguments and results, without recording."""
        seq_len, batch = x.shape[0], x.shape[1]
        u, d = self.num_units, self.unit_size
        lstm = self.dynamics == "lstm"
        keys = F.linear(x, w.key)  # (L, N, K) scaled
        proj = self._input_projection(x.reshape(seq_len * batch, self.input_size), w)  # (1, L*N, U*G)
        proj = proj.view(seq_len, batch, u, -1)  # (L, N, U, G)
        h0 = states[0].view(batch, u, d).transpose(0, 1).contiguous()  # (U, N, d)
        c0 = states[1].view(batch, u, d).transpose(0, 1).contiguous() if lstm else None
        spec = SequenceSpec(
            lstm=lstm,
            k=self.k,
            num_units=u,
            unit_size=d,
            key_size=self.input_key_size,
            comm_heads=self.num_comm_heads,
            comm_key=self.comm_key_size,
            comm_value=self.comm_value_size,
            comm_scale=1.0 / math.sqrt(self.comm_key_size),
            dropout=self.attention_dropout if dropping else 0.0,
            bounded=self.communication_update == "bounded",
            null_key=None if w.null_key is None else w.null_key.detach().view(-1),
        )
        hidden, c_n = fused_sequence(
            spec, proj, keys, h0, c0, w.h, w.h_bias, w.x_bias, w.null_proj, self.weight_comm_qkv, self.weight_comm_out
        )  # hidden (U, L + 1, N, d)
        out = hidden[:, 1:].permute(1, 2, 0, 3).reshape(seq_len, batch, self.hidden_size)
        finals = (hidden[:, seq_len],) if c_n is None else (hidden[:, seq_len], c_n)
        return out, tuple(s.transpose(0, 1).reshape(batch, self.hidden_size) for s in finals), None

    def _native_step(
        self, loops: ModuleType, x: Tensor, states: tuple[Tensor, ...], w: _Weights
    ) -> tuple[Tensor, tuple[Tensor, ...], None]:
        """One step without gradients through :mod:`rims._native` (acting in RL).

        :param x: ``(N, input_size)``; ``states`` as in :meth:`sequence`.
        :returns: as :meth:`sequence` for a sequence of length one.
        """
        lstm = self.dynamics == "lstm"
        keys = F.linear(x, w.key)  # (N, K) scaled
        proj = self._input_projection(x, w)[0]  # (N, U*G)
        null_key = None if w.null_key is None else w.null_key.view(-1)
        bounded = self.communication_update == "bounded"
        h, c = loops.inference_step(
            lstm, bounded, self.k, self.num_comm_heads, self.comm_key_size, self.comm_value_size,
            1.0 / math.sqrt(self.comm_key_size), proj, keys, states[0], states[1] if lstm else None,
            w.h, w.h_bias, w.x_bias, null_key, self.weight_comm_qkv, self.weight_comm_out,
        )  # fmt: skip
        return h.unsqueeze(0), ((h, c) if lstm else (h,)), None

    def _weights(self, dropping: bool) -> _Weights:
        """Weights rearranged for the fast path; cached while no gradient is recorded.

        Under ``torch.no_grad()`` (acting in RL) the rearranged tensors are reused until a
        parameter changes (any in-place update bumps its version counter), dtype or device.

        :param dropping: attention dropout is active, so the null value's term cannot be
            folded into a bias.
        """
        caching = not torch.is_grad_enabled()
        if caching:
            key = (dropping, *((p.data_ptr(), p._version) for p in self._parameters.values() if p is not None))
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
        weights = self._build_weights(dropping)
        if caching:
            weights = weights._replace(combined=self._combined_if_cheaper(weights.ih))
            self._cache = (key, weights)
        else:
            self._cache = None
        return weights

    def _combined_if_cheaper(self, w_ih: Tensor) -> Tensor | None:
        """``W_v W_ih`` ``(H, I, U*G)`` if multiplying by it beats the two-step product per row.

        Only worth building when it is reused, i.e. cached between acting steps.
        """
        size, value, width = self.input_size, self.input_value_size, w_ih.shape[2]
        if size * width >= size * value + value * width:  # per-row costs; building it is amortised
            return None
        return self._combined(w_ih)

    def _combined(self, w_ih: Tensor) -> Tensor:
        """``W_v W_ih`` per input head, ``(H, I, U*G)``, from ``w_ih`` ``(H, V, U*G)``."""
        value_weight = self.weight_value.view(self.num_input_heads, self.input_value_size, self.input_size)
        return torch.bmm(value_weight.transpose(1, 2), w_ih)

    def _build_weights(self, dropping: bool) -> _Weights:
        """Compute :class:`_Weights` from the parameters (differentiable)."""
        u, heads, key_size, value = self.num_units, self.num_input_heads, self.input_key_size, self.input_value_size
        gates = self.weight_ih.shape[2]
        w_ih = self.weight_ih.view(u, heads, value, gates)
        ih = w_ih.permute(1, 2, 0, 3).reshape(heads, value, u * gates)  # (H, V, U*G)
        lstm = self.dynamics == "lstm"
        null_proj = x_bias = h_bias = null_key = None
        if self.bias:
            # W_ih,i b_v per head: the null value's projection, folded into the input bias unless
            # attention dropout reweights the input and null candidates separately.
            # one (1 x V) @ (V x U*G) product per head on the rearranged weights
            per_head = torch.bmm(self.bias_value.view(heads, 1, value), ih).view(heads, u, gates).transpose(0, 1)
            null_proj = per_head if dropping else None
            x_bias = (self.bias_ih if dropping else self.bias_ih + per_head.sum(1)).unsqueeze(1)  # (U, 1, G)
            hh_bias = self.bias_hh.unsqueeze(1) + x_bias if lstm else self.bias_hh.unsqueeze(1)
            h_bias = torch.cat([hh_bias, self.bias_query.unsqueeze(1)], dim=-1)  # (U, 1, G + H*K)
            if self.selection == "input_score":
                null_key = self.bias_key.view(heads, key_size) / math.sqrt(key_size)
        return _Weights(
            key=attach_zero_grad(self.weight_key / math.sqrt(key_size), self.bias_key),  # bias_key: see the class
            ih=ih,
            h=torch.cat([self.weight_hh, self.weight_query], dim=-1),  # (U, d, G + H*K)
            h_bias=h_bias,
            h_split=(gates, heads * key_size),
            x_bias=None if lstm else x_bias,
            null_proj=null_proj,
            null_key=null_key,
            combined=None,
        )

    def _input_projection(self, x: Tensor, w: _Weights) -> Tensor:
        """``W_ih,i (x W_v)`` for every unit and input head, ``(H, rows, U * G)``.

        Computed as ``(x W_v) W_ih`` or as ``x (W_v W_ih)``, whichever needs fewer
        multiply-adds forward and, when gradients are recorded, backward (see
        :func:`_prefer_combined`); ``W_v W_ih`` is reused when cached (acting under ``no_grad``).

        :param x: ``(rows, input_size)``.
        :param w: rearranged weights; ``w.ih`` is ``(H, V, U * G)``.
        """
        if w.combined is not None:
            return torch.mm(x, w.combined[0]).unsqueeze(0) if len(w.combined) == 1 else torch.matmul(x, w.combined)
        rows = x.shape[0]
        heads, value, size = self.num_input_heads, self.input_value_size, self.input_size
        width = w.ih.shape[2]
        grad = torch.is_grad_enabled()
        if not _prefer_combined(rows, size, value, width, grad, grad and x.requires_grad):
            values = F.linear(x, self.weight_value).view(rows, heads, value).transpose(0, 1)  # (H, rows, V)
            return torch.bmm(values, w.ih)
        combined = self._combined(w.ih)  # (H, I, U*G)
        if heads == 1:  # a plain matrix product rather than a batch-of-one matmul
            return torch.mm(x, combined[0]).unsqueeze(0)
        return torch.matmul(x, combined)

    def _selection_score(self, score: Tensor, attn: Tensor, query: Tensor, null_key: Tensor | None) -> Tensor:
        """Score to rank units by (higher = selected), ``(U, N, 1)``.

        :param score: ``(U, N, H)`` input score minus null score (scaled).
        :param attn: ``(U, N, H)`` attention on the real input.
        :param query: ``(U, N, H, K)`` queries.
        :param null_key: ``(H, K)`` scaled null key (the key bias) for ``input_score``, else ``None``.
        """
        if self.selection == "null_attention":
            # Least mean attention on null == most mean attention on the input; with one head
            # the sigmoid is monotone, so the raw score ranks identically.
            return score if self.num_input_heads == 1 else attn.mean(-1, keepdim=True)
        raw = score if null_key is None else score + torch.linalg.vecdot(query, null_key)
        return raw.mean(-1, keepdim=True)

    def _input_part(self, attn: Tensor, proj: Tensor, null_proj: Tensor | None, dropping: bool) -> Tensor:
        """Input-side gate pre-activations of one step without the input bias, ``(U, N, G)``.

        :param attn: ``(U, N, H)`` attention on the real input.
        :param proj: ``(U, N, G)`` (one head) or ``(U, N, H, G)``: ``W_ih (x W_v)`` per head.
        :param null_proj: ``(U, H, G)``: ``W_ih b_v`` per head when dropping, else ``None``
            (then it is part of the input bias).
        :param dropping: apply attention dropout (training only).
        """
        if dropping:
            probs = torch.stack([attn, 1.0 - attn], dim=-1)  # (U, N, H, 2) over {input, null}
            probs = F.dropout(probs, self.attention_dropout, training=True)
            attn = probs[..., 0]
        part = attn * proj if self.num_input_heads == 1 else torch.matmul(attn.unsqueeze(-2), proj).squeeze(-2)
        if dropping and null_proj is not None:
            part = part + torch.bmm(probs.sum(-1), null_proj)  # weight of the null value per head
        return part


def _prefer_combined(rows: int, size: int, value: int, width: int, grad: bool, input_grad: bool) -> bool:
    """Whether ``x (W_v W_ih)`` costs fewer multiply-adds than ``(x W_v) W_ih``.

    Per input head, with ``R`` rows, input ``I``, value ``V`` and output ``W = U * G``:
    two-step forward ``R I V + R V W``, backward ``2 R V W + R I V`` (+ ``R V I`` for the
    input's gradient); combined forward ``I V W + R I W``, backward ``R I W + 2 I V W``
    (+ ``R W I`` for the input's gradient).
    """
    two_step = rows * (size * value + value * width)
    combined = size * value * width + rows * size * width
    if grad:
        two_step += 2 * rows * value * width + rows * size * value
        combined += rows * size * width + 2 * size * value * width
        if input_grad:
            two_step += rows * value * size
            combined += rows * width * size
    return combined < two_step


class _Weights(NamedTuple):
    """Parameters rearranged for one forward call (``U`` units, ``G`` gate width)."""

    key: Tensor  # (H*K, input_size) key weight divided by sqrt(K)
    ih: Tensor  # (H, V, U*G) per-unit input weights side by side
    h: Tensor  # (U, d, G + H*K) recurrent weights and query weights, one bmm per step
    h_bias: Tensor | None  # (U, 1, G + H*K); for LSTM includes the input-side bias
    h_split: tuple[int, int]  # (G, H*K)
    x_bias: Tensor | None  # (U, 1, G) input-side bias (GRU only)
    null_proj: Tensor | None  # (U, H, G) null value projection, only under attention dropout
    null_key: Tensor | None  # (H, K) scaled key bias, only for the input_score rule
    combined: Tensor | None  # (H, I, U*G) W_v W_ih, only when cached and cheaper per row


class _Communication:
    """Multi-head attention among units of one layer for one forward call.

    Built once per sequence so the per-step path does no attribute look-ups or reshapes of
    weights.
    """

    def __init__(self, cell: RIMCell, batch: int) -> None:
        self.u, self.batch = cell.num_units, batch
        self.heads, self.key, self.value = cell.num_comm_heads, cell.comm_key_size, cell.comm_value_size
        self.weight_qkv = cell.weight_comm_qkv
        self.weight_out = cell.weight_comm_out
        self.dropout = cell.attention_dropout if cell.training else 0.0
        self.grad = torch.is_grad_enabled()
        self.block_grad = self.grad and cell.weight_comm_qkv.requires_grad
        self.scale = 1.0 / math.sqrt(cell.comm_key_size)
        self.split = [self.heads * self.key, self.heads * self.key, self.heads * self.value]

    def __call__(self, states: Tensor, mask: Tensor | None, record: bool) -> tuple[Tensor, Tensor | None]:
        """Messages to every unit.

        :param states: ``(U, N, d)`` states shown to the attention (inactive units: kept state).
        :param mask: ``(U, N, 1)`` bool active mask or ``None`` when all units are active.
        :param record: also return the attention weights.
        :returns: ``(messages (U, N, d), weights (N, Hc, U, U) or None)``.
        """
        u, n, heads = self.u, self.batch, self.heads
        if mask is not None and self.block_grad:
            # Inactive units' key/value must not train their own projection at this step.
            qkv = _ActiveWeightGradBmm.apply(states, self.weight_qkv, mask)  # (U, N, Hc*(2K+V))
        else:
            qkv = torch.bmm(states, self.weight_qkv)
        if record or self.grad:
            read, weights = unit_attention(qkv, heads, self.key, self.value, self.scale, self.dropout)
            weights = weights if record else None
        else:
            # Inference: one fused op is fastest; no attention weights are needed.
            q, k, v = qkv.split(self.split, dim=-1)
            q = q.view(u, n, heads, self.key).permute(1, 2, 0, 3)  # (N, Hc, U, K)
            k = k.view(u, n, heads, self.key).permute(1, 2, 0, 3)
            v = v.view(u, n, heads, self.value).permute(1, 2, 0, 3)  # (N, Hc, U, V)
            read = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout, scale=self.scale)
            read = read.permute(2, 0, 1, 3).reshape(u, n, heads * self.value)  # (U, N, Hc*V)
            weights = None
        return torch.bmm(read, self.weight_out), weights


class _ActiveWeightGradBmm(torch.autograd.Function):
    """``bmm(x, w)`` whose weight gradient only comes from rows of active units.

    Forward: ``x (U, N, d) @ w (U, d, F) -> (U, N, F)``. Backward: ``grad_x`` is the usual
    ``grad @ w^T`` (state gradients flow for every row), ``grad_w = (x * mask)^T @ grad``.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, mask: Tensor) -> Tensor:
        ctx.save_for_backward(x, w, mask)
        return torch.bmm(x, w)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, w, mask = ctx.saved_tensors
        grad_x = torch.bmm(grad, w.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm((x * mask).transpose(1, 2), grad) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None
