"""The plain RIM layer's fast paths, called by :meth:`rims.RIMCell.sequence`.

Training (gradients recorded): the whole sequence as one autograd node with a hand-written
backward (:mod:`rims.fast_paths.fused`). Acting (one step, no gradients, no attention dropout): one call
into the C++ loops (:mod:`rims.fast_paths.native`). Both compute what the step-by-step path
(:mod:`rims.mechanisms.stepwise`) computes, up to rounding; tests compare them.

Shapes: ``L`` steps, ``N`` batch, ``U`` units of width ``d``, ``G`` gate width, ``K`` input key size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from rims.fast_paths.fused import SequenceSpec, fused_sequence
from rims.mechanisms.input_attention import Selection
from rims.mechanisms.layer import LayerParameters, LayerSpec
from rims.mechanisms.weights import Weights, input_projection
from rims.options import DEFAULTS, OPTION_NAMES, RIMOptions

FUSED_NATIVE = "fused C++"
"""Training path: the sequence as one autograd node, its time loops in C++ (:mod:`rims.fast_paths.native`)."""
FUSED_PYTHON = "fused Python"
"""Training path without the C++ loops (``RIMS_NATIVE=0``, no compiler, not CPU):
:mod:`rims.fast_paths.python_loops`."""
NATIVE_STEP = "C++ step"
"""Acting path: one step without gradients or attention dropout, one C++ call."""
STEPWISE = "step by step"
"""Every other case (the models after RIMs, recorded runs, ...): :mod:`rims.mechanisms.stepwise`, with autograd."""

ANY = None
"""In :data:`SUPPORTED`: every valid value of the option."""

STRUCTURE: Mapping[str, tuple[object, ...]] = {
    "communication": ("pairwise",),
    "num_schemata": (None,),
    "num_input_heads": (1,),
}
"""The layer structure the fast paths compute (the plain RIM, and no top-down input); a layer of
another structure runs step by step, which implements every option."""

SUPPORTED: Mapping[str, tuple[object, ...] | None] = {
    "dynamics": ("lstm", "gru"),
    "selection": ("null_attention", "input_score"),
    "communication_update": ("bounded", "residual"),
    "input_key_size": ANY,
    "input_value_size": ANY,
    "num_comm_heads": ANY,
    "comm_key_size": ANY,
    "comm_value_size": ANY,
    "attention_dropout": ANY,
    "num_slots": ANY,  # workspace only: not read by the plain RIM
    "slot_size": ANY,
    "write_k": ANY,
    "schema_key_size": ANY,
    "selection_noise": ANY,  # the remedies (rims.remedies): an additive score offset and the masks read back
    "selection_noise_learned": ANY,
    "selection_noise_anneal": ANY,
    "balance_rate": ANY,
    "balance_loss": ANY,
    "initial_state": ANY,  # the state given to the layer: any state runs on every path
    "initial_state_std": ANY,
    **STRUCTURE,
}
"""The values of every option that the fused node (:mod:`rims.fast_paths.fused`, :mod:`rims.fast_paths.python_loops`,
``rims/fast_paths/csrc/fused_loop.cpp``) and the C++ acting step implement. An option missing here is
supported at its default value only; any other value is refused (:func:`unsupported`)."""


def has_fast_path(options: RIMOptions, top_down_size: int | None) -> bool:
    """Whether a layer with ``options`` (and a top-down input of ``top_down_size``) has the plain
    RIM's structure, which the fast paths compute; every other layer runs step by step."""
    return top_down_size is None and all(getattr(options, name) in values for name, values in STRUCTURE.items())


def unsupported(options: RIMOptions) -> str | None:
    """Why the fast paths cannot run a layer with ``options``: the first option value they do not
    implement, by name (``None``: they implement them all). A layer that would take a fast path
    raises this as ``NotImplementedError`` rather than fall back silently onto another rule.
    """
    for name in OPTION_NAMES:
        value = getattr(options, name)
        values = SUPPORTED.get(name, (getattr(DEFAULTS, name),))
        if values is not ANY and value not in values:
            return (
                f"the fast paths of the plain RIM (fused autograd node, C++ loops) do not implement "
                f"{name}={value!r}; they implement {name} in {list(values)}. Implement it in "
                "rims/fast_paths/python_loops.py and rims/fast_paths/csrc/fused_loop.cpp and list it in "
                "rims.fast_paths.dispatch.SUPPORTED"
            )
    return None


def fused_call(
    spec: LayerSpec,
    p: LayerParameters,
    x: Tensor,
    states: tuple[Tensor, ...],
    w: Weights,
    dropping: bool,
    selection: Selection | None = None,
) -> tuple[Tensor, tuple[Tensor, ...], None]:
    """Training path of :meth:`rims.RIMCell.sequence` for one input head: one autograd node
    (:mod:`rims.fast_paths.fused`). Same arguments and results, without recording.

    :param spec: the layer's sizes and options; ``p``: its parameters.
    :param x: ``(L, N, input_size)``; ``states`` ``(h, c)`` or ``(h,)``, each ``(N, hidden_size)``.
    :param w: the layer's weights for this call; ``dropping``: attention dropout is on.
    :param selection: the remedies' score offset ``(L, U, N, 1)`` for the top-k choice, and the
        masks and ranking scores they read back (filled here), or ``None``.
    """
    seq_len, batch = x.shape[0], x.shape[1]
    u, d = spec.num_units, spec.unit_size
    o = spec.options
    lstm = o.dynamics == "lstm"
    keys = F.linear(x, w.key)  # (L, N, K) scaled
    proj = input_projection(spec, p, x.reshape(seq_len * batch, spec.input_size), w)  # (1, L*N, U*G)
    proj = proj.view(seq_len, batch, u, -1)  # (L, N, U, G)
    h0 = states[0].view(batch, u, d).transpose(0, 1).contiguous()  # (U, N, d)
    c0 = states[1].view(batch, u, d).transpose(0, 1).contiguous() if lstm else None
    sequence = SequenceSpec(
        lstm=lstm,
        k=spec.k,
        num_units=u,
        unit_size=d,
        key_size=o.input_key_size,
        comm_heads=o.num_comm_heads,
        comm_key=o.comm_key_size,
        comm_value=o.comm_value_size,
        comm_scale=1.0 / math.sqrt(o.comm_key_size),
        dropout=o.attention_dropout if dropping else 0.0,
        bounded=o.communication_update == "bounded",
        null_key=None if w.null_key is None else w.null_key.detach().view(-1),
        score_offset=None if selection is None else selection.offset,
        keep_mask=selection is not None and selection.keep_masks,
    )
    hidden, c_n, *mask = fused_sequence(
        sequence, proj, keys, h0, c0, w.h, w.h_bias, w.x_bias, w.null_proj, p.weight_comm_qkv, p.weight_comm_out
    )  # hidden (U, L + 1, N, d)
    if selection is not None and mask:
        selection.masks = mask[0].transpose(0, 1)  # (L, U, N, 1)
        if selection.keep_logits:
            selection.logits = _ranks(spec, hidden[:, :seq_len], keys, w)
    out = hidden[:, 1:].permute(1, 2, 0, 3).reshape(seq_len, batch, spec.hidden_size)
    finals = (hidden[:, seq_len],) if c_n is None else (hidden[:, seq_len], c_n)
    return out, tuple(s.transpose(0, 1).reshape(batch, spec.hidden_size) for s in finals), None


def _ranks(spec: LayerSpec, hidden: Tensor, keys: Tensor, w: Weights) -> Tensor:
    """The ranking scores of a fused call, recomputed with autograd from its states (for the
    remedies' balance loss), ``(L, U, N, 1)``: ``<q, key>`` (plus ``<q, null key>`` for ``input_score``).

    :param hidden: ``(U, L, N, d)`` the state before every step; ``keys`` ``(L, N, K)`` scaled.
    """
    u, steps, batch, d = hidden.shape
    gates = w.h.shape[-1] - spec.options.input_key_size
    query = torch.bmm(hidden.reshape(u, steps * batch, d), w.h[..., gates:])  # (U, L*N, K)
    if w.h_bias is not None:
        query = query + w.h_bias[..., gates:]
    query = query.view(u, steps, batch, -1)
    score = torch.linalg.vecdot(query, keys)  # (U, L, N)
    if w.null_key is not None:
        score = score + torch.linalg.vecdot(query, w.null_key.view(-1))
    return score.transpose(0, 1).unsqueeze(-1)


def native_step(
    spec: LayerSpec,
    p: LayerParameters,
    loops: ModuleType,
    x: Tensor,
    states: tuple[Tensor, ...],
    w: Weights,
    selection: Selection | None = None,
) -> tuple[Tensor, tuple[Tensor, ...], None]:
    """One step of a layer without gradients through :mod:`rims.fast_paths.native` (acting in RL).

    :param spec: the layer's sizes and options; ``p``: its parameters; ``loops``: the C++ loops.
    :param x: ``(N, input_size)``; ``states`` as in :meth:`rims.RIMCell.sequence`.
    :param selection: the remedies' score offset (``(1, U, N, 1)``: the balancing bias), or ``None``.
    :returns: as :meth:`rims.RIMCell.sequence` for a sequence of length one.
    """
    o = spec.options
    lstm = o.dynamics == "lstm"
    keys = F.linear(x, w.key)  # (N, K) scaled
    proj = input_projection(spec, p, x, w)[0]  # (N, U*G)
    null_key = None if w.null_key is None else w.null_key.view(-1)
    bounded = o.communication_update == "bounded"
    offset = None if selection is None or selection.offset is None else selection.offset[0]  # (U, N, 1)
    h, c = loops.inference_step(
        lstm, bounded, spec.k, o.num_comm_heads, o.comm_key_size, o.comm_value_size,
        1.0 / math.sqrt(o.comm_key_size), proj, keys, states[0], states[1] if lstm else None,
        w.h, w.h_bias, w.x_bias, null_key, offset, p.weight_comm_qkv, p.weight_comm_out,
    )  # fmt: skip
    return h.unsqueeze(0), ((h, c) if lstm else (h,)), None
