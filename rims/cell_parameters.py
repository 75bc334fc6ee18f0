"""The parameters of a RIM layer (:class:`rims.cell.RIMCell`): which it registers, in which order, and their
initial values. The shapes are listed in the layer's docstring."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from rims import remedies

GATES = {"lstm": 4, "gru": 3}
ATTENTION_PARAMETERS = (
    "weight_key", "bias_key", "weight_value", "bias_value", "weight_query", "bias_query",
    "weight_comm_qkv", "weight_comm_out",
    "weight_key_top", "bias_key_top", "weight_value_top", "bias_value_top",
    "weight_schema_query", "bias_schema_query", "weight_schema_key",
    "workspace_slots", "weight_write_query", "weight_write_kv", "weight_workspace_gate", "bias_workspace_gate",
    "weight_read_query", "weight_read_kv", "weight_read_out",
)  # fmt: skip
"""``GATES``: gate blocks per unit for each dynamics. ``ATTENTION_PARAMETERS``: the attention mechanisms'
parameters (input attention, communication, schema choice), what fast/slow learning trains slowly."""


def _optional(cell: nn.Module, name: str, shape: tuple[int, ...], present: bool, kw: dict[str, Any]) -> None:
    """Register parameter ``name`` (uninitialised) if ``present``, else ``None``."""
    cell.register_parameter(name, nn.Parameter(torch.empty(shape, **kw)) if present else None)


def register_parameters(cell: nn.Module, kw: dict[str, Any]) -> None:
    """Register every parameter of ``cell`` (uninitialised; ``None`` for those its options do not use), in the
    order the layer has always had: optimizer states saved by index stay valid.

    :param kw: ``device`` and ``dtype`` of the parameters.
    """
    u, d, g = cell.num_units, cell.unit_size, GATES[cell.dynamics] * cell.unit_size
    sets = u if cell.num_schemata is None else cell.num_schemata
    heads_key = cell.num_input_heads * cell.input_key_size
    heads_value = cell.num_input_heads * cell.input_value_size
    cell.weight_key = nn.Parameter(torch.empty(heads_key, cell.input_size, **kw))
    cell.weight_value = nn.Parameter(torch.empty(heads_value, cell.input_size, **kw))
    cell.weight_query = nn.Parameter(torch.empty(u, d, heads_key, **kw))
    cell.weight_ih = nn.Parameter(torch.empty(sets, heads_value, g, **kw))
    cell.weight_hh = nn.Parameter(torch.empty(sets, d, g, **kw))
    pairwise = cell.communication == "pairwise"
    comm_width = cell.num_comm_heads * (2 * cell.comm_key_size + cell.comm_value_size)
    _optional(cell, "weight_comm_qkv", (u, d, comm_width), pairwise, kw)
    _optional(cell, "weight_comm_out", (u, cell.num_comm_heads * cell.comm_value_size, d), pairwise, kw)
    # registration order as before the options existed: optimizer states saved by index stay valid
    _optional(cell, "bias_key", (heads_key,), cell.bias, kw)
    _optional(cell, "bias_value", (heads_value,), cell.bias, kw)
    _optional(cell, "bias_query", (u, heads_key), cell.bias, kw)
    _optional(cell, "bias_ih", (sets, g), cell.bias, kw)
    _optional(cell, "bias_hh", (sets, g), cell.bias, kw)
    top = cell.top_down_size
    _optional(cell, "weight_key_top", (heads_key, top or 0), top is not None, kw)
    _optional(cell, "weight_value_top", (heads_value, top or 0), top is not None, kw)
    _optional(cell, "bias_key_top", (heads_key,), top is not None and cell.bias, kw)
    _optional(cell, "bias_value_top", (heads_value,), top is not None and cell.bias, kw)
    schemata, ks = cell.num_schemata is not None, cell.schema_key_size
    _optional(cell, "weight_schema_query", (d, ks), schemata, kw)
    _optional(cell, "weight_schema_key", (d, ks), schemata, kw)
    _optional(cell, "bias_schema_query", (ks,), schemata and cell.bias, kw)
    workspace, m, kc, vc = not pairwise, cell.slot_size, cell.comm_key_size, cell.comm_value_size
    _optional(cell, "workspace_slots", (cell.num_slots, m), workspace, kw)
    _optional(cell, "weight_write_query", (m, kc), workspace, kw)
    _optional(cell, "weight_write_kv", (u, d, kc + m), workspace, kw)
    _optional(cell, "weight_workspace_gate", (2 * m, 2 * m), workspace, kw)
    _optional(cell, "bias_workspace_gate", (2 * m,), workspace and cell.bias, kw)
    _optional(cell, "weight_read_query", (u, d, kc), workspace, kw)
    _optional(cell, "weight_read_kv", (m, kc + vc), workspace, kw)
    _optional(cell, "weight_read_out", (u, vc, d), workspace, kw)
    remedies.register_remedies(cell, kw)  # after the others: saved optimizer states keep their indices


def init_parameters(cell: nn.Module) -> None:
    """Uniform init in ``+-1/sqrt(fan_in)``, as ``nn.Linear`` and ``nn.LSTM`` (per unit); the workspace's
    forget-gate bias starts at 1 (as in relational memory); the remedies' parameters start at zero."""
    unit_bound = 1.0 / math.sqrt(cell.unit_size)
    in_bound = 1.0 / math.sqrt(cell.input_size)
    top_bound = 1.0 / math.sqrt(cell.top_down_size or 1)
    slot_bound = 1.0 / math.sqrt(cell.slot_size)
    bounds = {
        "weight_key": in_bound,
        "weight_value": in_bound,
        "bias_key": in_bound,
        "bias_value": in_bound,
        "weight_comm_out": 1.0 / math.sqrt(cell.num_comm_heads * cell.comm_value_size),
        "weight_key_top": top_bound,
        "weight_value_top": top_bound,
        "bias_key_top": top_bound,
        "bias_value_top": top_bound,
        "workspace_slots": 1.0,
        "weight_write_query": slot_bound,
        "weight_workspace_gate": 1.0 / math.sqrt(2 * cell.slot_size),
        "bias_workspace_gate": 1.0 / math.sqrt(2 * cell.slot_size),
        "weight_read_kv": slot_bound,
        "weight_read_out": 1.0 / math.sqrt(cell.comm_value_size),
    }
    for name, param in cell.named_parameters(recurse=False):
        bound = bounds.get(name, unit_bound)
        nn.init.uniform_(param, -bound, bound)
    if cell.bias_workspace_gate is not None:
        with torch.no_grad():
            cell.bias_workspace_gate[cell.slot_size :] += 1.0
    remedies.reset_remedies(cell)
