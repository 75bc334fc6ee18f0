"""The fused training path (rims.fast_paths.fused) equals the step-by-step autograd path it replaces."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch.autograd import gradcheck

from rims import RIMLSTM, RIMCell
from rims.fast_paths import native


@pytest.fixture(params=["native", "python"])
def loops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the fused path with the C++ time loops and with the Python ones."""
    if request.param == "python":
        monkeypatch.setenv("RIMS_NATIVE", "0")
    elif native.native_loops() is None:
        pytest.skip("the C++ time loops could not be built here (see the logged warning)")
    return request.param


CASES = list(itertools.product(["lstm", "gru"], [True, False], ["null_attention", "input_score"], [0.0, 0.3], [2, 4]))
UPDATES = ["bounded", "residual"]


def _cell(
    dynamics: str,
    bias: bool,
    selection: str,
    dropout: float,
    k: int,
    comm_value: int = 5,
    communication_update: str = "bounded",
) -> RIMCell:
    cell = RIMCell(
        5,
        12,
        4,
        k,
        bias=bias,
        dynamics=dynamics,
        selection=selection,
        input_key_size=6,
        input_value_size=7,
        num_comm_heads=2,
        comm_key_size=3,
        comm_value_size=comm_value,
        attention_dropout=dropout,
        communication_update=communication_update,
    )
    return cell.double().train()


def _run(cell: RIMCell, x: torch.Tensor, states: tuple[torch.Tensor, ...], fused: bool) -> list[torch.Tensor]:
    """Output, final states and gradients of a fixed loss w.r.t. input, states and parameters."""
    cell._fast_paths = fused
    x = x.clone().requires_grad_(True)
    states = tuple(s.clone().requires_grad_(True) for s in states)
    params = list(cell.parameters())
    torch.manual_seed(3)  # the same dropout draws on both paths
    out, finals, _ = cell.sequence(x, states)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weight).sum() + sum((f * f).sum() for f in finals)
    grads = torch.autograd.grad(loss, [x, *states, *params], allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip([x, *states, *params], grads, strict=True)]
    return [out.detach(), *(f.detach() for f in finals), *grads]


@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize(("dynamics", "bias", "selection", "dropout", "k"), CASES)
def test_fused_equals_step_by_step(
    loops: str, dynamics: str, bias: bool, selection: str, dropout: float, k: int, update: str
) -> None:
    _check_paths_agree(_cell(dynamics, bias, selection, dropout, k, communication_update=update))


@pytest.mark.parametrize("dynamics", ["lstm", "gru"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fused_equals_step_by_step_with_equal_key_and_value(loops: str, dynamics: str, dropout: float) -> None:
    """Key size == value size: the attention kernels index q, k and v by their own sizes."""
    _check_paths_agree(_cell(dynamics, True, "null_attention", dropout, 2, comm_value=3))


def _check_paths_agree(cell: RIMCell) -> None:
    torch.manual_seed(0)
    dynamics = cell.dynamics
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    states = tuple(torch.randn(3, 12, dtype=torch.float64) for _ in range(2 if dynamics == "lstm" else 1))
    fused, stepwise = _run(cell, x, states, True), _run(cell, x, states, False)
    for a, b in zip(fused, stepwise, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("dynamics", ["lstm", "gru"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_float32_fused_agrees_with_float64_step_by_step(loops: str, dynamics: str, dropout: float, update: str) -> None:
    """The float32 loops (the C++ ones use their own vectorised exp for the gates) stay within
    float32 rounding of the float64 step-by-step path."""
    reference = _cell(dynamics, True, "null_attention", dropout, 2, communication_update=update)
    single = copy.deepcopy(reference).float()
    torch.manual_seed(0)
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    states = tuple(torch.randn(3, 12, dtype=torch.float64) for _ in range(2 if dynamics == "lstm" else 1))
    expected = _run(reference, x, states, False)
    got = _run(single, x.float(), tuple(s.float() for s in states), True)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-5)


def _graph_nodes(tensor: torch.Tensor) -> set[str]:
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return names


def test_fused_path_is_taken_only_where_it_applies() -> None:
    x = torch.randn(4, 2, 5)
    one_head = RIMLSTM(5, 12, 4, 2)
    assert "_FusedSequenceBackward" in _graph_nodes(one_head(x)[0])
    out, _, _ = one_head(x, return_info=True)  # recording uses the step-by-step path
    assert "_FusedSequenceBackward" not in _graph_nodes(out)
    two_heads = RIMLSTM(5, 12, 4, 2, num_input_heads=2)
    assert "_FusedSequenceBackward" not in _graph_nodes(two_heads(x)[0])
    with torch.no_grad():
        assert one_head(x)[0].grad_fn is None


@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("dynamics", ["lstm", "gru"])
def test_fused_gradcheck(loops: str, dynamics: str, update: str) -> None:
    cell = (
        RIMCell(
            3,
            6,
            3,
            2,
            dynamics=dynamics,
            input_key_size=4,
            input_value_size=4,
            num_comm_heads=2,
            comm_key_size=2,
            comm_value_size=3,
            attention_dropout=0.2,
            communication_update=update,
        )
        .double()
        .train()
    )
    n_states = 2 if dynamics == "lstm" else 1

    def run(x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        torch.manual_seed(5)  # the same dropout draws on every evaluation
        out, finals, _ = cell.sequence(x, states)
        return (out, *finals)

    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    states = [torch.randn(2, 6, dtype=torch.float64, requires_grad=True) for _ in range(n_states)]
    assert gradcheck(run, (x, *states))


def test_scratch_reuse_keeps_live_graphs_intact(loops: str) -> None:
    """Two graphs alive at once, backward in either order, and retain_graph: all exact."""
    torch.manual_seed(0)
    m = RIMLSTM(5, 12, 4, 2, attention_dropout=0.0).double()
    x1, x2 = torch.randn(2, 7, 3, 5, dtype=torch.float64).unbind(0)

    def current() -> list[torch.Tensor]:
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in m.parameters()]

    def grads_alone(x: torch.Tensor) -> list[torch.Tensor]:
        m.zero_grad()
        m(x)[0].square().sum().backward()
        return current()

    expected1, expected2 = grads_alone(x1), grads_alone(x2)
    m.zero_grad()
    loss1, loss2 = m(x1)[0].square().sum(), m(x2)[0].square().sum()
    loss2.backward(retain_graph=True)
    got2 = current()
    m.zero_grad()
    m(x1)[0].sum().backward()  # a third call while both graphs are alive
    m.zero_grad()
    loss1.backward()
    got1 = current()
    m.zero_grad()
    loss2.backward()
    again2 = current()
    for a, b, c, d, e in zip(got1, expected1, got2, expected2, again2, strict=True):
        assert torch.equal(a, b) and torch.equal(c, d) and torch.equal(e, d)


def test_native_loops_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIMS_NATIVE", "0")
    assert native.native_loops() is None


@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize(("dynamics", "bias", "selection", "k"), [c[:3] + c[4:] for c in CASES if c[3] == 0.0])
def test_native_acting_step_equals_step_by_step(dynamics: str, bias: bool, selection: str, k: int, update: str) -> None:
    if native.native_loops() is None:
        pytest.skip("the C++ time loops could not be built here (see the logged warning)")
    torch.manual_seed(0)
    cell = _cell(dynamics, bias, selection, 0.0, k, communication_update=update).eval()
    x = torch.randn(1, 3, 5, dtype=torch.float64)
    states = tuple(torch.randn(3, 12, dtype=torch.float64) for _ in range(2 if dynamics == "lstm" else 1))
    with torch.no_grad():
        out, finals, _ = cell.sequence(x, states)
        cell._fast_paths = False
        ref_out, ref_finals, _ = cell.sequence(x, states)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    for a, b in zip(finals, ref_finals, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_native_loops_apply_only_to_cpu_float32_and_float64() -> None:
    assert native.loops_for(torch.zeros(1, dtype=torch.bfloat16)) is None
    assert native.loops_for(torch.zeros(1, device="meta")) is None


def test_bfloat16_training_runs_the_python_loops() -> None:
    m = RIMLSTM(5, 12, 4, 2).to(torch.bfloat16)
    out, _ = m(torch.randn(3, 2, 5, dtype=torch.bfloat16))
    assert "_FusedSequenceBackward" in _graph_nodes(out)
    out.float().square().sum().backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g.float()).all() for g in grads)


def test_scratch_pool_hands_back_given_tensors_within_its_bounds() -> None:
    from rims.fast_paths import scratch

    scratch.clear()
    like = torch.zeros(1, dtype=torch.float64)
    first = scratch.take((2, 3), like)
    assert first.shape == (2, 3) and first.dtype == torch.float64
    extra = [scratch.take((2, 3), like) for _ in range(scratch.MAX_FREE + 1)]
    scratch.give([first, *extra])
    again = [scratch.take((2, 3), like) for _ in range(scratch.MAX_FREE + 1)]
    reused = sum(any(a is b for b in [first, *extra]) for a in again)
    assert reused == scratch.MAX_FREE  # at most MAX_FREE idle tensors per shape are kept
    assert scratch.take((3, 2), like) is not first  # another shape never gets them
    scratch.clear()


def test_cpu_tuning_names_the_cpu_it_tunes_for(monkeypatch: pytest.MonkeyPatch) -> None:
    flags, key = native.cpu_tuning()
    if flags:
        assert flags == ["-march=native"] and len(key) == 12
        monkeypatch.setattr(native.Path, "read_text", lambda self: "model name\t: Other CPU\nflags\t\t: sse2\n")
        assert native.cpu_tuning()[1] not in (key, "generic")
    else:
        assert key == "generic"
    monkeypatch.setattr(native.platform, "machine", lambda: "aarch64")
    assert native.cpu_tuning() == ([], "generic")


def test_acting_step_takes_non_contiguous_states() -> None:
    torch.manual_seed(0)
    m = RIMLSTM(5, 12, 4, 2).eval()
    x = torch.randn(1, 3, 5)
    h, c = (torch.randn(1, 12, 3).transpose(1, 2) for _ in range(2))  # (1, 3, 12), last dim strided
    with torch.no_grad():
        out, (h_n, c_n) = m(x, (h, c))
        ref, (h_ref, c_ref) = m(x, (h.contiguous(), c.contiguous()))
    for a, b in ((out, ref), (h_n, h_ref), (c_n, c_ref)):
        torch.testing.assert_close(a, b)
