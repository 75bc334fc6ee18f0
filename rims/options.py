"""The options contract of the RIM family: every option of a layer, its default, its allowed values.

:class:`RIMOptions` is the one home of the options. :class:`rims.RIMLSTM` / :class:`rims.RIMGRU`
build it once from their keyword arguments, :class:`rims.RIMCell` takes it, and everything else
that lists options derives its list from it: the JAX config (:mod:`rims.jax.config`), the agents'
typed model config and its key filter. ``tests/test_options.py`` fails when a derived list drifts.

Adding a selection rule: its name goes into :data:`SELECTION_RULES` here and its ranking into
:data:`rims.mechanisms.input_attention.RANKS`; the fast paths refuse it by name until they implement it
(:func:`rims.fast_paths.dispatch.unsupported`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rims._checks import (
    check_bool,
    check_choice,
    check_non_negative_float,
    check_non_negative_int,
    check_positive_int,
    check_probability,
)

SELECTION_RULES: tuple[str, ...] = ("null_attention", "input_score")
"""Names of the top-k selection rules.

``null_attention`` (default, the paper's rule): the ``k`` units that put the least attention
on the null input are active. ``input_score``: the ``k`` units with the highest raw
attention score on the real input are active.
"""

COMMUNICATION_UPDATES: tuple[str, ...] = ("bounded", "residual")
"""How an active unit adds what it read from the other units to its state.

``bounded`` (default): ``h = tanh(h_tilde + message)``, so ``|h| < 1`` for every step, as in
``nn.LSTM``/``nn.GRU``, and a state carried across windows cannot grow. ``residual`` (the
paper's update, Goyal et al. 2019, eq. in section 2.4): ``h = h_tilde + message``, which adds
to the state without bound.
"""

COMMUNICATIONS: tuple[str, ...] = ("pairwise", "workspace")
"""How the units of a layer exchange information: ``pairwise`` attention among units (RIMs) or
write/broadcast through a shared ``workspace`` (Goyal et al. 2022)."""

DYNAMICS: tuple[str, ...] = ("lstm", "gru")
"""Names of the per-unit recurrent dynamics."""

INITIAL_STATES: tuple[str, ...] = ("zeros", "learned", "random")
"""The state a layer starts from (``hx=None``; in the agents, at every episode start).

``zeros`` (default, as ``nn.LSTM``); ``learned``: a learned vector per layer (``initial_h``, and
``initial_c`` with LSTM dynamics, each ``(hidden_size,)``, i.e. a state per unit), expanded to the
batch; ``random``: a fresh draw ``N(0, initial_state_std^2)`` per element at every reset, from
torch's default generator on the input's device (see :mod:`rims.remedies`).
"""

_CHOICES: dict[str, str] = {
    "dynamics": "DYNAMICS",
    "selection": "SELECTION_RULES",
    "communication_update": "COMMUNICATION_UPDATES",
    "communication": "COMMUNICATIONS",
    "initial_state": "INITIAL_STATES",
}  # option -> name of the module-level tuple of its allowed values (read at call time)


def _option(default: Any, kind: str, help: str) -> Any:
    """A dataclass field of the contract: ``kind`` is ``choice``, ``positive_int``,
    ``optional_positive_int``, ``probability``, ``non_negative_float``, ``non_negative_int`` or
    ``bool``; ``help`` is shown by ``rims-train --info``."""
    return field(default=default, metadata={"kind": kind, "help": help})


@dataclass(frozen=True)
class RIMOptions:
    """Every option of one RIM-family layer beyond its sizes (``input_size``, ``hidden_size``,
    ``num_units``, ``k``, ``bias``), with the paper's defaults (Goyal et al. 2019, Table 3).

    Validated at construction: a wrong type raises ``TypeError``, a wrong value ``ValueError``,
    naming the option, what was expected and what was given. Options that depend on the sizes
    (``write_k <= k``, ``num_schemata <= num_units``) are checked by :meth:`check_sizes`.

    :param dynamics: ``"lstm"`` or ``"gru"``.
    :param selection: top-k rule, one of :data:`rims.SELECTION_RULES`.
    :param num_input_heads: heads of the input attention (paper: 1).
    :param input_key_size: key/query size of the input attention (paper: 64).
    :param input_value_size: value size per input head (paper: 400).
    :param num_comm_heads: heads of the communication attention (paper: 4).
    :param comm_key_size: key/query size per communication head (paper: 32).
    :param comm_value_size: value size per communication head (paper: 32).
    :param attention_dropout: dropout on both attention distributions, training only (paper: 0.1).
    :param communication_update: how units add the message, one of
        :data:`rims.COMMUNICATION_UPDATES`: ``"bounded"`` (default) ``h = tanh(h_tilde + m)``
        or ``"residual"`` (the paper's) ``h = h_tilde + m``.
    :param communication: ``"pairwise"`` (RIMs) or ``"workspace"`` (shared workspace, Goyal et
        al. 2022: :mod:`rims.mechanisms.workspace`).
    :param num_slots: workspace slots (``communication="workspace"``).
    :param slot_size: width of a workspace slot.
    :param write_k: units that may write into each slot per step, ``1 <= write_k <= k``
        (default ``None``: ``max(1, k // 2)``).
    :param num_schemata: ``None`` (default): every unit has its own recurrent weights (RIMs); an
        int ``1 <= S <= num_units``: the units share ``S`` weight sets and each active unit
        picks one per step (SCOFF, Goyal et al. 2021: :mod:`rims.mechanisms.schemata`).
    :param schema_key_size: key size of the schema choice.

    Remedies against a selection that collapses onto a fixed set of units (:mod:`rims.remedies`;
    every one off by default, so the defaults compute what the layer computed before them):

    :param selection_noise: standard deviation of Gaussian noise added to the ranking score in
        training mode only, for the top-k choice only (noisy top-k, Shazeer et al. 2017); 0: off.
    :param selection_noise_learned: scale the noise per unit by ``exp(s_i)``, ``s`` a learned
        parameter ``selection_noise_log_scale (U,)`` starting at 0.
    :param selection_noise_anneal: decay the noise linearly to 0 over this many training calls of
        the layer (counted in the buffer ``selection_noise_calls``); 0: constant.
    :param balance_rate: loss-free balancing (Wang et al. 2024): a per-unit bias buffer
        ``selection_bias (U,)`` added to the ranking score for the top-k choice, moved by this
        rate toward equal load after every training call; 0: off.
    :param balance_loss: coefficient ``alpha`` of the Switch-style balance loss
        ``alpha * U * sum_i f_i P_i`` (Fedus et al. 2021) that :meth:`rims.RIMLSTM.aux_loss`
        returns after a training call; 0: off.
    :param initial_state: one of :data:`INITIAL_STATES`.
    :param initial_state_std: standard deviation of the ``random`` initial state.
    """

    dynamics: str = _option("lstm", "choice", "per-unit recurrent dynamics: lstm or gru")
    num_input_heads: int = _option(1, "positive_int", "heads of the input attention")
    input_key_size: int = _option(64, "positive_int", "key/query size of the input attention")
    input_value_size: int = _option(400, "positive_int", "value size of the input attention")
    num_comm_heads: int = _option(4, "positive_int", "heads of the communication attention")
    comm_key_size: int = _option(32, "positive_int", "key/query size of the communication attention")
    comm_value_size: int = _option(32, "positive_int", "value size of the communication attention")
    attention_dropout: float = _option(0.1, "probability", "dropout on attention weights, in [0, 1)")
    communication_update: str = _option("bounded", "choice", "bounded: h = tanh(h~ + message); residual: h~ + message")
    selection: str = _option(
        "null_attention", "choice", "top-k rule: null_attention (least attention on null) or input_score"
    )
    communication: str = _option("pairwise", "choice", "pairwise or workspace (shared workspace)")
    num_slots: int = _option(4, "positive_int", "workspace slots")
    slot_size: int = _option(32, "positive_int", "workspace slot width")
    write_k: int | None = _option(
        None, "optional_positive_int", "writers per workspace slot, in [1, k]; null: max(1, k // 2)"
    )
    num_schemata: int | None = _option(
        None, "optional_positive_int", "SCOFF: shared weight sets, in [1, num_units]; null: per-unit weights"
    )
    schema_key_size: int = _option(32, "positive_int", "SCOFF: schema key size")
    selection_noise: float = _option(
        0.0, "non_negative_float", "noisy top-k: std of training-time noise on the ranking score; 0: off"
    )
    selection_noise_learned: bool = _option(False, "bool", "noisy top-k: learned per-unit log-scale of the noise")
    selection_noise_anneal: int = _option(
        0, "non_negative_int", "noisy top-k: training calls over which the noise decays linearly to 0; 0: constant"
    )
    balance_rate: float = _option(
        0.0, "non_negative_float", "loss-free balancing: update rate of the per-unit selection bias; 0: off"
    )
    balance_loss: float = _option(
        0.0, "non_negative_float", "Switch balance loss coefficient alpha (the core's aux loss); 0: off"
    )
    initial_state: str = _option("zeros", "choice", "initial state: zeros, learned (per unit) or random (per reset)")
    initial_state_std: float = _option(0.1, "non_negative_float", "std of the random initial state")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_option(f.name, getattr(self, f.name)))  # 0 -> 0.0

    def check_sizes(self, hidden_size: object, num_units: object, k: object) -> tuple[int, int, int]:
        """Validate the layer's sizes against these options; return ``(hidden_size, num_units, k)``.

        :raises TypeError: a size is not an int.
        :raises ValueError: a size is not positive, ``k`` is outside ``[1, num_units]``,
            ``hidden_size`` does not divide by ``num_units``, ``write_k`` is outside ``[1, k]`` or
            ``num_schemata`` outside ``[1, num_units]``.
        """
        hidden_size, num_units, k = check_rim_sizes(hidden_size, num_units, k)
        if self.write_k is not None and self.write_k > k:
            raise ValueError(
                f"write_k must be in [1, k] = [1, {k}] (only active units write), got write_k={self.write_k}"
            )
        if self.num_schemata is not None and self.num_schemata > num_units:
            raise ValueError(
                f"num_schemata must be in [1, num_units] = [1, {num_units}] (units share the schemata), "
                f"got num_schemata={self.num_schemata}"
            )
        return hidden_size, num_units, k

    def writers(self, k: int) -> int:
        """Units that may write into each workspace slot per step: ``write_k``, or ``max(1, k // 2)``."""
        return max(1, k // 2) if self.write_k is None else self.write_k

    def replace(self, **changes: Any) -> RIMOptions:
        """A copy with ``changes`` (validated); ``self`` when there are none.

        :raises TypeError: a name that is not an option.
        """
        if not changes:
            return self
        unknown = sorted(set(changes) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(f"unknown RIM option(s) {unknown}; valid options: {list(OPTION_NAMES)}")
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(RIMOptions)}

OPTION_NAMES: tuple[str, ...] = tuple(_FIELDS)
"""Names of every option, in the contract's order."""

STACK_OPTIONS: Mapping[str, Any] = {"num_layers": 1, "top_down": False}
"""Options of a stack of layers (:class:`rims.RIMLSTM` / :class:`rims.RIMGRU`) with their defaults:
``num_layers`` (as ``nn.LSTM``) and ``top_down`` (BRIMs, Mittal et al. 2020: every layer but the top
one also attends to the state of the layer above at the previous step)."""


def allowed_values(name: str) -> tuple[str, ...]:
    """The allowed values of a choice option (``selection`` -> :data:`SELECTION_RULES`).

    :raises KeyError: ``name`` is not a choice option.
    """
    return globals()[_CHOICES[name]]


def option_kind(name: str) -> str:
    """How option ``name`` is validated: ``choice``, ``positive_int``, ``optional_positive_int``, ``probability``,
    ``non_negative_float``, ``non_negative_int`` or ``bool``."""
    return _FIELDS[name].metadata["kind"]


def option_help(name: str) -> str:
    """One line on option ``name`` (its meaning and range)."""
    return _FIELDS[name].metadata["help"]


def check_option(name: str, value: object) -> object:
    """Validate one option's value on its own and return it (floats as ``float``).

    :raises TypeError: wrong type; :raises ValueError: outside the allowed values.
    """
    kind = option_kind(name)
    if kind == "choice":
        return check_choice(name, value, allowed_values(name))
    if kind == "probability":
        return check_probability(name, value)
    if kind == "non_negative_float":
        return check_non_negative_float(name, value)
    if kind == "non_negative_int":
        return check_non_negative_int(name, value)
    if kind == "bool":
        return check_bool(name, value)
    if kind == "optional_positive_int" and value is None:
        return None
    return check_positive_int(name, value)


def check_rim_sizes(hidden_size: object, num_units: object, k: object) -> tuple[int, int, int]:
    """Validate the RIM width arguments and return them.

    :param hidden_size: total hidden width (``num_units`` x unit size), as in ``nn.LSTM``.
    :param num_units: number of recurrent units.
    :param k: number of units active per step.
    :raises ValueError: if a size is not positive, ``k`` is outside ``[1, num_units]`` or
        ``hidden_size`` is not divisible by ``num_units``.
    """
    hidden_size = check_positive_int("hidden_size", hidden_size)
    num_units = check_positive_int("num_units", num_units)
    k = check_positive_int("k", k)
    if k > num_units:
        raise ValueError(f"k must be in [1, num_units] = [1, {num_units}], got k={k}")
    if hidden_size % num_units != 0:
        raise ValueError(
            f"hidden_size must be divisible by num_units={num_units} (hidden_size is the total width "
            f"of all units), got hidden_size={hidden_size}"
        )
    return hidden_size, num_units, k


DEFAULTS = RIMOptions()
"""Every option at its default (``DEFAULTS.selection`` is ``"null_attention"``)."""
