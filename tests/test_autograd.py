"""Hand-written backward passes agree with autograd (gradcheck) and with the literal reference."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from rims import RIMCell
from rims.mechanisms.communication import ActiveWeightGradBmm
from rims.mechanisms.dynamics import gru_gates, lstm_gates
from rims.mechanisms.unit_attention import unit_attention
from tests.reference_rim import reference_sequence

U, N, D = 3, 4, 5


def _f64(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


MASKS = [pytest.param(None, id="all-active"), pytest.param(torch.tensor([1, 0, 1]).bool(), id="masked")]


def _mask(units: torch.Tensor | None) -> torch.Tensor | None:
    if units is None:
        return None
    mask = torch.zeros(U, N, 1, dtype=torch.bool)
    mask[units] = True
    mask[0, 1] = False  # per batch element, too
    return mask


@pytest.mark.parametrize("units", MASKS)
def test_lstm_gates_gradcheck(units: torch.Tensor | None) -> None:
    mask = _mask(units)
    assert gradcheck(lambda p, h, c: lstm_gates(p, h, c, mask), (_f64(U, N, 4 * D), _f64(U, N, D), _f64(U, N, D)))


@pytest.mark.parametrize("units", MASKS)
def test_gru_gates_gradcheck(units: torch.Tensor | None) -> None:
    mask = _mask(units)
    assert gradcheck(lambda a, b, h: gru_gates(a, b, h, mask), (_f64(U, N, 3 * D), _f64(U, N, 3 * D), _f64(U, N, D)))


@pytest.mark.parametrize("units", MASKS)
def test_gates_keep_inactive_state_bit_for_bit(units: torch.Tensor | None) -> None:
    mask = _mask(units)
    h, c = torch.randn(U, N, D), torch.randn(U, N, D)
    h_lstm, c_lstm = lstm_gates(torch.randn(U, N, 4 * D), h, c, mask)
    h_gru = gru_gates(torch.randn(U, N, 3 * D), torch.randn(U, N, 3 * D), h, mask)
    if mask is not None:
        keep = ~mask.expand(U, N, D)
        assert torch.equal(h_lstm[keep], h[keep]) and torch.equal(c_lstm[keep], c[keep])
        assert torch.equal(h_gru[keep], h[keep])
        assert not torch.equal(h_lstm[~keep], h[~keep])


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_unit_attention_gradcheck(dropout: float) -> None:
    def run(qkv: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(7)  # the same dropout mask on every evaluation
        return unit_attention(qkv, 2, 3, 4, 0.5, dropout)[0]

    assert gradcheck(run, (_f64(U, N, 2 * (2 * 3 + 4)),))


def test_unit_attention_matches_sdpa() -> None:
    heads, key = 2, 3
    qkv = torch.randn(U, N, heads * 3 * key, dtype=torch.float64)
    read, weights = unit_attention(qkv, heads, key, key, key**-0.5, 0.0)
    q, k, v = (t.view(U, N, heads, key).permute(1, 2, 0, 3) for t in qkv.split(heads * key, dim=-1))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # (N, Hc, U, V)
    torch.testing.assert_close(read, expected.permute(2, 0, 1, 3).reshape(U, N, heads * key))
    torch.testing.assert_close(weights.sum(-1), torch.ones(N, heads, U, dtype=torch.float64))


def test_active_weight_grad_bmm_masks_only_the_weight_gradient() -> None:
    x, w = _f64(U, N, D), _f64(U, D, 6)
    mask = _mask(torch.tensor([1, 0, 1]).bool())
    grad = torch.randn(U, N, 6, dtype=torch.float64)
    ActiveWeightGradBmm.apply(x, w, mask).backward(grad)
    torch.testing.assert_close(x.grad, grad @ w.detach().transpose(1, 2))
    torch.testing.assert_close(w.grad, (x.detach() * mask).transpose(1, 2) @ grad)


@pytest.mark.parametrize("update", ["bounded", "residual"])
@pytest.mark.parametrize("dynamics", ["lstm", "gru"])
@pytest.mark.parametrize("heads", [1, 2])
def test_parameter_and_input_gradients_match_reference(dynamics: str, heads: int, update: str) -> None:
    cell = (
        RIMCell(
            5,
            12,
            4,
            2,
            dynamics=dynamics,
            num_input_heads=heads,
            input_key_size=6,
            input_value_size=7,
            num_comm_heads=2,
            comm_key_size=3,
            comm_value_size=5,
            communication_update=update,
        )
        .double()
        .eval()
    )
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    states = tuple(_f64(3, 12) for _ in range(2 if dynamics == "lstm" else 1))
    weight = torch.randn(4, 3, 12, dtype=torch.float64)

    inputs = [x, *states, *cell.parameters()]

    def grads(out: torch.Tensor, finals: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        loss = (out * weight).sum() + sum((s * s).sum() for s in finals)
        found = torch.autograd.grad(loss, inputs, allow_unused=True)
        return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, found, strict=True)]

    fast_out, fast_finals, _ = cell.sequence(x, states)
    ref_out, ref_finals, _ = reference_sequence(cell, x, states)
    for a, b in zip(grads(fast_out, fast_finals), grads(ref_out, ref_finals), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
