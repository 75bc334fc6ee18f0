"""Drop-in replacements for ``torch.nn.LSTM`` and ``torch.nn.GRU`` built from RIM layers.

``nn.LSTM(600, 300)`` becomes ``RIMLSTM(600, 300, 6, 4)``: 6 units of width 50, 4 active
per step; inputs, states, outputs and attributes follow the ``nn.LSTM`` contract.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from rims._checks import check_input_shape, check_positive_int, check_probability, check_state_shapes
from rims.cell import RIMCell
from rims.info import RIMInfo
from rims.mechanisms.zero_grad import attach_zero_grad
from rims.options import DEFAULTS, STACK_OPTIONS, RIMOptions
from rims.remedies import aux_loss, begin_selection, finish_selection, initial_states, remedy_parameters


class _RIMBase(nn.Module):
    """Stack of :class:`RIMCell` layers with the ``nn.LSTM``/``nn.GRU`` calling convention."""

    dynamics: str = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_units: int,
        k: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        selection: str = DEFAULTS.selection,
        num_input_heads: int = DEFAULTS.num_input_heads,
        input_key_size: int = DEFAULTS.input_key_size,
        input_value_size: int = DEFAULTS.input_value_size,
        num_comm_heads: int = DEFAULTS.num_comm_heads,
        comm_key_size: int = DEFAULTS.comm_key_size,
        comm_value_size: int = DEFAULTS.comm_value_size,
        attention_dropout: float = DEFAULTS.attention_dropout,
        communication_update: str = DEFAULTS.communication_update,
        communication: str = DEFAULTS.communication,
        num_slots: int = DEFAULTS.num_slots,
        slot_size: int = DEFAULTS.slot_size,
        write_k: int | None = DEFAULTS.write_k,
        num_schemata: int | None = DEFAULTS.num_schemata,
        schema_key_size: int = DEFAULTS.schema_key_size,
        selection_noise: float = DEFAULTS.selection_noise,
        selection_noise_learned: bool = DEFAULTS.selection_noise_learned,
        selection_noise_anneal: int = DEFAULTS.selection_noise_anneal,
        balance_rate: float = DEFAULTS.balance_rate,
        balance_loss: float = DEFAULTS.balance_loss,
        initial_state: str = DEFAULTS.initial_state,
        initial_state_std: float = DEFAULTS.initial_state_std,
        top_down: bool = STACK_OPTIONS["top_down"],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._refuse_unsupported(bidirectional, proj_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.dropout = check_probability("dropout", dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        self.batch_first = bool(batch_first)
        self.bias = bool(bias)
        options = RIMOptions(
            dynamics=self.dynamics,
            selection=selection,
            num_input_heads=num_input_heads,
            input_key_size=input_key_size,
            input_value_size=input_value_size,
            num_comm_heads=num_comm_heads,
            comm_key_size=comm_key_size,
            comm_value_size=comm_value_size,
            attention_dropout=attention_dropout,
            communication_update=communication_update,
            communication=communication,
            num_slots=num_slots,
            slot_size=slot_size,
            write_k=write_k,
            num_schemata=num_schemata,
            schema_key_size=schema_key_size,
            selection_noise=selection_noise,
            selection_noise_learned=selection_noise_learned,
            selection_noise_anneal=selection_noise_anneal,
            balance_rate=balance_rate,
            balance_loss=balance_loss,
            initial_state=initial_state,
            initial_state_std=initial_state_std,
        )
        kw: dict[str, Any] = {"options": options, "device": device, "dtype": dtype}
        if not isinstance(top_down, bool):
            raise TypeError(f"top_down must be a bool, got {top_down!r} of type {type(top_down).__name__}")
        self.top_down = top_down and self.num_layers > 1
        # BRIMs: every layer but the top one also attends to the state of the layer above
        top = [hidden_size if self.top_down and i < self.num_layers - 1 else None for i in range(self.num_layers)]
        first = RIMCell(input_size, hidden_size, num_units, k, bias, top_down_size=top[0], **kw)
        rest = [
            RIMCell(first.hidden_size, hidden_size, num_units, k, bias, top_down_size=top[i], **kw)
            for i in range(1, self.num_layers)
        ]
        self.layers = nn.ModuleList([first, *rest])
        self.input_size = first.input_size
        self.hidden_size = first.hidden_size
        self.num_units = first.num_units
        self.k = first.k

    @property
    def options(self) -> RIMOptions:
        """The options of every layer (:class:`rims.options.RIMOptions`), built once from the keywords."""
        return self.layers[0].options

    def initial_state(self, batch: int, like: Tensor) -> tuple[Tensor, ...]:
        """The state a call without ``hx`` starts from, per the ``initial_state`` option (zeros,
        learned or random; :mod:`rims.remedies`): ``(h_0, c_0)`` (LSTM) or ``(h_0,)`` (GRU), each
        ``(num_layers, batch, hidden_size)`` on ``like``'s device and dtype. The agents call it at
        every episode start (:class:`agents.cores.RecurrentCore`).
        """
        if self.options.initial_state == "zeros":
            zeros = like.new_zeros(self.num_layers, batch, self.hidden_size)
            return (zeros,) * self._n_states
        per_layer = [initial_states(layer, batch, like) for layer in self.layers]
        return tuple(torch.stack([states[j] for states in per_layer]) for j in range(self._n_states))

    def aux_loss(self) -> Tensor | None:
        """The sum over layers of the balance loss of the last call in training mode with gradients
        recorded (option ``balance_loss``, :func:`rims.remedies.switch_balance_loss`; a scalar,
        already weighted), or ``None`` when no layer computed one. What a trainer adds to its loss.
        """
        losses = [loss for loss in (aux_loss(layer) for layer in self.layers) if loss is not None]
        return None if not losses else torch.stack(losses).sum()

    def _refuse_unsupported(self, bidirectional: object, proj_size: object) -> None:
        """Refuse the ``nn.LSTM``/``nn.GRU`` arguments that RIMs do not implement, by name.

        :raises NotImplementedError: ``bidirectional=True`` or (LSTM) ``proj_size > 0``.
        :raises ValueError: ``proj_size > 0`` for GRU dynamics, as ``nn.GRU`` does.
        """
        name = type(self).__name__
        if bidirectional:
            raise NotImplementedError(
                f"{name} does not implement bidirectional=True (got bidirectional={bidirectional!r})"
            )
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"proj_size should be a non-negative integer, got {proj_size!r}")
        if proj_size and self.dynamics == "gru":
            raise ValueError(
                f"proj_size argument is only supported for LSTM, not RNN or GRU (got proj_size={proj_size})"
            )
        if proj_size:
            raise NotImplementedError(f"{name} does not implement proj_size > 0 (got proj_size={proj_size})")

    @property
    def _n_states(self) -> int:
        return 2 if self.dynamics == "lstm" else 1

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_units={self.num_units}, k={self.k}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.top_down:
            s += ", top_down=True"
        return s

    def flatten_parameters(self) -> None:
        """No-op, for code written against ``nn.LSTM`` (RIM weights are already contiguous)."""

    def _run(
        self, input: Tensor, hx: tuple[Tensor, ...] | None, return_info: bool
    ) -> tuple[Tensor, tuple[Tensor, ...], RIMInfo | None]:
        """Validate, run all layers and restore the caller's layout.

        :param input: ``(L, N, H_in)``, ``(N, L, H_in)`` if ``batch_first``, or ``(L, H_in)``.
        :param hx: tuple of ``(num_layers, N, hidden_size)`` (or ``(num_layers, hidden_size)``
            for unbatched input) tensors, or ``None`` for zeros.
        """
        name = type(self).__name__
        if isinstance(input, PackedSequence):
            raise TypeError(f"{name} does not support PackedSequence input; pad the batch instead")
        batched = check_input_shape(name, tuple(input.shape), self.input_size)
        self._check_dtypes(input, hx)
        if input.shape[0 if not batched or not self.batch_first else 1] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)  # (L, N, H_in)
        states = self._layer_states(hx, x, batched)

        if self.top_down and x.shape[1] > 0:
            x, finals, infos = self._run_top_down(x, states, return_info)
        else:
            finals, infos = [], []
            for i, layer in enumerate(self.layers):
                if i > 0 and self.dropout > 0 and self.training:
                    x = F.dropout(x, self.dropout, training=True)
                x, final, info = layer.sequence(x, tuple(s[i] for s in states), record=return_info)
                finals.append(final)
                if info is not None:
                    infos.append(info)
        if len(finals) == 1:
            out_states = tuple(s.unsqueeze(0) for s in finals[0])
        else:
            out_states = tuple(torch.stack([f[j] for f in finals]) for j in range(self._n_states))
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        if not batched:
            x = x.squeeze(1)
            out_states = tuple(s.squeeze(1) for s in out_states)
        record = None
        if return_info:
            record = RIMInfo.stack(infos)
            record = record if batched else record.squeeze_batch()
        return x, out_states, record

    def _run_top_down(
        self, x: Tensor, states: tuple[Tensor, ...], record: bool
    ) -> tuple[Tensor, list[tuple[Tensor, ...]], list[RIMInfo]]:
        """All layers interleaved per step (BRIMs, Mittal et al. 2020): at step ``t`` layer ``l``
        reads the layer below at ``t`` and the layer above at ``t - 1``; the top layer reads
        only the layer below.

        :param x: ``(L, N, input_size)``; ``states`` each ``(num_layers, N, hidden_size)``.
        :returns: the top layer's output ``(L, N, hidden_size)``, each layer's final states and records.
        """
        runners = [
            layer.step_runner(
                tuple(s[i] for s in states),
                x if i == 0 else None,
                record,
                top_down=i < len(self.layers) - 1,
                steps=x.shape[0],
                selection=begin_selection(layer, x.shape[0], x.shape[1], x),
            )
            for i, layer in enumerate(self.layers)
        ]
        batch, hidden = x.shape[1], self.hidden_size
        for t in range(x.shape[0]):
            below = None
            # the layer above's state at t - 1, taken before any layer steps at t: (N, hidden)
            above = [r.h.transpose(0, 1).reshape(batch, hidden) for r in runners[1:]]
            for i, runner in enumerate(runners):
                if i > 0 and self.dropout > 0 and self.training:
                    below = F.dropout(below, self.dropout, training=True)
                top = above[i] if i < len(above) else None
                h = runner.step(t, x_t=below, top=top)  # (U, N, d)
                below = h.transpose(0, 1).reshape(batch, hidden)
        results = [runner.finish() for runner in runners]
        for layer, runner in zip(self.layers, runners, strict=True):
            finish_selection(layer, runner.selection)
        infos = [info for _, _, info in results if info is not None]
        out = attach_zero_grad(results[-1][0], *(p for layer in self.layers for p in remedy_parameters(layer)))
        return out, [finals for _, finals, _ in results], infos

    def _check_dtypes(self, input: Tensor, hx: tuple[Tensor, ...] | None) -> None:
        """Input and states must have the weights' dtype, as ``nn.LSTM`` checks (not under autocast).

        :raises ValueError: the input's dtype differs (``nn.LSTM``'s message).
        :raises RuntimeError: a state's dtype differs from the input's.
        """
        weight = self.layers[0].weight_hh.dtype
        if input.dtype != weight and not torch.is_autocast_enabled(input.device.type):
            raise ValueError(
                f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight}). "
                f"Convert input: input.to({weight}), or convert model: model.to({input.dtype})"
            )
        for i, s in enumerate(hx or ()):
            if isinstance(s, Tensor) and s.dtype != input.dtype:
                raise RuntimeError(f"Expected hx[{i}] to have dtype {input.dtype} (the input's), got {s.dtype}")

    def _layer_states(self, hx: tuple[Tensor, ...] | None, x: Tensor, batched: bool) -> tuple[Tensor, ...]:
        """Check the caller's state and return it as ``(num_layers, N, hidden_size)`` tensors."""
        batch = x.shape[1]
        expected = (self.num_layers, batch, self.hidden_size) if batched else (self.num_layers, self.hidden_size)
        if hx is None:
            return self.initial_state(batch, x)
        check_state_shapes([tuple(s.shape) for s in hx], expected, batched)
        return tuple(hx) if batched else tuple(s.unsqueeze(1) for s in hx)


class RIMLSTM(_RIMBase):
    """Recurrent Independent Mechanisms with LSTM units; a drop-in for ``nn.LSTM``.

    :param input_size: features of the input.
    :param hidden_size: *total* hidden width (``num_units * unit_size``), as in ``nn.LSTM``.
    :param num_units: number of units; must divide ``hidden_size``.
    :param k: units active per step, ``1 <= k <= num_units``.
    :param num_layers: stacked RIM layers.
    :param bias: if ``False``, no projection has a bias.
    :param batch_first: input and output are ``(N, L, H)`` instead of ``(L, N, H)``.
    :param dropout: dropout on the outputs of all but the last layer, training only.

    Keyword-only RIM options: every field of :class:`rims.options.RIMOptions` but ``dynamics``
    (the class sets it), with its defaults (the paper's, Table 3), e.g. ``selection``
    (``"null_attention"`` or ``"input_score"``) and ``communication_update`` (``"bounded"``:
    ``h = tanh(h_tilde + m)``, so ``|h| < 1``; ``"residual"``: the paper's ``h_tilde + m``); also
    ``device``, ``dtype``. They are built once into ``self.options``, shared by every layer.

    The models after RIMs, as options (each runs step by step; see :class:`rims.RIMCell`):
    ``top_down=True`` with ``num_layers > 1`` (BRIMs, Mittal et al. 2020: every layer but the
    top one also attends to the state of the layer above at the previous step);
    ``communication="workspace"`` with ``num_slots``, ``slot_size``, ``write_k`` (shared
    workspace, Goyal et al. 2022); ``num_schemata`` with ``schema_key_size`` (SCOFF, Goyal et al.
    2021: units share that many weight sets and each active unit picks one per step). They
    combine freely.

    Call: ``output, (h_n, c_n) = rim(input, (h_0, c_0))`` with input ``(L, N, input_size)``
    (``(N, L, input_size)`` if ``batch_first``, or unbatched ``(L, input_size)``), states
    ``(num_layers, N, hidden_size)``; ``output`` is ``(L, N, hidden_size)``. Pass
    ``return_info=True`` to get a third element, a :class:`rims.RIMInfo`.
    """

    dynamics = "lstm"

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None, *, return_info: bool = False
    ) -> tuple[Tensor, tuple[Tensor, Tensor]] | tuple[Tensor, tuple[Tensor, Tensor], RIMInfo]:
        """See the class docstring."""
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"RIMLSTM expects hx to be a tuple (h_0, c_0) or None, got {type(hx).__name__}")
        out, (h_n, c_n), info = self._run(input, None if hx is None else tuple(hx), return_info)
        return (out, (h_n, c_n), info) if return_info else (out, (h_n, c_n))


class RIMGRU(_RIMBase):
    """Recurrent Independent Mechanisms with GRU units; a drop-in for ``nn.GRU``.

    Same arguments as :class:`RIMLSTM`. Call: ``output, h_n = rim(input, h_0)`` with
    ``h_0`` of shape ``(num_layers, N, hidden_size)`` (or ``None`` for zeros).
    """

    dynamics = "gru"

    def forward(
        self, input: Tensor, hx: Tensor | None = None, *, return_info: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, RIMInfo]:
        """See the class docstring."""
        if hx is not None and not isinstance(hx, Tensor):
            raise TypeError(f"RIMGRU expects hx to be a Tensor or None, got {type(hx).__name__}")
        out, (h_n,), info = self._run(input, None if hx is None else (hx,), return_info)
        return (out, h_n, info) if return_info else (out, h_n)
