"""The JAX RIM is the PyTorch RIM: outputs, states, active units and gradients agree.

Skipped when JAX/Flax are not installed (``pip install .[jax]``); CI installs them.
float32 tolerance: both frameworks round differently (op order, fused multiply-adds) at
about 1e-7 relative per op; over 50 recurrent steps the seed configuration drifts to ~1e-6,
so outputs must agree to 1e-5. float64 must agree to 1e-12. A top-k near-tie could flip a
selection in float32; the active masks are compared exactly, so that would fail loudly.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
import jax.numpy as jnp  # noqa: E402

from rims import RIMGRU, RIMLSTM, RIMCell  # noqa: E402
from rims import jax as rims_jax  # noqa: E402
from rims.jax import (  # noqa: E402
    RIMConfig,
    flax_module_for,
    from_torch,
    layer_sequence,
    params_from_torch,
    params_to_torch,
)

jax.config.update("jax_enable_x64", True)

UPDATES = ["bounded", "residual"]

SMALL = {
    "input_key_size": 6,
    "input_value_size": 7,
    "num_comm_heads": 2,
    "comm_key_size": 3,
    "comm_value_size": 5,
}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _torch_rim(cls: type, *args: object, communication_update: str, **kwargs: object) -> torch.nn.Module:
    """The PyTorch module computing ``communication_update``; a ``rims`` from before that
    keyword computes the paper's ``"residual"`` update and has no other."""
    try:
        return cls(*args, communication_update=communication_update, **kwargs)
    except TypeError:
        if communication_update != "residual":
            pytest.skip("this rims has no communication_update keyword")
        return cls(*args, **kwargs)


@pytest.mark.parametrize("update", UPDATES)
def test_seed_configuration_float32_matches_torch(update: str) -> None:
    torch.manual_seed(0)
    m = _torch_rim(RIMLSTM, 600, 300, 6, 4, communication_update=update).eval()
    x = torch.randn(50, 64, 600)
    with torch.no_grad():
        out, (h, c), info = m(x, return_info=True)
    variables = params_from_torch(m)
    j_out, (j_h, j_c), j_info = flax_module_for(m).apply(variables, jnp.asarray(_np(x)), return_info=True)
    assert j_out.dtype == jnp.float32
    assert np.array_equal(np.asarray(j_info.active), _np(info.active))
    for a, b in ((j_out, out), (j_h, h), (j_c, c)):
        np.testing.assert_allclose(np.asarray(a), _np(b), rtol=0, atol=1e-5)


# Every option value twice in the fast suite (a covering subset, each case a new XLA compilation);
# the whole product of options runs with -m slow.
_FLOAT64_FAST = {
    (RIMLSTM, 1, True, "null_attention", "bounded"),
    (RIMGRU, 2, False, "input_score", "bounded"),
    (RIMLSTM, 2, True, "input_score", "residual"),
    (RIMGRU, 1, False, "null_attention", "residual"),
}
_FLOAT64_CASES = [
    pytest.param(*case, marks=() if case in _FLOAT64_FAST else pytest.mark.slow)
    for case in itertools.product([RIMLSTM, RIMGRU], [1, 2], [True, False], ["null_attention", "input_score"], UPDATES)
]


@pytest.mark.parametrize(("cls", "heads", "bias", "selection", "update"), _FLOAT64_CASES)
def test_float64_matches_torch_tightly(cls: type, heads: int, bias: bool, selection: str, update: str) -> None:
    torch.manual_seed(1)
    options = {"bias": bias, "selection": selection, "num_input_heads": heads, **SMALL}
    m = _torch_rim(cls, 5, 12, 4, 2, num_layers=2, communication_update=update, **options)
    m = m.double().eval()
    x = torch.randn(50, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        out, state, info = m(x, return_info=True)
    j_out, j_state, j_info = from_torch_with_info(m, x)
    np.testing.assert_allclose(np.asarray(j_out), _np(out), rtol=0, atol=1e-12)
    for a, b in zip(_tuple(j_state), _tuple(state), strict=True):
        np.testing.assert_allclose(np.asarray(a), _np(b), rtol=0, atol=1e-12)
    assert np.array_equal(np.asarray(j_info.active), _np(info.active))
    np.testing.assert_allclose(np.asarray(j_info.input_attention), _np(info.input_attention), atol=1e-12)
    np.testing.assert_allclose(np.asarray(j_info.comm_attention), _np(info.comm_attention), atol=1e-12)


def from_torch_with_info(m: torch.nn.Module, x: torch.Tensor) -> tuple:
    return flax_module_for(m).apply(params_from_torch(m), jnp.asarray(_np(x)), return_info=True)


def _tuple(state: object) -> tuple:
    return tuple(state) if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
def test_from_torch_keeps_the_calling_convention(cls: type) -> None:
    m = cls(6, 16, 4, 2, num_layers=2, batch_first=True).eval()
    f = from_torch(m)
    x = torch.randn(3, 7, 6)  # (N, L, H_in)
    hx = torch.randn(2, 3, 16)
    state = (hx, torch.randn(2, 3, 16)) if cls is RIMLSTM else hx
    with torch.no_grad():
        out, t_state = m(x, state)
    j_state_in = tuple(jnp.asarray(_np(s)) for s in state) if cls is RIMLSTM else jnp.asarray(_np(state))
    j_out, j_state = f(_np(x), j_state_in)
    assert j_out.shape == (3, 7, 16)
    np.testing.assert_allclose(np.asarray(j_out), _np(out), atol=1e-5)
    for a, b in zip(_tuple(j_state), _tuple(t_state), strict=True):
        assert a.shape == (2, 3, 16)
        np.testing.assert_allclose(np.asarray(a), _np(b), atol=1e-5)
    u_out, u_state = f(_np(x[0]))  # unbatched (L, H_in)
    assert u_out.shape == (7, 16) and all(s.shape == (2, 16) for s in _tuple(u_state))


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
@pytest.mark.parametrize("update", UPDATES)
def test_gradients_agree(cls: type, update: str) -> None:
    torch.manual_seed(2)
    m = _torch_rim(cls, 5, 12, 4, 2, communication_update=update, **SMALL).double().eval()
    x = torch.randn(20, 3, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(20, 3, 12, dtype=torch.float64)
    out, _ = m(x)
    (out * weight).sum().backward()
    flax_module, variables = flax_module_for(m), params_from_torch(m)

    def loss(params: dict, inputs: jax.Array) -> jax.Array:
        return (flax_module.apply(params, inputs)[0] * jnp.asarray(_np(weight))).sum()

    g_params, g_x = jax.grad(loss, argnums=(0, 1))(variables, jnp.asarray(_np(x)))
    np.testing.assert_allclose(np.asarray(g_x), _np(x.grad), rtol=0, atol=1e-10)
    for name, p in m.named_parameters():
        _, layer, leaf = name.split(".")
        expected = np.zeros(p.shape) if p.grad is None else _np(p.grad)
        np.testing.assert_allclose(np.asarray(g_params["params"][f"layers_{layer}"][leaf]), expected, atol=1e-10)


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
@pytest.mark.parametrize("update", UPDATES)
def test_float32_gradients_agree(cls: type, update: str) -> None:
    """float32 catches what float64 cannot: XLA's float32 CPU kernels (one of its fusions once
    returned a wrong gradient in float32 only). Per parameter, within 1e-5 of the largest entry
    of the PyTorch gradient (measured: 1.3e-6)."""
    torch.manual_seed(3)
    m = _torch_rim(cls, 16, 32, 4, 3, communication_update=update).eval()
    x, weight = torch.randn(30, 8, 16), torch.randn(30, 8, 32)
    out, _ = m(x)
    (out * weight).sum().backward()
    flax_module = flax_module_for(m)

    def loss(params: dict) -> jax.Array:
        return (flax_module.apply(params, jnp.asarray(_np(x)))[0] * jnp.asarray(_np(weight))).sum()

    grads = jax.grad(loss)(params_from_torch(m))["params"]
    for name, p in m.named_parameters():
        _, layer, leaf = name.split(".")
        expected = np.zeros(p.shape, np.float32) if p.grad is None else _np(p.grad)
        got = np.asarray(grads[f"layers_{layer}"][leaf])
        assert got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max(), name


def test_jit_and_vmap_of_the_pure_sequence() -> None:
    cell = RIMCell(5, 12, 4, 2, **SMALL).double().eval()
    cfg = RIMConfig(5, 12, 4, 2, **SMALL)
    params = {k: jnp.asarray(_np(v)) for k, v in cell.state_dict().items()}
    xs = jax.random.normal(jax.random.PRNGKey(0), (4, 10, 3, 5))  # 4 independent sequences
    state = tuple(jnp.zeros((3, 12)) for _ in range(2))
    run = jax.jit(lambda x: layer_sequence(params, cfg, x, state)[0])
    batched = jax.vmap(run)(xs)
    for i in range(4):
        with torch.no_grad():
            zeros = torch.zeros(3, 12, dtype=torch.float64)
            expected, _, _ = cell.sequence(torch.tensor(np.asarray(xs[i])), (zeros, zeros))
        np.testing.assert_allclose(np.asarray(batched[i]), _np(expected), atol=1e-12)


def test_episode_starts_reset_a_batch_element() -> None:
    module = rims_jax.RIMLSTM(6, 16, 4, 2)
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 3, 6))
    variables = module.init(jax.random.PRNGKey(2), x)
    state = (jnp.ones((1, 3, 16)), jnp.ones((1, 3, 16)))
    starts = jnp.zeros((8, 3), bool).at[4, 1].set(True)
    out, _ = module.apply(variables, x, state, episode_starts=starts)
    fresh, _ = module.apply(variables, x[4:, 1:2])
    np.testing.assert_allclose(np.asarray(out[4:, 1:2]), np.asarray(fresh), atol=1e-6)
    plain, _ = module.apply(variables, x, state)
    np.testing.assert_allclose(np.asarray(out[:, [0, 2]]), np.asarray(plain[:, [0, 2]]), atol=1e-6)


def test_flax_cell_runs_in_nn_rnn_and_dropout_needs_an_rng() -> None:
    import flax.linen as nn

    rnn = nn.RNN(rims_jax.RIMCell(6, 16, 4, 2))
    x = jnp.ones((3, 5, 6), jnp.float32)  # Flax's batch-major (N, L, H_in)
    variables = rnn.init(jax.random.PRNGKey(0), x)
    assert rnn.apply(variables, x).shape == (3, 5, 16)
    module = rims_jax.RIMLSTM(6, 16, 4, 2, num_layers=2, dropout=0.5)
    seq = jnp.ones((5, 3, 6), jnp.float32)
    variables = module.init(jax.random.PRNGKey(0), seq)
    eval_out = module.apply(variables, seq)[0]
    train_out = module.apply(variables, seq, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})[0]
    assert not np.allclose(np.asarray(eval_out), np.asarray(train_out))


@pytest.mark.parametrize("cls", [rims_jax.RIMLSTM, rims_jax.RIMGRU])
def test_bounded_update_keeps_the_state_below_one_where_residual_grows(cls: type) -> None:
    """1000 steps, weights 3x their initial range: the paper's residual update blows up, the
    bounded one keeps every ``|h| < 1`` (float64: in float32 tanh may round to 1.0)."""
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (1000, 4, 8), jnp.float64)
    peaks = {}
    for update in UPDATES:
        module = cls(8, 32, 4, 2, attention_dropout=0.0, communication_update=update, param_dtype=jnp.float64)
        variables = jax.tree_util.tree_map(lambda p: 3.0 * p, module.init(jax.random.PRNGKey(1), x[:2]))
        out = np.asarray(module.apply(variables, x)[0])
        peaks[update] = float(np.abs(out).max()) if np.isfinite(out).all() else float("inf")
    assert peaks["bounded"] < 1.0
    assert peaks["residual"] > 10.0, peaks


def test_communication_update_default_and_errors() -> None:
    assert RIMConfig(4, 8, 2, 1).communication_update == "bounded"
    assert rims_jax.RIMLSTM(4, 8, 2, 1).communication_update == "bounded"
    expected = "communication_update must be one of ['bounded', 'residual'], got 'tanh'"
    for build in (
        lambda: RIMConfig(4, 8, 2, 1, communication_update="tanh"),
        lambda: rims_jax.RIMCell(4, 8, 2, 1, communication_update="tanh"),
        lambda: rims_jax.RIMGRU(4, 8, 2, 1, communication_update="tanh"),
    ):
        with pytest.raises(ValueError) as error:
            build()
        assert str(error.value) == expected


def test_from_torch_reads_the_communication_update() -> None:
    for update in UPDATES:
        m = _torch_rim(RIMLSTM, 6, 16, 4, 2, communication_update=update)
        assert flax_module_for(m).communication_update == update
    old = RIMGRU(6, 16, 4, 2, num_layers=2)  # a module saved before the option existed
    for cell in old.layers:
        cell.__dict__.pop("communication_update", None)
    assert not hasattr(old.layers[0], "communication_update")
    assert flax_module_for(old).communication_update == "residual"


def test_flax_cell_takes_the_communication_update() -> None:
    import flax.linen as nn

    x = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 6), jnp.float32)  # Flax: (N, L, H_in)
    outs = {}
    for update in UPDATES:
        rnn = nn.RNN(rims_jax.RIMCell(6, 16, 4, 2, communication_update=update))
        outs[update] = rnn.apply(rnn.init(jax.random.PRNGKey(1), x), x)
    assert not np.allclose(np.asarray(outs["bounded"]), np.asarray(outs["residual"]))
    assert float(jnp.abs(outs["bounded"]).max()) < 1.0


@pytest.mark.parametrize("dynamics", ["lstm", "gru"])
def test_step_by_step_equals_the_sequence(dynamics: str) -> None:
    """``rims.jax.step`` (what ``nn.RNN`` runs) and ``layer_sequence`` compute the same."""
    import flax.linen as nn

    cell = rims_jax.RIMCell(6, 16, 4, 2, dynamics=dynamics, num_input_heads=2, param_dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 7, 6), jnp.float64)  # (N, L, H_in)
    rnn = nn.RNN(cell)
    variables = rnn.init(jax.random.PRNGKey(1), x)
    stepped = rnn.apply(variables, x)
    params = dict(variables["params"]["cell"])
    state = rims_jax.zero_state(cell.config, 3, jnp.float64)
    whole, _, _ = layer_sequence(params, cell.config, jnp.swapaxes(x, 0, 1), state)
    np.testing.assert_allclose(np.asarray(stepped), np.asarray(jnp.swapaxes(whole, 0, 1)), atol=1e-12)


def test_params_round_trip() -> None:
    a, b = RIMGRU(6, 16, 4, 2, num_layers=2), RIMGRU(6, 16, 4, 2, num_layers=2)
    params_to_torch(params_from_torch(a), b)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((8, 16, 4, 5), {}), ((8, 18, 4, 2), {}), ((8, 16, 0, 2), {}), ((8, 16, 4, 2), {"selection": "x"})],
)
def test_construction_errors_match_torch(args: tuple, kwargs: dict) -> None:
    with pytest.raises(Exception) as torch_error:
        RIMLSTM(*args, **kwargs)
    with pytest.raises(type(torch_error.value)) as jax_error:
        rims_jax.RIMLSTM(*args, **kwargs)
    assert str(jax_error.value) == str(torch_error.value)


@pytest.mark.parametrize(
    ("x_shape", "state_shape"),
    [((3, 2, 4, 6), None), ((3, 2, 7), None), ((3, 2, 6), (1, 4, 16)), ((3, 6), (1, 1, 16))],
)
def test_call_errors_match_torch(x_shape: tuple, state_shape: tuple | None) -> None:
    m = RIMLSTM(6, 16, 4, 2)
    state = None if state_shape is None else (torch.zeros(state_shape), torch.zeros(state_shape))
    with pytest.raises(Exception) as torch_error:
        m(torch.zeros(x_shape), state)
    j_state = None if state is None else tuple(jnp.zeros(state_shape) for _ in range(2))
    with pytest.raises(type(torch_error.value)) as jax_error:
        from_torch(m)(np.zeros(x_shape, np.float32), j_state)
    assert str(jax_error.value) == str(torch_error.value)


def test_rims_imports_without_jax() -> None:
    code = (
        "import sys; sys.modules['jax'] = None; sys.modules['flax'] = None\n"
        "import rims; rims.RIMLSTM(4, 8, 2, 1)\n"
        "try:\n    import rims.jax\nexcept ImportError:\n    print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "ok"
