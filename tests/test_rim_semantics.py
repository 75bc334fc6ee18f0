"""RIM semantics: top-k selection, kept inactive state, blocked gradients, attention, determinism."""

from __future__ import annotations

import pytest
import torch

from rims import RIMGRU, RIMLSTM, RIMCell
from tests.reference_rim import reference_sequence

DYNAMICS = ["lstm", "gru"]


def _small_cell(dynamics: str, **kw: object) -> RIMCell:
    opts: dict[str, object] = {
        "dynamics": dynamics,
        "input_key_size": 6,
        "input_value_size": 7,
        "num_comm_heads": 2,
        "comm_key_size": 3,
        "comm_value_size": 5,
    }
    opts.update(kw)
    return RIMCell(5, 12, 4, 2, **opts)


def _rand_states(
    dynamics: str, batch: int, hidden: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, ...]:
    n = 2 if dynamics == "lstm" else 1
    return tuple(0.5 * torch.randn(batch, hidden, dtype=dtype) for _ in range(n))


@pytest.mark.parametrize("dynamics", DYNAMICS)
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("selection", ["null_attention", "input_score"])
@pytest.mark.parametrize("update", ["bounded", "residual"])
def test_matches_literal_reference(dynamics: str, heads: int, bias: bool, selection: str, update: str) -> None:
    """The batched implementation equals a loop-over-everything reading of the equations."""
    cell = _small_cell(dynamics, bias=bias, selection=selection, num_input_heads=heads, communication_update=update)
    cell = cell.double().eval()
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    states = _rand_states(dynamics, 3, 12, torch.float64)
    out, finals, info = cell.sequence(x, states, record=True)
    ref_out, ref_finals, ref_active = reference_sequence(cell, x, states)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for a, b in zip(finals, ref_finals, strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert torch.equal(info.active[0], ref_active)


@pytest.mark.parametrize("dynamics", DYNAMICS)
def test_both_input_projection_orders_agree(dynamics: str) -> None:
    """A wide value makes a long sequence take ``x (W_v W_ih)`` and single steps ``(x W_v) W_ih``."""
    cell = RIMCell(4, 8, 2, 1, dynamics=dynamics, input_value_size=64).double().eval()
    x = torch.randn(40, 2, 4, dtype=torch.float64)
    states = _rand_states(dynamics, 2, 8, torch.float64)
    whole, whole_final, _ = cell.sequence(x, states)
    steps = []
    for t in range(40):
        out, states, _ = cell.sequence(x[t : t + 1], states)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps), whole, rtol=0, atol=1e-12)
    for a, b in zip(states, whole_final, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
def test_exactly_k_units_change_and_inactive_state_is_bit_identical(cls: type) -> None:
    torch.manual_seed(1)
    m = cls(6, 24, 6, 4)
    lstm = cls is RIMLSTM
    x = torch.randn(12, 5, 6)
    h = torch.randn(1, 5, 24)
    c = torch.randn(1, 5, 24)
    for t in range(x.shape[0]):
        _out, state, info = m(x[t : t + 1], (h, c) if lstm else h, return_info=True)
        h_new, c_new = state if lstm else (state, None)
        active = info.active[0, 0]  # (N, U)
        assert torch.equal(active.sum(-1), torch.full((5,), 4))
        before = h.view(5, 6, 4)
        after = h_new.view(5, 6, 4)
        assert torch.equal(after[~active], before[~active])
        assert (after[active] != before[active]).any(-1).all()  # every active unit moved
        if lstm:
            assert torch.equal(c_new.view(5, 6, 4)[~active], c.view(5, 6, 4)[~active])
        h, c = h_new, c_new


@pytest.mark.parametrize("dynamics", DYNAMICS)
def test_inactive_unit_parameters_get_no_gradient_from_that_step(dynamics: str) -> None:
    cell = _small_cell(dynamics, attention_dropout=0.0)
    x = torch.randn(1, 1, 5)
    states = _rand_states(dynamics, 1, 12)
    out, finals, info = cell.sequence(x, states, record=True)
    (out.pow(2).sum() + sum(s.pow(2).sum() for s in finals)).backward()
    active = info.active[0, 0, 0]  # (U,)
    assert active.sum() == 2
    per_unit = [
        "weight_query",
        "bias_query",
        "weight_ih",
        "bias_ih",
        "weight_hh",
        "bias_hh",
        "weight_comm_qkv",
        "weight_comm_out",
    ]
    for name in per_unit:
        grad = getattr(cell, name).grad
        assert grad is not None, name
        flat = grad.reshape(grad.shape[0], -1).abs().sum(-1)
        assert torch.all(flat[~active] == 0), f"{name} got gradient for an inactive unit"
        assert torch.all(flat[active] > 0), f"{name} got no gradient for an active unit"


def test_inactive_state_still_receives_gradient_through_communication() -> None:
    """Active units read inactive units' kept state, so that state gets gradient."""
    cell = _small_cell("gru", attention_dropout=0.0)
    h0 = torch.randn(1, 12, requires_grad=True)
    out, _, info = cell.sequence(torch.randn(1, 1, 5), (h0,), record=True)
    active = info.active[0, 0, 0]
    out.view(4, 3)[active].sum().backward()
    assert h0.grad.view(4, 3)[~active].abs().sum() > 0


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
def test_k_equal_to_num_units_updates_every_unit(cls: type) -> None:
    m = cls(6, 16, 4, 4)
    out, _, info = m(torch.randn(5, 3, 6), return_info=True)
    assert info.active.all()
    assert out.shape == (5, 3, 16)


def test_null_attention_rule_selects_least_null_attention() -> None:
    m = RIMLSTM(6, 24, 6, 3, num_input_heads=2)
    _, _, info = m(torch.randn(7, 4, 6), return_info=True)
    null = 1.0 - info.input_attention.mean(-1)  # (1, L, N, U)
    kth = null.topk(3, dim=-1, largest=False).values[..., -1:]
    assert torch.equal(info.active, null <= kth)


def test_selection_rules_differ_only_with_a_key_bias() -> None:
    torch.manual_seed(3)
    x = torch.randn(20, 8, 6)
    with_bias = [RIMLSTM(6, 24, 6, 2, selection=s).eval() for s in ("null_attention", "input_score")]
    with_bias[1].load_state_dict(with_bias[0].state_dict())
    a, b = (m(x, return_info=True)[2].active for m in with_bias)
    assert not torch.equal(a, b)
    no_bias = [RIMLSTM(6, 24, 6, 2, bias=False, selection=s).eval() for s in ("null_attention", "input_score")]
    no_bias[1].load_state_dict(no_bias[0].state_dict())
    a, b = (m(x, return_info=True)[2].active for m in no_bias)
    assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
def test_return_info_keeps_default_outputs(cls: type) -> None:
    m = cls(6, 16, 4, 2, num_layers=2, num_comm_heads=3).eval()
    x = torch.randn(5, 3, 6)
    plain = m(x)
    out, _state, info = m(x, return_info=True)
    assert len(plain) == 2
    torch.testing.assert_close(plain[0], out)
    assert info.active.shape == (2, 5, 3, 4) and info.active.dtype == torch.bool
    assert info.input_attention.shape == (2, 5, 3, 4, 1)
    assert info.comm_attention.shape == (2, 5, 3, 3, 4, 4)
    torch.testing.assert_close(info.comm_attention.sum(-1), torch.ones(2, 5, 3, 3, 4))
    assert ((info.input_attention > 0) & (info.input_attention < 1)).all()
    _, _, unbatched = m(x[:, 0], return_info=True)
    assert unbatched.active.shape == (2, 5, 4)


def test_attention_dropout_only_in_training() -> None:
    m = RIMLSTM(6, 16, 4, 2, attention_dropout=0.5)
    x = torch.randn(5, 3, 6)
    m.train()
    assert not torch.equal(m(x)[0], m(x)[0])
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
def test_deterministic_for_a_fixed_seed(cls: type) -> None:
    def run() -> torch.Tensor:
        torch.manual_seed(42)
        m = cls(6, 16, 4, 2)
        x = torch.randn(5, 3, 6)
        out, _ = m(x)
        out.sum().backward()
        grads = [p.grad.flatten() for p in m.parameters() if p.grad is not None]
        return torch.cat([out.flatten(), *grads])

    assert torch.equal(run(), run())


def test_key_bias_cannot_change_the_output_and_gets_a_zero_gradient() -> None:
    """The key bias is also the null key, so it cancels in the {input, null} softmax: the output
    does not depend on it (null_attention rule), and its gradient is exact zeros, not None."""
    m = RIMLSTM(6, 16, 4, 2).double().eval()
    x = torch.randn(5, 3, 6, dtype=torch.float64)
    out = m(x)[0]
    out.sum().backward()
    cell = m.layers[0]
    assert cell.bias_key.grad is not None and torch.equal(cell.bias_key.grad, torch.zeros_like(cell.bias_key))
    with torch.no_grad():
        cell.bias_key.add_(3.0)
    torch.testing.assert_close(m(x)[0], out, rtol=1e-12, atol=1e-12)


def test_default_sizes_follow_the_paper() -> None:
    cell = RIMLSTM(600, 300, 6, 4).layers[0]
    assert (cell.num_input_heads, cell.input_key_size, cell.input_value_size) == (1, 64, 400)
    assert (cell.num_comm_heads, cell.comm_key_size, cell.comm_value_size) == (4, 32, 32)
    assert cell.attention_dropout == 0.1 and cell.selection == "null_attention"
    assert cell.unit_size == 50


@pytest.mark.parametrize("dynamics", DYNAMICS)
def test_cell_step_matches_sequence_module(dynamics: str) -> None:
    seq_cls = RIMLSTM if dynamics == "lstm" else RIMGRU
    m = seq_cls(6, 16, 4, 2).eval()
    cell = m.layers[0]
    x = torch.randn(3, 2, 6)
    out, _ = m(x)
    state = None
    for t in range(3):
        state = cell(x[t], state)
        h = state[0] if dynamics == "lstm" else state
        torch.testing.assert_close(h, out[t])
    single = cell(x[0, 0])  # unbatched
    assert (single[0] if dynamics == "lstm" else single).shape == (16,)


def test_cell_rejects_bad_state() -> None:
    cell = RIMCell(6, 16, 4, 2)
    with pytest.raises(ValueError, match="expected hx with 2 tensor"):
        cell(torch.randn(3, 6), torch.zeros(3, 16))
    with pytest.raises(RuntimeError, match=r"Expected hx\[0\] size \(3, 16\), got \(2, 16\)"):
        cell(torch.randn(3, 6), (torch.zeros(2, 16), torch.zeros(2, 16)))
    with pytest.raises(ValueError, match="1D or 2D"):
        cell(torch.randn(1, 3, 6))


def test_no_grad_weight_cache_follows_parameter_updates() -> None:
    """Acting under no_grad reuses rearranged weights, but never stale ones."""
    m = RIMLSTM(6, 16, 4, 2).eval()
    x = torch.randn(3, 2, 6)
    with torch.no_grad():
        before = m(x)[0]
        assert torch.equal(m(x)[0], before)
        m.layers[0].weight_hh.add_(0.5)  # an optimizer step is an in-place update like this
        after = m(x)[0]
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, m(x)[0])  # same as the uncached, differentiable path


@pytest.mark.parametrize("bias", [True, False])
def test_attention_parameters_are_the_attention_mechanisms(bias: bool) -> None:
    cell = RIMCell(6, 16, 4, 2, bias=bias)
    names = [n for n, _ in cell.attention_parameters()]
    expected = ["weight_key", "weight_value", "weight_query", "weight_comm_qkv", "weight_comm_out"]
    if bias:
        expected += ["bias_key", "bias_value", "bias_query"]
    assert names == expected
    rest = {n for n, _ in cell.named_parameters()} - set(names)
    assert rest == ({"weight_ih", "weight_hh", "bias_ih", "bias_hh"} if bias else {"weight_ih", "weight_hh"})
