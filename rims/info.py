"""Opt-in introspection of a RIM forward pass (which units were active, attention weights)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

_OPTIONAL = ("comm_attention", "top_down_attention", "schema", "workspace_writes", "workspace_read")


@dataclass(frozen=True)
class RIMInfo:
    """Per-step record of a RIM forward pass, returned only when asked for.

    Tensors are time-major whatever ``batch_first`` says; for unbatched input the batch
    dimension ``N`` is absent. ``U`` is ``num_units``, ``H`` the number of input heads,
    ``Hc`` the number of communication heads and ``S`` the number of workspace slots.
    A field is ``None`` when no layer has the mechanism it reports.

    :ivar active: ``(num_layers, L, N, U)`` bool, ``True`` where the unit was active.
    :ivar input_attention: ``(num_layers, L, N, U, H)`` attention each unit put on the real
        input (the rest went to the null input, and to the top-down input with ``top_down``),
        before attention dropout.
    :ivar comm_attention: ``(num_layers, L, N, Hc, U, U)`` pairwise communication weights
        (query unit, key unit), before attention dropout. Rows of inactive units are computed
        but not used. ``None`` with ``communication="workspace"``.
    :ivar top_down_attention: ``(num_layers, L, N, U, H)`` attention on the top-down input
        (BRIMs; zeros for the top layer, which has none).
    :ivar schema: ``(num_layers, L, N, U)`` long, the schema each active unit used, ``-1``
        for inactive units (SCOFF).
    :ivar workspace_writes: ``(num_layers, L, N, U)`` bool, the units that wrote into the
        workspace (shared workspace).
    :ivar workspace_read: ``(num_layers, L, N, U, S)`` attention of every unit over the
        workspace slots when reading it back.
    """

    active: torch.Tensor
    input_attention: torch.Tensor
    comm_attention: torch.Tensor | None = None
    top_down_attention: torch.Tensor | None = None
    schema: torch.Tensor | None = None
    workspace_writes: torch.Tensor | None = None
    workspace_read: torch.Tensor | None = None

    @staticmethod
    def from_steps(steps: list[dict[str, torch.Tensor]]) -> RIMInfo:
        """One layer's record ``(1, L, ...)`` from per-step entries (each field ``(N, ...)``)."""
        names = {f.name for f in fields(RIMInfo)}
        found = {key for step in steps for key in step if key in names}
        values = {key: torch.stack([step[key] for step in steps]).unsqueeze(0).detach() for key in found}
        return RIMInfo(**values)

    @staticmethod
    def stack(layers: list[RIMInfo]) -> RIMInfo:
        """Stack single-layer records ``(1, L, ...)`` along the layer dimension.

        A field that some layers lack is filled for them with zeros (``-1`` for ``schema``).
        """
        values: dict[str, torch.Tensor | None] = {
            "active": torch.cat([r.active for r in layers]),
            "input_attention": torch.cat([r.input_attention for r in layers]),
        }
        for name in _OPTIONAL:
            present = [getattr(r, name) for r in layers if getattr(r, name) is not None]
            if not present:
                values[name] = None
                continue
            fill = -1 if name == "schema" else 0
            parts = [getattr(r, name) for r in layers]
            values[name] = torch.cat([torch.full_like(present[0], fill) if p is None else p for p in parts])
        return RIMInfo(**values)

    def squeeze_batch(self) -> RIMInfo:
        """Drop the batch dimension (dim 2) of a record made from unbatched input."""
        return RIMInfo(**{f.name: _squeeze(getattr(self, f.name)) for f in fields(RIMInfo)})


def _squeeze(value: torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None else value.squeeze(2)
