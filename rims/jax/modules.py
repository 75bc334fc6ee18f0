"""Flax (linen) modules for RIMs, mirroring :class:`rims.RIMCell`, :class:`rims.RIMLSTM` and
:class:`rims.RIMGRU`.

Parameter names and shapes equal the PyTorch ``state_dict`` (``layers_0/weight_ih`` here is
``layers.0.weight_ih`` there), so :mod:`rims.jax.convert` moves weights both ways.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from rims._checks import check_input_shape, check_positive_int, check_probability, check_state_shapes
from rims.jax.config import JAX_OPTIONS, declare_options
from rims.jax.core import (
    RIMConfig,
    State,
    StepInfo,
    layer_sequence,
    project_inputs,
    selection_offset,
    step,
    zero_state,
)


def _uniform(bound: float) -> Any:
    def init(key: Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _rim_config(module: Any, input_size: int) -> RIMConfig:
    """:class:`RIMConfig` from a module's fields of the same names (validates them)."""
    names = [f.name for f in fields(RIMConfig) if f.name != "input_size"]
    return RIMConfig(input_size, **{name: getattr(module, name) for name in names})


class RIMCell(nn.Module):
    """One RIM layer. ``__call__`` is one step in Flax's carry convention (works with
    ``nn.scan`` and ``nn.RNN``); :meth:`sequence` runs a whole sequence with ``lax.scan``.

    Fields are the arguments of :class:`rims.RIMCell`; ``param_dtype`` sets the parameters'
    dtype. ``communication_update`` is ``"bounded"`` (default, ``h = tanh(h~ + m)`` for active
    units, ``|h| < 1``) or ``"residual"`` (the paper's ``h = h~ + m``). Attention dropout is
    active when ``deterministic=False`` and needs a ``'dropout'`` PRNG stream.

    The ranking-score remedies (:mod:`rims.remedies`): with ``selection_noise > 0`` and
    ``deterministic=False`` Gaussian noise from the ``'dropout'`` stream is added to the ranking
    score of the top-k choice; with ``balance_rate > 0`` the variable ``selection_bias`` ``(U,)`` of
    the ``'balance'`` collection is added to it (training and evaluation). The caller updates it
    between steps of its optimiser with :func:`rims.jax.core.update_balance` (JAX is functional: no
    update inside the call).
    """

    input_size: int
    hidden_size: int
    num_units: int
    k: int
    bias: bool = True
    declare_options(locals(), JAX_OPTIONS)
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        self.config  # noqa: B018 - validates the fields at construction, with the PyTorch errors
        super().__post_init__()

    @property
    def config(self) -> RIMConfig:
        """The layer's :class:`RIMConfig`."""
        return _rim_config(self, self.input_size)

    def setup(self) -> None:
        cfg = self.config
        self._names = tuple(cfg.param_shapes())
        for name, shape in cfg.param_shapes().items():
            setattr(self, name, self.param(name, _uniform(cfg.init_bound(name)), shape, self.param_dtype))
        self.selection_bias = None
        if cfg.balance_rate > 0:
            self.selection_bias = self.variable(
                "balance", "selection_bias", jnp.zeros, (cfg.num_units,), self.param_dtype
            )

    def _offset(self, deterministic: bool, length: int, batch: int, dtype: jnp.dtype) -> Array | None:
        """The ranking-score offset ``(L, U, N)`` of a call (:func:`rims.jax.core.selection_offset`)."""
        noise_rng = None if deterministic or self.selection_noise == 0.0 else self.make_rng("dropout")
        bias = None if self.selection_bias is None else self.selection_bias.value
        return selection_offset(self.config, length, batch, noise_rng, bias, dtype)

    def _params(self) -> dict[str, Array]:
        return {name: getattr(self, name) for name in self._names}

    def _rng(self, deterministic: bool) -> Array | None:
        if deterministic or self.attention_dropout == 0.0:
            return None
        return self.make_rng("dropout")

    def __call__(self, carry: State, x: Array, *, deterministic: bool = True) -> tuple[State, Array]:
        """One step.

        :param carry: ``(h, c)`` (LSTM) or ``(h,)`` (GRU), each ``(N, hidden_size)``.
        :param x: ``(N, input_size)``.
        :returns: ``(new_carry, h')``.
        """
        cfg = self.config
        keys, proj = project_inputs(self._params(), cfg, x)
        rng = self._rng(deterministic)
        offset = self._offset(deterministic, 1, x.shape[0], x.dtype)
        new, _ = step(self._params(), cfg, keys, proj, tuple(carry), rng, None if offset is None else offset[0])
        return new, new[0]

    def sequence(
        self,
        x: Array,
        state: State,
        episode_starts: Array | None = None,
        *,
        deterministic: bool = True,
        record: bool = True,
    ) -> tuple[Array, State, StepInfo | None]:
        """Time-major sequence: see :func:`rims.jax.core.layer_sequence`."""
        rng = self._rng(deterministic)
        offset = self._offset(deterministic, x.shape[0], x.shape[1], x.dtype)
        return layer_sequence(
            self._params(), self.config, x, state, episode_starts, rng, record=record, score_offset=offset
        )

    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> State:
        """Zero carry for inputs of shape ``(N, input_size)`` (``nn.RNN`` convention)."""
        del rng
        return zero_state(self.config, input_shape[0], self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class _RIMSequence(nn.Module):
    """Stack of :class:`RIMCell` layers with the ``nn.LSTM`` / ``nn.GRU`` calling convention."""

    dynamics: ClassVar[str] = ""
    input_size: int
    hidden_size: int
    num_units: int
    k: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    declare_options(locals(), [n for n in JAX_OPTIONS if n != "dynamics"])  # dynamics: a ClassVar of the subclass
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        check_positive_int("num_layers", self.num_layers)
        check_probability("dropout", self.dropout)
        _rim_config(self, self.input_size)  # validates the RIM arguments at construction
        super().__post_init__()

    def _cell(self, index: int) -> RIMCell:
        cfg = _rim_config(self, self.input_size if index == 0 else self.hidden_size)
        return RIMCell(**{f.name: getattr(cfg, f.name) for f in fields(cfg)}, param_dtype=self.param_dtype)

    def setup(self) -> None:
        self.layers = [self._cell(i) for i in range(self.num_layers)]

    def run(
        self,
        x: Array,
        state: tuple[Array, ...] | None,
        episode_starts: Array | None,
        deterministic: bool,
        return_info: bool,
    ) -> tuple[Array, tuple[Array, ...], StepInfo | None]:
        """Shared body of ``__call__``: states as a tuple of ``(num_layers, N, H)`` arrays."""
        name = type(self).__name__
        batched = check_input_shape(name, tuple(x.shape), self.input_size)
        seq = x if batched else x[:, None]
        if batched and self.batch_first:
            seq = jnp.swapaxes(seq, 0, 1)  # (L, N, H_in)
        batch = seq.shape[1]
        n_states = 2 if self.dynamics == "lstm" else 1
        if state is None:
            state = tuple(jnp.zeros((self.num_layers, batch, self.hidden_size), seq.dtype) for _ in range(n_states))
        else:
            expected = (self.num_layers, batch, self.hidden_size) if batched else (self.num_layers, self.hidden_size)
            check_state_shapes([tuple(s.shape) for s in state], expected, batched)
            state = state if batched else tuple(s[:, None] for s in state)
        starts = None
        if episode_starts is not None:
            starts = episode_starts if batched else episode_starts[:, None]
            if batched and self.batch_first:
                starts = jnp.swapaxes(starts, 0, 1)
        finals, infos = [], []
        for i, layer in enumerate(self.layers):
            if i > 0 and self.dropout > 0.0 and not deterministic:
                keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout, seq.shape)
                seq = jnp.where(keep, seq / (1.0 - self.dropout), 0.0)
            layer_state = tuple(s[i] for s in state)
            seq, final, info = layer.sequence(seq, layer_state, starts, deterministic=deterministic, record=return_info)
            finals.append(final)
            infos.append(info)
        out_state = tuple(jnp.stack([f[j] for f in finals]) for j in range(n_states))
        if batched and self.batch_first:
            seq = jnp.swapaxes(seq, 0, 1)
        if not batched:
            seq = seq[:, 0]
            out_state = tuple(s[:, 0] for s in out_state)
        info = None
        if return_info:
            info = StepInfo(*(jnp.stack([getattr(r, f) for r in infos]) for f in StepInfo._fields))
            if not batched:
                info = StepInfo(*(a[:, :, 0] for a in info))
        return seq, out_state, info


class RIMLSTM(_RIMSequence):
    """Flax twin of :class:`rims.RIMLSTM`: ``output, (h_n, c_n) = module.apply(vars, x, (h_0, c_0))``.

    Fields are the PyTorch module's arguments (``communication_update`` as in :class:`RIMCell`)
    and ``param_dtype``. Extra keywords of the call: ``episode_starts`` (``(L, N)`` or
    batch-first ``(N, L)``; zero the state of a batch element before that step),
    ``deterministic`` (``False`` enables dropout; needs a ``'dropout'`` rng) and
    ``return_info`` (adds a :class:`StepInfo` whose arrays have leading ``(num_layers, L)``
    dimensions).
    """

    dynamics: ClassVar[str] = "lstm"

    def __call__(
        self,
        x: Array,
        state: tuple[Array, Array] | None = None,
        *,
        episode_starts: Array | None = None,
        deterministic: bool = True,
        return_info: bool = False,
    ) -> tuple[Any, ...]:
        out, (h, c), info = self.run(x, state, episode_starts, deterministic, return_info)
        return (out, (h, c), info) if return_info else (out, (h, c))


class RIMGRU(_RIMSequence):
    """Flax twin of :class:`rims.RIMGRU`: ``output, h_n = module.apply(vars, x, h_0)``.

    Same extra keywords as :class:`RIMLSTM`.
    """

    dynamics: ClassVar[str] = "gru"

    def __call__(
        self,
        x: Array,
        state: Array | None = None,
        *,
        episode_starts: Array | None = None,
        deterministic: bool = True,
        return_info: bool = False,
    ) -> tuple[Any, ...]:
        out, (h,), info = self.run(x, None if state is None else (state,), episode_starts, deterministic, return_info)
        return (out, h, info) if return_info else (out, h)
