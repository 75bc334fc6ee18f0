"""The remedies against selection collapse (rims/remedies.py): noisy top-k, loss-free balancing,
the Switch balance loss and the initial state, on every path of the plain RIM."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch

from rims import RIMGRU, RIMLSTM, RIMCell
from rims.fast_paths import dispatch as fast_paths
from rims.fast_paths import native as _native
from rims.options import RIMOptions
from rims.remedies import acting_noise, counted_rows, replayed_noise, switch_balance_loss
from tests.test_fused import loops  # noqa: F401 - the fixture: C++ and Python time loops

REMEDIES: list[dict[str, Any]] = [
    {"selection_noise": 0.5},
    {"selection_noise": 0.5, "selection_noise_learned": True, "balance_loss": 0.1},
    {"selection_noise": 0.5, "selection_noise_anneal": 3},
    {"balance_rate": 0.1},
    {"balance_loss": 0.1},
    {"balance_loss": 0.1, "selection": "input_score", "balance_rate": 0.01},
    {"initial_state": "learned"},
]


def _cell(dynamics: str, dropout: float = 0.0, **options: Any) -> RIMCell:
    cell = RIMCell(
        5, 12, 4, 2, dynamics=dynamics, input_key_size=6, input_value_size=7, num_comm_heads=2,
        comm_key_size=3, comm_value_size=5, attention_dropout=dropout, **options,
    )  # fmt: skip
    with torch.no_grad():
        if cell.options.balance_rate > 0:
            cell.selection_bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0]))
        if cell.options.selection_noise_learned:
            cell.selection_noise_log_scale.copy_(torch.tensor([0.2, -0.1, 0.0, 0.3]))
        if cell.options.initial_state == "learned":
            for p in (cell.initial_h, getattr(cell, "initial_c", None)):
                if p is not None:
                    p.uniform_(-0.5, 0.5)
    return cell.double().train()


def _run(cell: RIMCell, x: torch.Tensor, fused: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Output, final states, the aux loss and gradients of a fixed loss; the buffers after the call."""
    cell._fast_paths = fused
    x = x.clone().requires_grad_(True)
    params = list(cell.parameters())
    torch.manual_seed(3)  # the same noise and dropout draws on both paths
    states = cell._cell_state(None, x[0], True)
    out, finals, _ = cell.sequence(x, states)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weight).sum() + sum((f * f).sum() for f in finals)
    aux = cell._aux_loss
    if aux is not None:
        loss = loss + aux
    grads = torch.autograd.grad(loss, [x, *params], allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip([x, *params], grads, strict=True)]
    values = [out.detach(), *(f.detach() for f in finals), *grads]
    if aux is not None:
        values.append(aux.detach())
    return values, {k: v.clone() for k, v in cell.named_buffers()}


@pytest.mark.parametrize("dynamics", ["lstm", "gru"])
@pytest.mark.parametrize("options", REMEDIES)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.usefixtures("loops")
def test_fused_equals_step_by_step_with_each_remedy(dynamics: str, options: dict[str, Any], dropout: float) -> None:
    cell = _cell(dynamics, dropout, **options)
    initial = {k: v.clone() for k, v in cell.named_buffers()}
    assert cell.path(torch.zeros(3, 2, 5, dtype=torch.float64)) in (fast_paths.FUSED_NATIVE, fast_paths.FUSED_PYTHON)
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    fused, fused_buffers = _run(cell, x, fused=True)
    for name, value in initial.items():
        cell.get_buffer(name).copy_(value)  # the same bias and annealing count for the step path
    step, step_buffers = _run(cell, x, fused=False)
    assert len(fused) == len(step)
    for a, b in zip(fused, step, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert fused_buffers.keys() == step_buffers.keys()
    for name in fused_buffers:
        torch.testing.assert_close(fused_buffers[name], step_buffers[name])


@pytest.mark.parametrize("selection", ["null_attention", "input_score"])
def test_native_acting_step_uses_the_balancing_bias(selection: str) -> None:
    if _native.native_loops() is None:
        pytest.skip("the C++ time loops could not be built here")
    torch.manual_seed(0)
    cell = _cell("lstm", balance_rate=0.1, selection=selection).float().eval()
    with torch.no_grad():
        cell.selection_bias.copy_(torch.tensor([2.0, -2.0, 1.0, 0.0]))
        x, states = torch.randn(1, 8, 5), (torch.randn(8, 12) * 0.5, torch.randn(8, 12) * 0.5)
        assert cell.path(x) == fast_paths.NATIVE_STEP
        fast = cell.sequence(x, states)
        cell._fast_paths = False
        slow = cell.sequence(x, states, record=True)
    assert slow[2] is not None and torch.equal(slow[2].active[0, 0, :, 0], torch.tensor([True] * 8))
    torch.testing.assert_close(fast[0], slow[0], rtol=1e-5, atol=1e-6)


def test_noise_only_in_training_mode_and_reproducible_for_a_seed() -> None:
    torch.manual_seed(0)
    rim = RIMLSTM(5, 16, 4, 2, selection_noise=5.0)
    x = torch.randn(20, 3, 5)
    rim.eval()
    with torch.no_grad():
        first, second = rim(x)[0], rim(x)[0]
    assert torch.equal(first, second)  # evaluation: deterministic, no noise
    rim.train()

    def active(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        with torch.no_grad():
            return rim(x, return_info=True)[2].active

    noisy = active(1)
    assert torch.equal(noisy, active(1))
    assert not torch.equal(noisy, active(2))  # the noise changes the choice (scale 5)
    rim.eval()
    with torch.no_grad():
        assert not torch.equal(rim(x, return_info=True)[2].active, noisy)


def test_noise_is_drawn_on_the_input_device_and_dtype() -> None:
    cell = RIMCell(5, 12, 4, 2, selection_noise=1.0).double().train()
    from rims.remedies import begin_selection

    x = torch.zeros(3, 2, 5, dtype=torch.float64)
    selection = begin_selection(cell, 3, 2, x)
    assert selection is not None and selection.offset is not None
    assert selection.offset.shape == (3, 4, 2, 1) and selection.offset.dtype == torch.float64


def test_annealing_decays_the_noise_to_zero_and_counts_in_the_state_dict() -> None:
    cell = RIMCell(5, 12, 4, 2, selection_noise=1.0, selection_noise_anneal=2).train()
    from rims.remedies import begin_selection

    x = torch.zeros(1, 2, 5)
    offsets = [begin_selection(cell, 1, 2, x) for _ in range(3)]
    assert offsets[0] is not None and offsets[1] is not None and offsets[2] is None  # factor 1, 0.5, 0
    assert int(cell.state_dict()["selection_noise_calls"]) == 3


def test_bias_is_in_the_state_dict_and_round_trips() -> None:
    torch.manual_seed(0)
    rim = RIMLSTM(5, 16, 4, 2, balance_rate=0.05)
    assert "layers.0.selection_bias" in rim.state_dict()
    assert "layers.0.selection_bias" not in RIMLSTM(5, 16, 4, 2).state_dict()  # defaults: keys unchanged
    rim.train()
    out, _ = rim(torch.randn(7, 4, 5))
    out.sum().backward()
    bias = rim.layers[0].selection_bias.clone()
    assert bias.abs().sum() > 0
    buffer = io.BytesIO()
    torch.save(rim.state_dict(), buffer)
    buffer.seek(0)
    other = RIMLSTM(5, 16, 4, 2, balance_rate=0.05)
    other.load_state_dict(torch.load(buffer))
    assert torch.equal(other.layers[0].selection_bias, bias)


def test_bias_update_moves_toward_equal_load() -> None:
    torch.manual_seed(0)
    cell = RIMCell(5, 12, 4, 1, balance_rate=0.03, attention_dropout=0.0).train()
    x = torch.randn(10, 16, 5)
    states = cell._cell_state(None, x[0], True)

    def loads() -> torch.Tensor:
        cell._fast_paths = False
        with torch.no_grad():
            info = cell.sequence(x, states, record=True)[2]
        assert info is not None
        return info.active.float().mean((0, 1, 2))

    before = loads()
    for _ in range(41):
        cell.sequence(x, states)  # training calls with gradients update the bias
    after = loads()
    assert (after - 0.25).abs().max() < (before - 0.25).abs().max()
    bias = cell.selection_bias
    assert bias.abs().sum() > 0 and bias.grad is None


def test_switch_balance_loss_on_a_hand_case() -> None:
    # 2 units, k = 1, 2 rows: unit 0 active in both; softmax of [0, 0] and [ln 3, 0]
    masks = torch.tensor([[[1.0], [1.0]], [[0.0], [0.0]]]).unsqueeze(0)  # (1, U=2, N=2, 1)
    ln3 = float(torch.tensor(3.0).log())
    logits = torch.tensor([[[0.0], [ln3]], [[0.0], [0.0]]]).unsqueeze(0)  # row 1: P = (0.75, 0.25)
    loss = switch_balance_loss(masks, logits, k=1, alpha=0.1)
    p0 = (0.5 + 0.75) / 2
    torch.testing.assert_close(loss, torch.tensor(0.1 * 2 * (1.0 * p0 + 0.0)))
    alternating = torch.tensor([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]])  # (L=2, U=2, N=1, 1)
    balanced = switch_balance_loss(alternating, torch.zeros(2, 2, 1, 1), 1, 1.0)
    torch.testing.assert_close(balanced, torch.tensor(1.0))  # alpha at equal load


def _padded_call(x: torch.Tensor, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The balance loss and the balancing bias after one training call of a fresh seeded layer."""
    torch.manual_seed(0)
    rim = RIMLSTM(5, 16, 4, 2, balance_loss=0.1, balance_rate=0.5, num_layers=2, attention_dropout=0.0).double()
    with counted_rows(rim, rows):
        rim(x)
    aux = rim.aux_loss()
    assert aux is not None
    return aux.detach(), torch.stack([layer.selection_bias.clone() for layer in rim.layers])


def test_counted_rows_leave_the_marked_rows_out_of_the_loads_and_the_loss() -> None:
    # sequences of lengths 6, 3, 1, padded at their ends to 6 steps (the packed update's layout)
    lengths = torch.tensor([6, 3, 1])
    rows = (torch.arange(6).unsqueeze(1) < lengths).double()  # (L, N)
    torch.manual_seed(1)
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    junk = torch.where(rows.bool().unsqueeze(-1), x, 50.0 * torch.randn_like(x))  # padding changed only
    loss, bias = _padded_call(x, rows)
    torch.testing.assert_close(_padded_call(junk, rows), (loss, bias))  # padding counts in neither
    loss_all, bias_all = _padded_call(junk, None)
    assert not torch.allclose(loss_all, loss) or not torch.equal(bias_all, bias)  # it does when every row counts
    same = torch.ones(3, 3, dtype=torch.float64)  # the first 3 steps of every sequence: as if the rest were absent
    padded_same = torch.cat([same, torch.zeros(3, 3, dtype=torch.float64)])
    torch.testing.assert_close(_padded_call(x, padded_same), _padded_call(x[:3], None))
    with pytest.raises(ValueError, match=r"weights of shape \(5, 3\) for a call of \(L, N\) = \(6, 3\)"):
        _padded_call(x, rows[:5])
    with pytest.raises(ValueError, match=r"must be \(L, N\), got shape \(6,\)"):
        _padded_call(x, rows[:, 0])


def test_counted_rows_are_gone_after_the_block() -> None:
    rim = RIMGRU(5, 16, 4, 2, balance_loss=0.1)
    with pytest.raises(RuntimeError, match="inside"), counted_rows(rim, torch.ones(2, 3)):
        raise RuntimeError("inside")
    assert all(not hasattr(layer, "_counted_rows") for layer in rim.layers)
    rim(torch.randn(4, 3, 5))  # a (4, 3) call: the (2, 3) weights no longer apply
    with counted_rows(torch.nn.Linear(2, 2), torch.ones(2, 3)):  # no RIM layer: nothing to count
        pass


def test_acting_noise_is_drawn_in_evaluation_and_replayed_in_training() -> None:
    torch.manual_seed(0)
    rim = RIMLSTM(5, 16, 4, 2, num_layers=2, attention_dropout=0.0, selection_noise=3.0, selection_noise_anneal=100)
    x = torch.randn(3, 4, 5)
    rim.eval()
    plain, _ = rim(x)
    with acting_noise(rim) as draws:
        noisy, _ = rim(x)
    assert len(draws) == 2 and all(eps.shape == (3, 4, 4, 1) for eps in draws)  # per layer (L, U, N, 1)
    assert not torch.allclose(plain, noisy)  # the noise changed the selection
    assert int(rim.layers[0].selection_noise_calls) == 0  # acting calls do not anneal
    with torch.no_grad():
        torch.testing.assert_close(rim(x)[0], plain)  # outside the block: no noise in evaluation
    stacked = torch.stack([eps.squeeze(-1).transpose(1, 2) for eps in draws], dim=2)  # (L, N, num_layers, U)
    rim.train()
    with replayed_noise(rim, stacked):
        replayed, _ = rim(x)
    torch.testing.assert_close(replayed, noisy)  # the training call selected as the acting call did
    assert int(rim.layers[0].selection_noise_calls) == 1
    assert not torch.allclose(rim(x)[0], noisy)  # outside the block: fresh draws
    wrong_rank = r"draws must be \(L, N, num_layers=2, U\), got shape \(3, 4, 4\)"
    with pytest.raises(ValueError, match=wrong_rank), replayed_noise(rim, stacked[:, :, 0]):
        pass
    wrong_steps = r"draws of shape \(2, 4, 4\) for a call of \(L, N, U\) = \(3, 4, 4\)"
    with pytest.raises(ValueError, match=wrong_steps), replayed_noise(rim, stacked[:2]):
        rim(x)


def test_aux_loss_only_after_a_training_call() -> None:
    torch.manual_seed(0)
    rim = RIMGRU(5, 16, 4, 2, balance_loss=0.01, num_layers=2)
    x = torch.randn(4, 3, 5)
    assert rim.aux_loss() is None
    rim(x)
    loss = rim.aux_loss()
    assert loss is not None and loss.requires_grad and loss.dim() == 0
    rim.eval()
    with torch.no_grad():
        rim(x)
    assert rim.aux_loss() is None
    assert RIMLSTM(5, 16, 4, 2).train().aux_loss() is None


def test_learned_noise_scale_gets_its_gradient_from_the_balance_loss_only() -> None:
    torch.manual_seed(0)
    for balance_loss, nonzero in ((0.0, False), (1.0, True)):
        rim = RIMLSTM(5, 16, 4, 2, selection_noise=1.0, selection_noise_learned=True, balance_loss=balance_loss)
        out, _ = rim(torch.randn(6, 3, 5))
        loss = out.sum() + (rim.aux_loss() if balance_loss else 0.0)
        loss.backward()
        grad = rim.layers[0].selection_noise_log_scale.grad
        assert grad is not None and bool(grad.abs().sum() > 0) == nonzero


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
def test_learned_initial_state_gets_gradients(cls: type) -> None:
    torch.manual_seed(0)
    rim = cls(5, 16, 4, 2, initial_state="learned", num_layers=2)
    out = rim(torch.randn(6, 3, 5))[0]
    out.sum().backward()
    layer = rim.layers[0]
    assert layer.initial_h.grad is not None and layer.initial_h.grad.abs().sum() > 0
    if cls is RIMLSTM:
        assert layer.initial_c.grad is not None and layer.initial_c.grad.abs().sum() > 0
    h0 = rim.initial_state(3, torch.zeros(1))
    assert len(h0) == (2 if cls is RIMLSTM else 1) and h0[0].shape == (2, 3, 16)


def test_random_initial_state_is_reproducible_for_a_seed() -> None:
    rim = RIMLSTM(5, 16, 4, 2, initial_state="random", initial_state_std=0.5)
    like = torch.zeros(1, dtype=torch.float64)
    torch.manual_seed(4)
    first = rim.initial_state(3, like)
    torch.manual_seed(4)
    second = rim.initial_state(3, like)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert first[0].dtype == torch.float64 and 0.3 < float(first[0].std()) < 0.7
    assert not torch.equal(first[0], rim.initial_state(3, like)[0])  # a fresh draw per reset


def test_options_are_validated_with_expected_and_given() -> None:
    with pytest.raises(ValueError, match=r"selection_noise must be a finite float >= 0, got -1"):
        RIMOptions(selection_noise=-1)
    with pytest.raises(TypeError, match=r"selection_noise_learned must be a bool, got 1 of type int"):
        RIMOptions(selection_noise_learned=1)
    with pytest.raises(ValueError, match=r"selection_noise_anneal must be an int >= 0, got -2"):
        RIMLSTM(5, 16, 4, 2, selection_noise_anneal=-2)
    with pytest.raises(TypeError, match=r"balance_rate must be a float >= 0, got 'x' of type str"):
        RIMCell(5, 16, 4, 2, balance_rate="x")
    with pytest.raises(ValueError, match=r"initial_state must be one of \['zeros', 'learned', 'random'\], got 'ones'"):
        RIMGRU(5, 16, 4, 2, initial_state="ones")


def test_a_layer_with_a_balance_loss_deep_copies_and_pickles() -> None:
    rim = RIMLSTM(5, 16, 4, 2, balance_loss=0.1)
    rim(torch.randn(3, 2, 5))
    assert rim.aux_loss() is not None
    copied = copy.deepcopy(rim)  # e.g. a policy copied after a training forward
    assert copied.aux_loss() is None and rim.aux_loss() is not None
    buffer = io.BytesIO()
    torch.save(rim, buffer)
