"""What a mechanism reads of a RIM-family layer: its sizes and options (:class:`LayerSpec`) and
its parameters (:class:`LayerParameters`), never the layer module itself.

:class:`rims.RIMCell` owns both: the spec is fixed at construction, the parameters are its
registered ``nn.Parameter`` s (``None`` where an option does not use one), gathered per call.

Shapes: ``U`` units of width ``d``, ``W`` weight sets (``U``, or ``S`` schemata), ``G`` gate
width (``4d`` LSTM, ``3d`` GRU), ``H`` input heads with key ``K`` and value ``V``, ``I`` input
size, ``T`` top-down size, ``Hc`` communication heads with key ``Kc`` and value ``Vc``, ``Ks``
schema key size, ``S`` workspace slots of size ``m``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor

from rims.options import RIMOptions


@dataclass(frozen=True)
class LayerSpec:
    """A layer's sizes and options.

    :param options: the layer's options.
    :param input_size: ``I``; ``hidden_size``: ``U * d``; ``num_units``: ``U``; ``k``: active units per step.
    :param bias: whether the layer's projections have biases.
    :param top_down_size: ``T``, the width of a top-down input (BRIMs), or ``None``.
    """

    options: RIMOptions
    input_size: int
    hidden_size: int
    num_units: int
    k: int
    bias: bool
    top_down_size: int | None = None

    @property
    def unit_size(self) -> int:
        """``d``, the width of one unit."""
        return self.hidden_size // self.num_units

    @property
    def write_k(self) -> int:
        """How many units write to each workspace slot per step (:meth:`RIMOptions.writers`)."""
        return self.options.writers(self.k)


class LayerParameters(NamedTuple):
    """A layer's parameters, in :class:`rims.RIMCell`'s registration order (``None``: not used by
    its options; see :class:`rims.RIMCell` for what each is)."""

    weight_key: Tensor  # (H*K, I)
    weight_value: Tensor  # (H*V, I)
    weight_query: Tensor  # (U, d, H*K)
    weight_ih: Tensor  # (W, H*V, G)
    weight_hh: Tensor  # (W, d, G)
    weight_comm_qkv: Tensor | None  # (U, d, Hc*(2Kc+Vc)), pairwise communication
    weight_comm_out: Tensor | None  # (U, Hc*Vc, d)
    bias_key: Tensor | None  # (H*K,)
    bias_value: Tensor | None  # (H*V,)
    bias_query: Tensor | None  # (U, H*K)
    bias_ih: Tensor | None  # (W, G)
    bias_hh: Tensor | None  # (W, G)
    weight_key_top: Tensor | None  # (H*K, T), top-down input
    weight_value_top: Tensor | None  # (H*V, T)
    bias_key_top: Tensor | None  # (H*K,)
    bias_value_top: Tensor | None  # (H*V,)
    weight_schema_query: Tensor | None  # (d, Ks), schemata
    weight_schema_key: Tensor | None  # (d, Ks)
    bias_schema_query: Tensor | None  # (Ks,)
    workspace_slots: Tensor | None  # (S, m), shared workspace
    weight_write_query: Tensor | None  # (m, Kc)
    weight_write_kv: Tensor | None  # (U, d, Kc + m)
    weight_workspace_gate: Tensor | None  # (2m, 2m)
    bias_workspace_gate: Tensor | None  # (2m,)
    weight_read_query: Tensor | None  # (U, d, Kc)
    weight_read_kv: Tensor | None  # (m, Kc + Vc)
    weight_read_out: Tensor | None  # (U, Vc, d)
    selection_noise_log_scale: Tensor | None = None  # (U,), the remedies (rims.remedies): not read by mechanisms
    initial_h: Tensor | None = None  # (U*d,)
    initial_c: Tensor | None = None  # (U*d,)
