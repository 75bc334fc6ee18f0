"""The ranking-score remedies in rims.jax (noise, balancing bias) compute what the PyTorch layer computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rims import RIMLSTM

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)

from rims.jax import convert  # noqa: E402
from rims.jax.config import RIMConfig  # noqa: E402
from rims.jax.core import layer_sequence, update_balance  # noqa: E402

SMALL = dict(input_key_size=6, input_value_size=7, num_comm_heads=2, comm_key_size=3, comm_value_size=5)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@pytest.mark.parametrize("selection", ["null_attention", "input_score"])
def test_balancing_bias_matches_torch(selection: str) -> None:
    torch.manual_seed(0)
    m = RIMLSTM(5, 12, 4, 2, num_layers=2, balance_rate=0.1, selection=selection, **SMALL).double().eval()
    with torch.no_grad():
        for i, layer in enumerate(m.layers):
            layer.selection_bias.copy_(torch.tensor([1.0, -1.0, 0.5, 0.0]) * (i + 1))
        x = torch.randn(20, 3, 5, dtype=torch.float64)
        out, (h, c), info = m(x, return_info=True)
    variables = convert.params_from_torch(m)
    assert set(variables) == {"params", "balance"}
    j_out, (j_h, j_c), j_info = convert.flax_module_for(m).apply(variables, jnp.asarray(_np(x)), return_info=True)
    assert np.array_equal(np.asarray(j_info.active), _np(info.active))
    for a, b in ((j_out, out), (j_h, h), (j_c, c)):
        np.testing.assert_allclose(np.asarray(a), _np(b), rtol=0, atol=1e-12)
    other = RIMLSTM(5, 12, 4, 2, num_layers=2, balance_rate=0.1, selection=selection, **SMALL).double()
    convert.params_to_torch(variables, other)
    assert torch.equal(other.layers[1].selection_bias, m.layers[1].selection_bias)


def test_noise_offset_matches_torch_draws() -> None:
    torch.manual_seed(0)
    m = RIMLSTM(5, 12, 4, 2, selection_noise=0.7, attention_dropout=0.0, **SMALL).double().train()
    x = torch.randn(15, 3, 5, dtype=torch.float64)
    torch.manual_seed(9)
    with torch.no_grad():
        out, (h, c), info = m(x, return_info=True)
    torch.manual_seed(9)
    eps = torch.randn(15, 4, 3, 1, dtype=torch.float64)  # the layer's one draw, before its steps
    cfg = RIMConfig(5, 12, 4, 2, selection_noise=0.7, attention_dropout=0.0, **SMALL)
    params = convert.params_from_torch(m)["params"]["layers_0"]
    zeros = (jnp.zeros((3, 12)), jnp.zeros((3, 12)))
    offset = jnp.asarray(_np(0.7 * eps[..., 0]))  # (L, U, N)
    j_out, (j_h, j_c), j_info = layer_sequence(params, cfg, jnp.asarray(_np(x)), zeros, score_offset=offset)
    assert j_info is not None
    assert np.array_equal(np.asarray(j_info.active), _np(info.active[0]))
    for a, b in ((j_out, out), (j_h, h[0]), (j_c, c[0])):
        np.testing.assert_allclose(np.asarray(a), _np(b), rtol=0, atol=1e-12)
    _, _, plain_info = layer_sequence(params, cfg, jnp.asarray(_np(x)), zeros)
    assert plain_info is not None and not np.array_equal(np.asarray(plain_info.active), np.asarray(j_info.active))


def test_flax_noise_only_when_not_deterministic() -> None:
    torch.manual_seed(0)
    m = RIMLSTM(5, 12, 4, 2, selection_noise=2.0, attention_dropout=0.0, **SMALL).double()
    module, variables = convert.flax_module_for(m), convert.params_from_torch(m)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(12, 3, 5)))
    quiet = module.apply(variables, x, return_info=True)[2].active
    again = module.apply(variables, x, deterministic=True, return_info=True)[2].active
    assert np.array_equal(np.asarray(quiet), np.asarray(again))
    rngs = {"dropout": jax.random.PRNGKey(1)}
    noisy = module.apply(variables, x, deterministic=False, return_info=True, rngs=rngs)[2].active
    assert not np.array_equal(np.asarray(noisy), np.asarray(quiet))


def test_update_balance_moves_toward_equal_load() -> None:
    active = jnp.array([[[True, True, False, False]], [[True, False, True, False]]])  # (L=2, N=1, U=4)
    bias = update_balance(jnp.zeros(4), active, 0.5)  # loads 2, 1, 1, 0; mean 1
    np.testing.assert_allclose(np.asarray(bias), [-0.5, 0.0, 0.0, 0.5])


def test_conversion_refuses_the_remedies_jax_does_not_implement() -> None:
    with pytest.raises(NotImplementedError, match=r"rims.jax does not implement selection_noise_learned=True"):
        convert.flax_module_for(RIMLSTM(5, 12, 4, 2, selection_noise=0.1, selection_noise_learned=True))
    with pytest.raises(NotImplementedError, match=r"rims.jax does not implement initial_state='learned'"):
        convert.flax_module_for(RIMLSTM(5, 12, 4, 2, initial_state="learned"))
