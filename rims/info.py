"""Opt-in introspection of a RIM forward pass (which units were active, attention weights)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RIMInfo:
    """Per-step record of a RIM forward pass, returned only when asked for.

    Tensors are time-major whatever ``batch_first`` says; for unbatched input the batch
    dimension ``N`` is absent. ``U`` is ``num_units``, ``H`` the number of input heads and
    ``Hc`` the number of communication heads.

    :ivar active: ``(num_layers, L, N, U)`` bool, ``True`` where the unit was active.
    :ivar input_attention: ``(num_layers, L, N, U, H)`` attention each unit put on the real
        input (the rest went to the null input), before attention dropout.
    :ivar comm_attention: ``(num_layers, L, N, Hc, U, U)`` communication attention weights
        (query unit, key unit), before attention dropout. Rows of inactive units are computed
        but not used.
    """

    active: torch.Tensor
    input_attention: torch.Tensor
    comm_attention: torch.Tensor

    @staticmethod
    def stack(layers: list[RIMInfo]) -> RIMInfo:
        """Stack single-layer records ``(1, L, ...)`` along the layer dimension."""
        return RIMInfo(
            active=torch.cat([r.active for r in layers]),
            input_attention=torch.cat([r.input_attention for r in layers]),
            comm_attention=torch.cat([r.comm_attention for r in layers]),
        )

    def squeeze_batch(self) -> RIMInfo:
        """Drop the batch dimension (dim 2) of a record made from unbatched input."""
        return RIMInfo(
            active=self.active.squeeze(2),
            input_attention=self.input_attention.squeeze(2),
            comm_attention=self.comm_attention.squeeze(2),
        )
