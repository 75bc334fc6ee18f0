"""Settings and per-step buffers of one fused RIM training call (:mod:`rims.fast_paths.fused`).

:class:`SequenceSpec` holds the static settings of a call; :class:`Buffers` the per-step values
the backward needs, laid out ``(U, L, N, ...)`` so the weight gradients come from one batched
matmul each. Both the C++ loops (:mod:`rims.fast_paths.native`) and the Python loops
(:mod:`rims.fast_paths.python_loops`) fill the same buffers.

Shapes: ``L`` steps, ``N`` batch, ``U`` units of width ``d``, ``K`` input key size, ``Hc``
communication heads with key ``Kc`` and value ``Vc``.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from rims.fast_paths import scratch


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
    score_offset: Tensor | None = None  # (L, U, N, 1) added to the ranking score for top-k (rims.remedies)
    keep_mask: bool = False  # the node also returns the active mask (U, L, N, 1) (rims.remedies)


class Buffers:
    """Per-step values the backward needs, each ``(U, L, ...)`` unless noted.

    All but ``hidden`` (an output of the autograd node) come from :mod:`rims.fast_paths.scratch` and go
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
        tensor = scratch.take(shape, like)
        self._owned.append(tensor)
        return tensor

    def __del__(self) -> None:
        if scratch is not None:  # None only at interpreter shutdown
            scratch.give(self._owned)
