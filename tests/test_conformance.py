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


def _brims_lstm(input_size: int, hidden_size: int, **kw: object) -> nn.Module:
    return RIMLSTM(input_size, hidden_size, UNITS, K, top_down=True, **kw)


def _workspace_gru(input_size: int, hidden_size: int, **kw: object) -> nn.Module:
    return RIMGRU(input_size, hidden_size, UNITS, K, communication="workspace", num_slots=3, slot_size=4, **kw)


def _scoff_lstm(input_size: int, hidden_size: int, **kw: object) -> nn.Module:
    return RIMLSTM(input_size, hidden_size, UNITS, K, num_schemata=2, **kw)


# (factory, is_lstm): every test runs on the torch module and on its RIM replacements, the
# models after RIMs included (BRIMs: top_down=True, which matters from 2 layers on; shared
# workspace; SCOFF's schemata).
MODULES = [
    pytest.param(_torch_lstm, True, id="nn.LSTM"),
    pytest.param(_rim_lstm, True, id="RIMLSTM"),
    pytest.param(_torch_gru, False, id="nn.GRU"),
    pytest.param(_rim_gru, False, id="RIMGRU"),
    pytest.param(_brims_lstm, True, id="BRIMs-LSTM"),
    pytest.param(_workspace_gru, False, id="workspace-GRU"),
    pytest.param(_scoff_lstm, True, id="SCOFF-LSTM"),
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


# What other people's nn.LSTM code relies on without saying so (issue 14).


def _loss_and_params(m: nn.Module, out: torch.Tensor, state: object, lstm: bool) -> list[tuple[str, torch.Tensor]]:
    loss = out.pow(2).sum() + sum(s.pow(2).sum() for s in _states(state, lstm))
    loss.backward()
    return [(n, p) for n, p in m.named_parameters() if p.grad is None]


@pytest.mark.parametrize(("make", "lstm"), MODULES)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_every_parameter_gets_a_gradient(make: Factory, lstm: bool, num_layers: int, bias: bool) -> None:
    """Hand-written SGD loops (``p.data.add_(p.grad, ...)``) and DistributedDataParallel need it."""
    m = make(IN, HID, num_layers=num_layers, bias=bias)
    out, state = m(torch.randn(5, 3, IN))
    assert _loss_and_params(m, out, state, lstm) == []


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("selection", ["null_attention", "input_score"])
@pytest.mark.parametrize("update", ["bounded", "residual"])
@pytest.mark.parametrize("path", ["fused", "python_loops", "step_by_step", "two_input_heads", "eval"])
def test_every_rim_parameter_gets_a_gradient_on_every_path(
    cls: type, num_layers: int, bias: bool, selection: str, update: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "python_loops":
        monkeypatch.setenv("RIMS_NATIVE", "0")
    heads = 2 if path == "two_input_heads" else 1
    m = cls(
        IN, HID, UNITS, K, num_layers, bias, selection=selection, communication_update=update, num_input_heads=heads
    )
    m.train(path != "eval")
    x = torch.randn(5, 3, IN)
    out, state, *_ = m(x, return_info=path == "step_by_step")
    assert _loss_and_params(m, out, state, cls is RIMLSTM) == []


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_batch_of_size_zero(make: Factory, lstm: bool) -> None:
    m = make(IN, HID, num_layers=2)
    x = torch.randn(5, 0, IN, requires_grad=True)
    out, state = m(x)
    assert out.shape == (5, 0, HID)
    assert [s.shape for s in _states(state, lstm)] == [(2, 0, HID)] * (2 if lstm else 1)
    assert _loss_and_params(m, out, state, lstm) == []
    given = _state(lstm, 2, 0, HID)
    _, carried = m(x, given)
    assert [s.shape for s in _states(carried, lstm)] == [(2, 0, HID)] * (2 if lstm else 1)


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_empty_sequence_is_the_same_error(make: Factory, lstm: bool) -> None:
    with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0 in RNN"):
        make(IN, HID)(torch.randn(0, 3, IN))


@pytest.mark.parametrize(("make", "lstm"), MODULES)
@pytest.mark.parametrize(
    "x",
    [
        torch.randint(0, 3, (4, 2, IN)),
        torch.ones(4, 2, IN, dtype=torch.bool),
        torch.randn(4, 2, IN, dtype=torch.float64),
        torch.randn(4, 2, IN, dtype=torch.float16),
    ],
    ids=["int64", "bool", "float64", "float16"],
)
def test_input_of_another_dtype_is_the_same_error(make: Factory, lstm: bool, x: torch.Tensor) -> None:
    pattern = rf"RNN input dtype \({x.dtype}\) does not match weight dtype \(torch.float32\). Convert input"
    with pytest.raises(ValueError, match=pattern):
        make(IN, HID)(x)


@pytest.mark.parametrize(("make", "lstm"), MODULES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_state_of_another_dtype_is_a_runtime_error(make: Factory, lstm: bool, dtype: torch.dtype) -> None:
    hx = tuple(torch.zeros(1, 2, HID, dtype=dtype) for _ in range(2)) if lstm else torch.zeros(1, 2, HID, dtype=dtype)
    with pytest.raises(RuntimeError):
        make(IN, HID)(torch.randn(3, 2, IN), hx)


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_bfloat16_module_and_input(make: Factory, lstm: bool) -> None:
    m = make(IN, HID).to(torch.bfloat16)
    out, state = m(torch.randn(3, 2, IN, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and all(s.dtype == torch.bfloat16 for s in _states(state, lstm))


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_non_contiguous_and_expanded_inputs_and_states(make: Factory, lstm: bool) -> None:
    m = make(IN, HID, num_layers=2).eval()
    x = torch.randn(3, 5, IN).transpose(0, 1)  # (5, 3, IN), not contiguous
    h = torch.randn(2, 1, HID).expand(2, 3, HID)  # expanded over the batch
    hx = (h, h.flip(-1)) if lstm else h
    dense = tuple(s.contiguous() for s in hx) if lstm else h.contiguous()
    out, state = m(x, hx)
    ref_out, ref_state = m(x.contiguous(), dense)
    torch.testing.assert_close(out, ref_out)
    for a, b in zip(_states(state, lstm), _states(ref_state, lstm), strict=True):
        torch.testing.assert_close(a, b)
    expanded = torch.randn(1, 1, IN).expand(5, 3, IN)
    torch.testing.assert_close(m(expanded)[0], m(expanded.contiguous())[0])


@pytest.mark.parametrize("make", [_torch_lstm, _rim_lstm], ids=["nn.LSTM", "RIMLSTM"])
def test_lstm_state_as_a_list(make: Factory) -> None:
    m = make(IN, HID).eval()
    x, hx = torch.randn(3, 2, IN), _state(True, 1, 2, HID)
    torch.testing.assert_close(m(x, list(hx))[0], m(x, hx)[0])


@pytest.mark.parametrize(
    ("kwargs", "torch_cls", "rim_cls", "error", "pattern"),
    [
        ({"bidirectional": True}, nn.LSTM, RIMLSTM, NotImplementedError, r"RIMLSTM does not implement bidirectional"),
        ({"bidirectional": True}, nn.GRU, RIMGRU, NotImplementedError, r"RIMGRU does not implement bidirectional"),
        ({"proj_size": 4}, nn.LSTM, RIMLSTM, NotImplementedError, r"RIMLSTM does not implement proj_size > 0"),
        ({"proj_size": 4}, nn.GRU, RIMGRU, ValueError, r"proj_size argument is only supported for LSTM"),
    ],
)
def test_nn_lstm_arguments_that_rims_do_not_implement(
    kwargs: dict, torch_cls: type, rim_cls: type, error: type, pattern: str
) -> None:
    """Refused by name, not with a bare 'unexpected keyword'; the defaults are accepted."""
    if error is NotImplementedError:
        torch_cls(IN, HID, **kwargs)  # torch accepts it
    with pytest.raises(error, match=pattern):
        rim_cls(IN, HID, UNITS, K, **kwargs)
    neutral = {key: type(value)() for key, value in kwargs.items()}  # False / 0: what nn.LSTM defaults to
    assert rim_cls(IN, HID, UNITS, K, **neutral).hidden_size == HID


@pytest.mark.parametrize(("make", "lstm"), MODULES)
def test_state_stays_bounded_on_a_long_carried_stream_under_training(make: Factory, lstm: bool) -> None:
    """A stateful model: 300 windows of 35 steps, state carried detached, AdamW at a high rate.

    ``nn.LSTM`` and ``nn.GRU`` keep ``|h| < 1`` by construction; so must the RIM default.
    """
    torch.manual_seed(0)
    m = make(IN, HID, num_layers=2)
    head = nn.Linear(HID, IN)
    opt = torch.optim.AdamW([*m.parameters(), *head.parameters()], lr=0.02)
    # 300 windows (10,500 steps); 40 for the models that run step by step (bounded by the same tanh)
    windows = 300 if make in (_torch_lstm, _torch_gru, _rim_lstm, _rim_gru) else 40
    stream = torch.randn(windows * 35 + 1, 4, IN).cumsum(0).sin()  # smooth, predictable signals
    state, peak = None, 0.0
    for i in range(0, windows * 35, 35):
        state = None if state is None else tuple(s.detach() for s in state) if lstm else state.detach()
        out, state = m(stream[i : i + 35], state)
        loss = (head(out) - stream[i + 1 : i + 36]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        h_n = _states(state, lstm)[0]  # h (an LSTM's c is not bounded, in nn.LSTM either)
        peak = max(peak, out.detach().abs().max().item(), h_n.detach().abs().max().item())
    assert torch.isfinite(loss)
    assert peak <= 1.0
