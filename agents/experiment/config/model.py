"""Schemas of the ``model`` group: the recurrent core (``agents/cores.py``, ``rims/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from agents.experiment.config.checks import ConfigError, in_range, one_of, optional_positive_int, positive_int
from rims import SELECTION_RULES

PLAIN_CORES = ("lstm", "gru")
RIM_CORES = ("rim", "rim_gru")


@dataclass
class ModelConfig:
    """``model=lstm|gru``: a plain recurrent core."""

    core: str = field(default=MISSING, metadata={"help": "recurrent core: lstm, gru, rim or rim_gru"})
    hidden_size: int = field(default=128, metadata={"help": "total width of the recurrent state"})

    def __post_init__(self) -> None:
        one_of("model.core", self.core, PLAIN_CORES + RIM_CORES)
        positive_int("model.hidden_size", self.hidden_size)


@dataclass
class RIMModelConfig(ModelConfig):
    """``model=rim|rim_gru|rim_u6k4|brims|rim_sw|scoff``: the RIM core and the family's options.

    Keys set to null take the layer's default (``rims.RIMLSTM``'s keyword), which is what a
    config without the key did before these schemas.
    """

    core: str = field(default="rim", metadata={"help": "rim (LSTM dynamics) or rim_gru (GRU dynamics)"})
    num_units: int = field(default=4, metadata={"help": "RIM units; hidden_size must divide by it"})
    k: int = field(default=3, metadata={"help": "active units per step, in [1, num_units]"})
    num_input_heads: int = field(default=1, metadata={"help": "heads of the input attention"})
    input_key_size: int = field(default=64, metadata={"help": "key/query size of the input attention"})
    input_value_size: int = field(default=400, metadata={"help": "value size of the input attention"})
    num_comm_heads: int = field(default=4, metadata={"help": "heads of the communication attention"})
    comm_key_size: int = field(default=32, metadata={"help": "key/query size of the communication attention"})
    comm_value_size: int = field(default=32, metadata={"help": "value size of the communication attention"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention weights, in [0, 1)"})
    communication_update: str = field(
        default="bounded", metadata={"help": "bounded: h = tanh(h~ + message); residual: h~ + message"}
    )
    selection: str | None = field(
        default=None,
        metadata={"help": "top-k rule: null_attention (least attention on null) or input_score; null: null_attention"},
    )
    num_layers: int | None = field(default=None, metadata={"help": "stacked RIM layers; null: 1"})
    top_down: bool | None = field(
        default=None, metadata={"help": "BRIMs: lower layer attends to the upper one; null: false"}
    )
    communication: str | None = field(
        default=None, metadata={"help": "pairwise or workspace (shared workspace); null: pairwise"}
    )
    num_slots: int | None = field(default=None, metadata={"help": "workspace slots; null: 4"})
    slot_size: int | None = field(default=None, metadata={"help": "workspace slot width; null: 32"})
    write_k: int | None = field(
        default=None, metadata={"help": "writers per workspace slot, in [1, k]; null: max(1, k // 2)"}
    )
    num_schemata: int | None = field(
        default=None, metadata={"help": "SCOFF: shared weight sets, in [1, num_units]; null: per-unit weights"}
    )
    schema_key_size: int | None = field(default=None, metadata={"help": "SCOFF: schema key size; null: 32"})

    def __post_init__(self) -> None:
        one_of("model.core", self.core, RIM_CORES)
        for key in (
            "hidden_size", "num_units", "k", "num_input_heads", "input_key_size", "input_value_size",
            "num_comm_heads", "comm_key_size", "comm_value_size",
        ):  # fmt: skip
            positive_int(f"model.{key}", getattr(self, key))
        for key in ("num_layers", "num_slots", "slot_size", "write_k", "num_schemata", "schema_key_size"):
            optional_positive_int(f"model.{key}", getattr(self, key))
        units, k = self.num_units, self.k
        if not 1 <= k <= units:
            raise ConfigError(f"model.k must be in [1, model.num_units] = [1, {units}], got {k}")
        if self.hidden_size % units:
            raise ConfigError(f"model.hidden_size must be divisible by model.num_units={units}, got {self.hidden_size}")
        in_range("model.attention_dropout", self.attention_dropout, 0.0, 1.0, high_open=True)
        one_of("model.communication_update", self.communication_update, ("bounded", "residual"))
        if self.selection is not None:
            one_of("model.selection", self.selection, SELECTION_RULES)
        if self.communication is not None:
            one_of("model.communication", self.communication, ("pairwise", "workspace"))
        if self.write_k is not None and self.write_k > k:
            raise ConfigError(f"model.write_k must be in [1, model.k] = [1, {k}], got {self.write_k}")
        if self.num_schemata is not None and self.num_schemata > units:
            raise ConfigError(
                f"model.num_schemata must be in [1, model.num_units] = [1, {units}], got {self.num_schemata}"
            )
        if self.top_down and (self.num_layers or 1) < 2:
            raise ConfigError(f"model.top_down needs model.num_layers >= 2, got {self.num_layers}")


def model_schema(core: object) -> type[ModelConfig]:
    """The schema of a ``model`` node with ``core`` (plain cores and unknown names: :class:`ModelConfig`)."""
    return RIMModelConfig if core in RIM_CORES else ModelConfig
