"""RIMLSTM / RIMGRU honour the nn.LSTM / nn.GRU calling contract, checked side by side."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from rims import RIMGRU, RIMLSTM

IN, HID, UNITS, K = 6, 8, 4, 2


def _torch_lstm(*args: object, **kw: object) -> nn.Module:
    return nn.LSTM(*args, **kw)


def _torch_gru(*args: object, **kw: object) -> nn.Module:
    return nn.GRU(*args, **kw)


def _rim_lstm(input_size: int, hidden_size: int, **kw: object) -> nn.Module:
    return RIMLSTM(input_size, hidden_size, UNITS, K, **kw)


def _rim_gru(input_size: int, hidden_size: int, **kw: object) -> nn.Module:
    return RIMGRU(input_size, hidden_size, UNITS, K, **kw)


# (factory, is_lstm): every test runs on the torch module and on its RIM replacement.
MODULES = [
    pytest.param(_torch_lstm, True, id="nn.LSTM"),
    pytest.param(_rim_lstm, True, id="RIMLSTM"),
    pytest.param(_torch_gru, False, id="nn.GRU"),
    pytest.param(_rim_gru, False, id="RIMGRU"),
]
Factory = Callable[..., nn.Module]


def _state(lstm: bool, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor | tuple[torch.Tensor, ...]:
    h = torch.randn(*shape, dtype=dtype)
    return (h, torch.randn(*shape, dtype=dtype)) if lstm else h


def _states(result_state: object, lstm: bool) -> tuple[torch.Tensor, ...]:
    return tuple(result_state) if lstm else (result_state,)


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_attributes(make: Factory, lstm: bool) -> None:
    m = make(IN, HID, num_layers=2, batch_first=True)
    assert (m.input_size, m.hidden_size, m.num_layers, m.batch_first) == (IN, HID, 2, True)
    assert make(IN, HID).batch_first is False


@pytest.mark.parametrize(("make", "lstm"), MODULES)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_batched_shapes(make: Factory, lstm: bool, num_layers: int) -> None:
    m = make(IN, HID, num_layers=num_layers)
    out, state = m(torch.randn(5, 3, IN))
    assert out.shape == (5, 3, HID)
    for s in _states(state, lstm):
        assert s.shape == (num_layers, 3, HID)


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_batch_first_matches_time_major(make: Factory, lstm: bool) -> None:
    tm = make(IN, HID, num_layers=2).eval()
    bf = make(IN, HID, num_layers=2, batch_first=True).eval()
    bf.load_state_dict(tm.state_dict())
    x = torch.randn(5, 3, IN)
    hx = _state(lstm, 2, 3, HID)
    out_tm, st_tm = tm(x, hx)
    out_bf, st_bf = bf(x.transpose(0, 1), hx)
    assert out_bf.shape == (3, 5, HID)
    torch.testing.assert_close(out_bf.transpose(0, 1), out_tm)
    for a, b in zip(_states(st_bf, lstm), _states(st_tm, lstm), strict=False):
        torch.testing.assert_close(a, b)  # states stay (num_layers, N, H) even if batch_first


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_unbatched_matches_batch_of_one(make: Factory, lstm: bool) -> None:
    m = make(IN, HID, num_layers=2).eval()
    x = torch.randn(5, IN)
    hx = _state(lstm, 2, HID)
    out, state = m(x, hx)
    assert out.shape == (5, HID)
    batched_hx = tuple(s.unsqueeze(1) for s in hx) if lstm else hx.unsqueeze(1)
    out_b, state_b = m(x.unsqueeze(1), batched_hx)
    torch.testing.assert_close(out, out_b.squeeze(1))
    for a, b in zip(_states(state, lstm), _states(state_b, lstm), strict=False):
        assert a.shape == (2, HID)
        torch.testing.assert_close(a, b.squeeze(1))


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_hx_none_means_zeros(make: Factory, lstm: bool) -> None:
    m = make(IN, HID, num_layers=2).eval()
    x = torch.randn(4, 3, IN)
    zeros = torch.zeros(2, 3, HID)
    out_none, _ = m(x)
    out_zero, _ = m(x, (zeros, zeros) if lstm else zeros)
    torch.testing.assert_close(out_none, out_zero)


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_state_carries_across_calls(make: Factory, lstm: bool) -> None:
    """Two calls chained through the returned state equal one call over the whole sequence."""
    m = make(IN, HID, num_layers=2).eval()
    x = torch.randn(6, 3, IN)
    full, full_state = m(x)
    first, mid_state = m(x[:2])
    second, end_state = m(x[2:], mid_state)
    torch.testing.assert_close(torch.cat([first, second]), full)
    for a, b in zip(_states(end_state, lstm), _states(full_state, lstm), strict=False):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_last_output_is_last_layer_state(make: Factory, lstm: bool) -> None:
    m = make(IN, HID, num_layers=2).eval()
    out, state = m(torch.randn(4, 3, IN))
    torch.testing.assert_close(out[-1], _states(state, lstm)[0][-1])


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_dropout_between_layers_only_in_training(make: Factory, lstm: bool) -> None:
    kw = {} if make in (_torch_lstm, _torch_gru) else {"attention_dropout": 0.0}
    m = make(IN, HID, num_layers=2, dropout=0.5, **kw)
    x = torch.randn(4, 3, IN)
    m.train()
    a, _ = m(x)
    b, _ = m(x)
    assert not torch.equal(a, b)
    m.eval()
    c, _ = m(x)
    d, _ = m(x)
    assert torch.equal(c, d)


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_dropout_with_one_layer_warns(make: Factory, lstm: bool) -> None:
    with pytest.warns(UserWarning, match="num_layers"):
        make(IN, HID, num_layers=1, dropout=0.5)


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_float64_and_state_dtype_follow_input(make: Factory, lstm: bool) -> None:
    m = make(IN, HID).double()
    out, state = m(torch.randn(3, 2, IN, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert all(s.dtype == torch.float64 for s in _states(state, lstm))


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_device_comes_from_input(make: Factory, lstm: bool) -> None:
    """On the meta device nothing is computed, but every tensor must follow the input there."""
    m = make(IN, HID, num_layers=2).to("meta")
    out, state = m(torch.randn(3, 2, IN, device="meta"))
    assert out.device.type == "meta"
    assert all(s.device.type == "meta" for s in _states(state, lstm))


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_no_grad(make: Factory, lstm: bool) -> None:
    m = make(IN, HID)
    with torch.no_grad():
        out, _ = m(torch.randn(3, 2, IN))
    assert not out.requires_grad


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_gradients_reach_input_and_state(make: Factory, lstm: bool) -> None:
    m = make(IN, HID)
    x = torch.randn(4, 2, IN, requires_grad=True)
    h0 = torch.randn(1, 2, HID, requires_grad=True)
    out, _ = m(x, (h0, torch.zeros(1, 2, HID)) if lstm else h0)
    out.pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert h0.grad is not None and h0.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_reset_state_per_batch_element(make: Factory, lstm: bool) -> None:
    """RL use: zeroing one batch element's state makes it start fresh, others are untouched."""
    m = make(IN, HID).eval()
    x = torch.randn(5, 3, IN)
    hx = _state(lstm, 1, 3, HID)
    keep = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1)  # element 1 starts an episode
    reset = tuple(s * keep for s in hx) if lstm else hx * keep
    out, _ = m(x, reset)
    fresh, _ = m(x[:, 1:2])
    torch.testing.assert_close(out[:, 1:2], fresh)
    untouched, _ = m(x, hx)
    torch.testing.assert_close(out[:, [0, 2]], untouched[:, [0, 2]])


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_wrong_input_rank_is_value_error(make: Factory, lstm: bool) -> None:
    m = make(IN, HID)
    with pytest.raises(ValueError, match="2D or 3D"):
        m(torch.randn(2, 3, 4, IN))
    with pytest.raises(ValueError, match="2D or 3D"):
        m(torch.randn(IN))


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_wrong_feature_size_is_runtime_error(make: Factory, lstm: bool) -> None:
    m = make(IN, HID)
    with pytest.raises(RuntimeError, match=f"Expected {IN}, got {IN + 1}"):
        m(torch.randn(3, 2, IN + 1))


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_wrong_state_shape_is_runtime_error(make: Factory, lstm: bool) -> None:
    m = make(IN, HID)
    bad = _state(lstm, 1, 4, HID)  # batch 4 instead of 2
    with pytest.raises(RuntimeError, match=r"Expected hidden(\[0\])? size \(1, 2, 8\), got \[1, 4, 8\]"):
        m(torch.randn(3, 2, IN), bad)


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_unbatched_input_with_batched_state_is_runtime_error(make: Factory, lstm: bool) -> None:
    m = make(IN, HID)
    with pytest.raises(RuntimeError, match="2-D"):
        m(torch.randn(3, IN), _state(lstm, 1, 1, HID))


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_state_dict_round_trip(make: Factory, lstm: bool, tmp_path: object) -> None:
    a = make(IN, HID, num_layers=2).eval()
    b = make(IN, HID, num_layers=2).eval()
    path = f"{tmp_path}/m.pt"
    torch.save(a.state_dict(), path)
    b.load_state_dict(torch.load(path))
    x = torch.randn(4, 2, IN)
    torch.testing.assert_close(a(x)[0], b(x)[0])
