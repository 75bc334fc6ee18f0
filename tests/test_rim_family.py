"""The models after RIMs as options of the RIM modules (issue 16): BRIMs (top-down input), a shared
workspace instead of pairwise communication, and SCOFF (schemata shared by object files).

Each equals a literal loop-over-everything implementation (tests/reference_rim.py) in float64,
outputs, states and gradients; plus each model's own invariant.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from rims import RIMGRU, RIMLSTM, RIMCell
from rims.mechanisms.input_attention import input_part
from rims.mechanisms.workspace import WorkspaceCommunication
from tests.reference_rim import reference_sequence, reference_stack, reference_workspace

SMALL = {
    "input_key_size": 6,
    "input_value_size": 7,
    "num_comm_heads": 2,
    "comm_key_size": 3,
    "comm_value_size": 5,
    "slot_size": 4,
    "num_slots": 3,
    "schema_key_size": 5,
    "attention_dropout": 0.0,
}
LAYER_OPTIONS = {
    "workspace": {"communication": "workspace", "write_k": 2},
    "schemata": {"num_schemata": 2},
    "schemata_workspace": {"num_schemata": 3, "communication": "workspace", "write_k": 1},
}


def _f64(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


def _grads(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    found = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, found, strict=True)]


@pytest.mark.parametrize(
    ("option", "dynamics", "bias", "selection", "heads", "update"),
    [
        (o, dyn, b, s, hd, up)
        for o, dyn, b, s, hd, up in itertools.product(
            LAYER_OPTIONS, ["lstm", "gru"], [True, False], ["null_attention", "input_score"], [1, 2], ["bounded"]
        )
        if (s == "null_attention" or hd == 1)
    ]
    + [
        ("workspace", "lstm", True, "null_attention", 1, "residual"),
        ("schemata", "gru", True, "null_attention", 1, "residual"),
    ],
)
def test_layer_options_match_literal_reference(
    option: str, dynamics: str, bias: bool, selection: str, heads: int, update: str
) -> None:
    torch.manual_seed(0)
    cell = RIMCell(
        5, 12, 4, 3, bias=bias, dynamics=dynamics, selection=selection, num_input_heads=heads,
        communication_update=update, **SMALL, **LAYER_OPTIONS[option],
    ).double().eval()  # fmt: skip
    _check_against_reference(cell)


@pytest.mark.parametrize("dynamics", ["lstm", "gru"])
def test_schemata_with_every_unit_active_match_literal_reference(dynamics: str) -> None:
    """k == num_units: no unit keeps its state, so the schema step runs without a mask."""
    torch.manual_seed(1)
    cell = RIMCell(5, 12, 4, 4, dynamics=dynamics, **SMALL, num_schemata=3).double().eval()
    _check_against_reference(cell)


def _check_against_reference(cell: RIMCell) -> None:
    """Outputs, final states, active units and gradients of ``cell`` equal the literal loop's (float64)."""
    x = _f64(4, 2, 5)
    states = tuple(_f64(2, 12) * 0.5 for _ in range(2 if cell.dynamics == "lstm" else 1))
    out, finals, info = cell.sequence(x, states, record=True)
    ref_out, ref_finals, ref_active = reference_sequence(cell, x, states)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for a, b in zip(finals, ref_finals, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert torch.equal(info.active[0], ref_active)
    weight = torch.randn(out.shape, dtype=torch.float64)
    inputs = [x, *states, *cell.parameters()]
    fast = _grads((out * weight).sum() + sum((f * f).sum() for f in finals), inputs)
    slow = _grads((ref_out * weight).sum() + sum((f * f).sum() for f in ref_finals), inputs)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
@pytest.mark.parametrize(
    ("layers", "option", "heads", "value_size", "batch"),
    [
        (2, "plain", 2, 7, 2),
        (3, "plain", 2, 7, 2),
        (2, "schemata_workspace", 2, 7, 2),
        (3, "schemata_workspace", 2, 7, 2),
        # a wide value and more rows: the per-step and top-down inputs go through W_v W_ih, built once
        (2, "plain", 1, 64, 6),
        (2, "plain", 2, 64, 6),
        (2, "schemata", 1, 64, 6),
    ],
)
def test_brims_stack_matches_literal_reference(
    cls: type, layers: int, option: str, heads: int, value_size: int, batch: int
) -> None:
    torch.manual_seed(0)
    extra = {} if option == "plain" else LAYER_OPTIONS[option]
    sizes = {**SMALL, "input_value_size": value_size}
    m = cls(5, 12, 4, 3, num_layers=layers, top_down=True, num_input_heads=heads, **sizes, **extra).double().eval()
    x = _f64(4, batch, 5)
    states = tuple(_f64(layers, batch, 12) * 0.5 for _ in range(2 if cls is RIMLSTM else 1))
    out, finals = m(x, states if cls is RIMLSTM else states[0])
    finals = finals if cls is RIMLSTM else (finals,)
    ref_out, ref_finals = reference_stack(m, x, states)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for a, b in zip(finals, ref_finals, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    inputs = [x, *states, *m.parameters()]
    fast = _grads(out.pow(2).sum() + sum(f.sum() for f in finals), inputs)
    slow = _grads(ref_out.pow(2).sum() + sum(f.sum() for f in ref_finals), inputs)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
def test_without_top_down_a_stack_is_todays_stacked_rims(cls: type) -> None:
    torch.manual_seed(0)
    m = cls(5, 12, 4, 2, num_layers=2, top_down=False, **SMALL).double().eval()
    assert not any("_top" in name for name, _ in m.named_parameters())
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    out, _ = m(x)
    below, _, _ = m.layers[0].sequence(x, tuple(torch.zeros(3, 12, dtype=torch.float64) for _ in range(m._n_states)))
    above, _, _ = m.layers[1].sequence(
        below, tuple(torch.zeros(3, 12, dtype=torch.float64) for _ in range(m._n_states))
    )
    assert torch.equal(out, above)
    with_top = cls(5, 12, 4, 2, num_layers=2, top_down=True, **SMALL)
    names = {name for name, _ in with_top.named_parameters()}
    assert {"layers.0.weight_key_top", "layers.0.weight_value_top"} <= names
    assert not any(n.startswith("layers.1.") and "_top" in n for n in names)  # the top layer has no top-down input


def test_top_down_input_changes_the_lower_layer_only_through_attention() -> None:
    """Layer 0 at step t reads layer 1 at t - 1: the first step cannot depend on layer 1's weights
    except through its initial state, so perturbing layer 1's weights leaves layer 0's first step alone."""
    torch.manual_seed(0)
    m = RIMLSTM(5, 12, 4, 2, num_layers=2, top_down=True, **SMALL).double().eval()
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    _, _, info = m(x, return_info=True)
    assert info.top_down_attention is not None and info.top_down_attention.shape == (2, 3, 2, 4, 1)
    assert torch.all(info.top_down_attention[1] == 0)  # the top layer has none
    assert torch.all(info.top_down_attention[0] > 0)


def test_a_unit_that_did_not_write_leaves_the_workspace_untouched() -> None:
    torch.manual_seed(0)
    cell = RIMCell(5, 12, 4, 3, communication="workspace", write_k=1, **SMALL).double().eval()
    comm = WorkspaceCommunication(cell.spec, cell.layer_parameters(), 6)
    states = torch.randn(4, 6, 3, dtype=torch.float64)
    mask = torch.tensor([True, True, True, False]).view(4, 1, 1).expand(4, 6, 1)
    memory, wrote = comm.write(states, mask)
    assert not wrote[:, 3].any()  # inactive units never write
    assert (wrote.sum(1) <= 1 * cell.num_slots).all()
    for n in range(6):
        for i in range(4):
            if wrote[n, i]:
                continue
            moved = states.clone()
            moved[i, n] += 0.01 * torch.randn(3, dtype=torch.float64)  # small: stays out of the top-k
            moved_memory, moved_wrote = comm.write(moved, mask)
            if torch.equal(moved_wrote, wrote):
                assert torch.equal(moved_memory[n], memory[n])
    _, ref_memory = reference_workspace(cell, states[:, 0], mask[:, 0, 0])
    torch.testing.assert_close(memory[0], ref_memory, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dynamics", ["lstm", "gru"])
def test_a_units_update_uses_exactly_the_chosen_schemas_weights(dynamics: str) -> None:
    """Perturbing schema ``s``'s recurrent weights leaves every active unit that still chooses
    another schema bit-identical, and moves the units that choose ``s``."""
    torch.manual_seed(0)
    cell = RIMCell(5, 12, 4, 3, dynamics=dynamics, num_schemata=3, **SMALL).double().eval()
    x = torch.randn(1, 8, 5, dtype=torch.float64)
    states = tuple(torch.randn(8, 12, dtype=torch.float64) for _ in range(2 if dynamics == "lstm" else 1))

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        """(state before communication (U, N, d), schema choice (U, N), -1 where inactive)."""
        runner = cell.step_runner(states, x, record=True)
        seen: dict[str, torch.Tensor] = {}
        communicate = runner.comm

        def capture(h_tilde: torch.Tensor, mask: torch.Tensor | None, record: bool) -> tuple:
            seen["h_tilde"] = h_tilde.detach().clone()
            return communicate(h_tilde, mask, record)

        runner.comm = capture  # type: ignore[assignment]
        runner.comm.updates_inactive = False  # type: ignore[attr-defined]
        runner.step(0)
        return seen["h_tilde"], runner.log[0]["schema"].t()

    before, chosen = step()
    moved_somewhere = False
    for s in range(3):
        with torch.no_grad():
            saved = cell.weight_hh[s].clone()
            cell.weight_hh[s].add_(0.3)
        after, chosen_after = step()
        with torch.no_grad():
            cell.weight_hh[s].copy_(saved)
        same_choice = chosen_after == chosen
        others = same_choice & (chosen != s) & (chosen >= 0)
        users = same_choice & (chosen == s)
        assert torch.equal(after[others], before[others])
        assert not torch.isclose(after[users], before[users]).all(-1).any()
        moved_somewhere |= bool(users.any())
    assert moved_somewhere


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"communication": "broadcast"}, ValueError, r"communication must be one of \['pairwise', 'workspace'\]"),
        ({"communication": "workspace", "write_k": 4}, ValueError, r"write_k must be in \[1, k\] = \[1, 3\]"),
        ({"num_schemata": 5}, ValueError, r"num_schemata must be in \[1, num_units\] = \[1, 4\].*got num_schemata=5"),
        ({"num_schemata": 0}, ValueError, r"num_schemata must be a positive int"),
        ({"num_slots": 0}, ValueError, r"num_slots must be a positive int"),
        ({"top_down": "yes", "num_layers": 2}, TypeError, r"top_down must be a bool, got 'yes'"),
    ],
)
def test_bad_family_arguments(kwargs: dict, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        RIMLSTM(5, 12, 4, 3, **kwargs)


def test_a_top_down_layer_runs_only_in_its_stack() -> None:
    m = RIMLSTM(5, 12, 4, 3, num_layers=2, top_down=True)
    with pytest.raises(RuntimeError, match="top-down input runs inside its stack"):
        m.layers[0](torch.randn(2, 5))


@pytest.mark.parametrize(
    "kwargs",
    [{"num_layers": 2, "top_down": True}, {"communication": "workspace"}, {"num_schemata": 2}],
    ids=["brims", "workspace", "scoff"],
)
def test_attention_parameters_include_the_new_mechanisms(kwargs: dict) -> None:
    m = RIMLSTM(5, 12, 4, 3, **kwargs)
    slow = {n for layer in m.layers for n, _ in layer.attention_parameters()}
    fast = {n for layer in m.layers for n, _ in layer.named_parameters()} - slow
    assert fast == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"num_layers": 2, "top_down": True}, "top_down"), ({"communication": "workspace"}, "communication"),
     ({"num_schemata": 2}, "num_schemata")],
)  # fmt: skip
def test_jax_conversion_refuses_the_family_options_by_name(kwargs: dict, name: str) -> None:
    convert = pytest.importorskip("rims.jax.convert")
    with pytest.raises(NotImplementedError, match=f"rims.jax does not implement {name}="):
        convert.flax_module_for(RIMLSTM(5, 12, 4, 3, **kwargs))


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("per_schema", [False, True])
@pytest.mark.parametrize("top", [False, True])
@pytest.mark.parametrize("null", [False, True])
def test_input_part_is_the_attended_values_projection(heads: int, per_schema: bool, top: bool, null: bool) -> None:
    """``a_in P_in + a_top P_top + (a_in + a_null) P_null`` per head, summed over heads, for
    per-unit and per-schema projections (the one-head shortcut included)."""
    torch.manual_seed(0)
    u, n, g, s = 3, 4, 5, 2
    probs = torch.softmax(_f64(u, n, heads, 3 if top else 2), dim=-1)
    lead = (s, 1) if per_schema else (u,)
    proj_in, proj_top = _f64(*lead, n, heads, g), _f64(*lead, n, heads, g) if top else None
    null_proj = _f64(*lead, heads, g) if null else None
    want = 0.0
    for head in range(heads):
        a = probs[..., head, :].unsqueeze(-1)  # (U, N, C, 1)
        want = want + a[..., 0, :] * proj_in[..., head, :]
        if top:
            want = want + a[..., 1, :] * proj_top[..., head, :]
        if null:
            want = want + (a[..., 0, :] + a[..., -1, :]) * null_proj[..., head, :].unsqueeze(-2)
    got = input_part(probs, proj_in, proj_top, null_proj)
    assert got.shape == ((s, u, n, g) if per_schema else (u, n, g))
    torch.testing.assert_close(got, torch.as_tensor(want).expand(got.shape), rtol=0, atol=1e-12)
