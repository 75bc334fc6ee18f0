"""One layer of the RIM family (Goyal et al. 2019, arXiv:1909.10893, section 2, and its successors).

Per step, for ``U = num_units`` units of width ``d = hidden_size // U``; each step is a
composition of mechanisms, one module each:

1. *Input attention* (:mod:`rims.mechanisms.input_attention`): unit ``i`` queries ``{x_t, null}`` (null =
   zeros) with ``q_i = h_i W_q,i + b_q,i``; keys ``x W_k + b_k`` (null key ``b_k``), values
   ``x W_v + b_v`` (null value ``b_v``). The softmax is per unit and head over the candidates,
   so the attention on the real input is ``a_i = sigmoid(q_i . (x W_k) / sqrt(key))``. With a
   top-down input (BRIMs, set up by the stacked modules' ``top_down=True``) the candidates are
   ``{x_t, top, null}``.
2. *Selection*: the ``k`` units with the least attention on null are active (``null_attention``,
   the paper's rule) or, as a named alternative, the ``k`` with the highest raw score on the
   real input (``input_score``; differs only when the key projection has a bias). Ties go to
   the lower unit index.
3. *Dynamics*: every unit has its own LSTM/GRU weights, applied to all units in one batched
   matmul; or (``num_schemata``, SCOFF, :mod:`rims.mechanisms.schemata`) the units share a few weight
   sets and each active unit picks one per step. Because the attended input is affine in
   ``a_i``, its projection by the input weights is computed for the whole sequence before the
   time loop (:mod:`rims.mechanisms.weights`).
4. *Communication*: multi-head attention from every unit over all units' states (inactive units
   show their kept state), added to the active units (:mod:`rims.mechanisms.communication`); or
   (``communication="workspace"``) write/broadcast through a small shared workspace
   (:mod:`rims.mechanisms.workspace`). The update is ``h = tanh(h_tilde + m)``
   (``communication_update="bounded"``, the default: ``|h| < 1`` at every step) or the paper's
   ``h = h_tilde + m`` (``"residual"``, unbounded on long carried streams).
5. Inactive units keep ``h`` and ``c`` bit-identical (with the workspace, they still receive its
   broadcast). A unit's parameters get no gradient from a step where it was inactive: its new
   state is discarded (``torch.where`` in :mod:`rims.mechanisms.dynamics`) and the weight gradient of its
   communication key/value projection is masked (gradient still reaches its state from earlier
   steps).

For the plain RIM (one input head, pairwise communication, per-unit weights, no top-down input),
when gradients are recorded (training) :meth:`RIMCell.sequence` runs the whole sequence as one
autograd node with a hand-written backward (:mod:`rims.fast_paths.fused`); a one-step call without
gradients (acting) is one C++ call when :mod:`rims.fast_paths.native` is available. Everything else runs
step by step with autograd (:mod:`rims.mechanisms.stepwise`). All paths compute the same function; tests
compare them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rims import remedies
from rims._checks import check_positive_int
from rims.cell_parameters import ATTENTION_PARAMETERS, init_parameters, register_parameters
from rims.fast_paths.dispatch import (
    FUSED_NATIVE,
    FUSED_PYTHON,
    NATIVE_STEP,
    STEPWISE,
    fused_call,
    has_fast_path,
    native_step,
    unsupported,
)
from rims.fast_paths.native import loops_for
from rims.info import RIMInfo
from rims.mechanisms.input_attention import Selection
from rims.mechanisms.layer import LayerParameters, LayerSpec
from rims.mechanisms.stepwise import StepRunner
from rims.mechanisms.weights import Weights, build_weights, combined_if_cheaper
from rims.mechanisms.zero_grad import attach_zero_grad
from rims.options import DEFAULTS, OPTION_NAMES, RIMOptions


class RIMCell(nn.Module):
    """A layer of Recurrent Independent Mechanisms, usable like ``nn.LSTMCell``/``nn.GRUCell``.

    ``forward`` runs one time step; :meth:`sequence` runs a whole sequence with the
    input-side work batched over time (what :class:`rims.RIMLSTM` uses).

    :param input_size: features of the input ``x``.
    :param hidden_size: total hidden width, ``num_units * unit_size``.
    :param num_units: number of units (mechanisms; object files with schemata).
    :param k: number of units active per step, ``1 <= k <= num_units``.
    :param bias: if ``False``, no projection of the layer has a bias.
    :param options: the layer's options (:class:`rims.options.RIMOptions`; ``None``: the defaults).
    :param option_values: options by name (``selection="input_score"``, ``num_schemata=2``, ...),
        replacing those of ``options``; every field of :class:`~rims.options.RIMOptions` is one.
    :param top_down_size: width of a top-down input (BRIMs); set by the stacked modules for
        every layer but the top one when ``top_down=True``. ``None``: no top-down input.
    :raises TypeError: an unknown option name or a value of the wrong type.
    :raises ValueError: an option or size outside its allowed values.

    Parameters (``U`` units, ``W`` weight sets (``U``, or ``S`` with schemata), ``d`` unit size,
    ``G = 4d`` for LSTM or ``3d`` for GRU, gate order ``i, f, o, g`` and ``r, z, n``):
    ``weight_key (H*K, input_size)``, ``weight_value (H*V, input_size)``, ``weight_query
    (U, d, H*K)``, ``weight_ih (W, H*V, G)``, ``weight_hh (W, d, G)``, with pairwise
    communication ``weight_comm_qkv (U, d, Hc*(2Kc+Vc))`` (query, key, value blocks, each
    head-major) and ``weight_comm_out (U, Hc*Vc, d)``, and, with ``bias``, ``bias_key``,
    ``bias_value``, ``bias_query (U, H*K)``, ``bias_ih (W, G)``, ``bias_hh (W, G)``. Options add
    their own (top-down: ``weight_key_top (H*K, top_down_size)``, ``weight_value_top``,
    ``bias_key_top``, ``bias_value_top``; schemata: ``weight_schema_query``,
    ``weight_schema_key (d, Ks)``, ``bias_schema_query (Ks,)``; workspace: ``workspace_slots
    (S, m)``, ``weight_write_query (m, Kc)``, ``weight_write_kv (U, d, Kc + m)``,
    ``weight_workspace_gate (2m, 2m)``, ``bias_workspace_gate (2m,)``, ``weight_read_query
    (U, d, Kc)``, ``weight_read_kv (m, Kc + Vc)``, ``weight_read_out (U, Vc, d)``).
    ``bias_key`` is also the null input's key, so it cancels in the softmax over candidates and
    cannot change the output; it only shifts the raw score ranked by the ``input_score`` rule.
    It stays a parameter so that saved state dicts keep loading, and gets an exact zero
    gradient from every forward (as every other parameter gets a gradient, what
    ``DistributedDataParallel`` and hand-written SGD loops expect), except through the balance
    loss (option ``balance_loss`` with the ``input_score`` rule), which differentiates the
    ranked score itself.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_units: int,
        k: int,
        bias: bool = True,
        *,
        options: RIMOptions | None = None,
        top_down_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **option_values: Any,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.options = (options or DEFAULTS).replace(**option_values)
        self.hidden_size, self.num_units, self.k = self.options.check_sizes(hidden_size, num_units, k)
        self.bias = bool(bias)
        for name in OPTION_NAMES:  # the options as attributes: cell.selection, cell.num_schemata, ...
            setattr(self, name, getattr(self.options, name))
        self.write_k = self.options.writers(self.k)
        self.top_down_size = None if top_down_size is None else check_positive_int("top_down_size", top_down_size)
        self.unit_size = self.hidden_size // self.num_units
        self.spec = self._spec()

        register_parameters(self, {"device": device, "dtype": dtype})
        self._cache: tuple[tuple[object, ...], Weights] | None = None
        self._fast_paths = True  # False: step-by-step path only (tests compare both)
        self._unsupported = unsupported(self.options)  # why the fast paths refuse these options, or None
        self._remedies_on = remedies.any_on(self.options)  # False: no per-call remedy bookkeeping
        self.reset_parameters()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deep-copy without the last call's balance loss and the remedies' in-block attributes."""
        return {k: v for k, v in super().__getstate__().items() if k not in remedies.TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle, also a layer pickled before the options contract: its options are rebuilt from
        its attributes (an option it predates takes its default)."""
        super().__setstate__(state)
        if "options" not in state:
            self.options = RIMOptions(**{n: state.get(n, getattr(DEFAULTS, n)) for n in OPTION_NAMES})
            self.write_k = self.options.writers(self.k)
        if "options" not in state or "spec" not in state:
            self.spec = self._spec()
        if "_unsupported" not in state:
            self._unsupported = unsupported(self.options)
        if "_remedies_on" not in state:
            self._remedies_on = remedies.any_on(self.options)

    def _spec(self) -> LayerSpec:
        """The layer's sizes and options, as its mechanisms read them."""
        return LayerSpec(
            self.options, self.input_size, self.hidden_size, self.num_units, self.k, self.bias, self.top_down_size
        )

    def layer_parameters(self) -> LayerParameters:
        """The layer's parameters as its mechanisms read them (``None`` where its options use none)."""
        return LayerParameters(**self._parameters)

    @property
    def plain(self) -> bool:
        """Whether the layer is the plain RIM (pairwise communication, per-unit weights, no top-down
        input, one input head): the structure with fast paths (:func:`rims.fast_paths.dispatch.has_fast_path`)."""
        return has_fast_path(self.options, self.top_down_size)

    def attention_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The attention mechanisms' parameters: input attention (query, key, value projections,
        top-down ones included), communication (pairwise or workspace) and the schema choice, as
        ``(name, parameter)`` pairs in registration order.

        What Madan et al. (ICLR 2021, "Fast and slow learning of recurrent independent
        mechanisms") train slowly; the rest (the recurrent weights of units or schemata) is the
        fast group.
        """
        return [(n, p) for n, p in self.named_parameters(recurse=False) if n in ATTENTION_PARAMETERS]

    def reset_parameters(self) -> None:
        """Uniform init in ``+-1/sqrt(fan_in)``, as ``nn.Linear`` and ``nn.LSTM`` (per unit); the workspace's
        forget-gate bias starts at 1 (:func:`rims.cell_parameters.init_parameters`)."""
        init_parameters(self)

    def extra_repr(self) -> str:
        s = (
            f"{self.input_size}, {self.hidden_size}, num_units={self.num_units}, k={self.k}, "
            f"dynamics={self.dynamics!r}, selection={self.selection!r}, bias={self.bias}, "
            f"communication_update={self.communication_update!r}"
        )
        if self.communication != "pairwise":
            s += f", communication={self.communication!r}, num_slots={self.num_slots}, write_k={self.write_k}"
        if self.num_schemata is not None:
            s += f", num_schemata={self.num_schemata}"
        if self.top_down_size is not None:
            s += f", top_down_size={self.top_down_size}"
        return s

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
            return remedies.initial_states(self, x.shape[0], x)
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
        :raises RuntimeError: for a layer with a top-down input, which runs only inside a stack
            (:class:`rims.RIMLSTM` with ``top_down=True``).
        """
        if x.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.shape[-1]}"
            )
        seq_len, batch = x.shape[0], x.shape[1]
        if batch == 0:
            return self._empty_batch(x, states, record)
        if self.top_down_size is not None:
            raise RuntimeError("a layer with a top-down input runs inside its stack (RIMLSTM/RIMGRU, top_down=True)")
        dropping = self.training and self.attention_dropout > 0.0
        path = self.path(x, record)
        # remedies: noise drawn before any dropout
        selection = remedies.begin_selection(self, seq_len, batch, x) if self._remedies_on else None
        if path in (FUSED_NATIVE, FUSED_PYTHON):
            result = fused_call(
                self.spec, self.layer_parameters(), x, states, self._weights(fold=not dropping), dropping, selection
            )
        elif path == NATIVE_STEP:  # acting: one C++ call for the step
            loops = loops_for(x)
            assert loops is not None  # path() saw them
            weights = self._weights(fold=True)
            result = native_step(self.spec, self.layer_parameters(), loops, x[0], states, weights, selection)
        else:
            runner = self.step_runner(states, x, record, selection=selection)
            for t in range(seq_len):
                runner.step(t)
            result = runner.finish()
        return remedies.finish_call(self, selection, result) if self._remedies_on else result

    def step_runner(
        self,
        states: tuple[Tensor, ...],
        x: Tensor | None,
        record: bool,
        top_down: bool = False,
        steps: int = 1,
        selection: Selection | None = None,
    ) -> StepRunner:
        """The step-by-step path (:class:`rims.mechanisms.stepwise.StepRunner`) of this layer over one
        sequence, in its current mode (attention dropout only in training).

        :param states: ``(h, c)`` or ``(h,)``, each ``(N, hidden_size)``; ``x``: ``(L, N, input_size)``
            or ``None`` to pass the input per step; ``record``, ``top_down``, ``steps``: as for
            :class:`~rims.mechanisms.stepwise.StepRunner`; ``selection``: the remedies' score offset
            (:func:`rims.remedies.begin_selection`), or ``None``.
        """
        dropout = self.attention_dropout if self.training and self.attention_dropout > 0.0 else 0.0
        weights = self._weights(fold=dropout == 0.0)
        p = self.layer_parameters()
        return StepRunner(self.spec, p, weights, states, x, record, dropout, top_down, steps, selection)

    def path(self, x: Tensor, record: bool = False) -> str:
        """Which path :meth:`sequence` takes for ``x`` in the current mode (training or eval, gradients
        recorded or not): :data:`rims.fast_paths.dispatch.FUSED_NATIVE` /
        :data:`~rims.fast_paths.dispatch.FUSED_PYTHON` (gradients recorded: one autograd node, its
        loops in C++ or Python), :data:`~rims.fast_paths.dispatch.NATIVE_STEP` (one step without
        gradients or attention dropout: one C++ call) or :data:`~rims.fast_paths.dispatch.STEPWISE`.

        :param x: ``(L, N, input_size)``; only its length, device, dtype matter.
        :param record: whether :class:`RIMInfo` is recorded (only the step-by-step path records).
        :raises NotImplementedError: the layer has the plain RIM's structure but an option value that
            the fast paths do not implement (named; no silent fallback onto another rule).
        """
        if not (self._fast_paths and self.plain and not record):
            return STEPWISE
        if self._unsupported is not None:
            raise NotImplementedError(self._unsupported)
        if torch.is_grad_enabled():
            return FUSED_PYTHON if loops_for(x) is None else FUSED_NATIVE
        dropping = self.training and self.attention_dropout > 0.0
        if x.shape[0] == 1 and not dropping and loops_for(x) is not None:
            return NATIVE_STEP
        return STEPWISE

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
            comm = x.new_zeros(1, seq_len, 0, self.num_comm_heads, u, u) if self.communication == "pairwise" else None
            info = RIMInfo(
                active=torch.zeros(1, seq_len, 0, u, dtype=torch.bool, device=x.device),
                input_attention=x.new_zeros(1, seq_len, 0, u, self.num_input_heads),
                comm_attention=comm,
            )
        return out, finals, info

    def _weights(self, fold: bool) -> Weights:
        """Parameters rearranged for one forward call (:mod:`rims.mechanisms.weights`); cached while no
        gradient is recorded.

        Under ``torch.no_grad()`` (acting in RL) the rearranged tensors are reused until a
        parameter changes (any in-place update bumps its version counter), dtype or device.

        :param fold: fold the null value's projection into the input bias (exact without
            attention dropout; see :func:`rims.mechanisms.weights.build_weights`).
        """
        caching = not torch.is_grad_enabled()
        if caching:
            key = (fold, *((p.data_ptr(), p._version) for p in self._parameters.values() if p is not None))
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
        weights = build_weights(self.spec, self.layer_parameters(), fold)
        if caching:
            weights = weights._replace(combined=combined_if_cheaper(self.spec, self.layer_parameters(), weights.ih))
            self._cache = (key, weights)
        else:
            self._cache = None
        return weights
