"""The hand-written backward passes of :mod:`rims.jax` are the derivatives of their forwards.

Each ``custom_vjp`` is checked in float64 against finite differences
(``jax.test_util.check_grads``), with and without the active mask and attention dropout, and
so is a whole layer under attention dropout with every unit active (with fewer, the weight
gradient of the communication projection is blocked on purpose and is checked against its
formula instead). The top-k by comparison is checked against ``jax.lax.top_k``.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

from rims.jax import RIMConfig, init_params, layer_sequence, zero_state  # noqa: E402
from rims.jax.attention import _attend, _Heads, top_k_mask  # noqa: E402
from rims.jax.gates import gru_update, lstm_update  # noqa: E402
from rims.jax.unit_matmul import (  # noqa: E402
    active_weight_grad_matmul,
    shared_input_matmul,
    split_unit_matmul,
    unit_matmul,
    weighted_heads,
)

jax.config.update("jax_enable_x64", True)

U, N = 3, 5


def _normal(seed: int, *shape: int) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float64)


def _mask(seed: int) -> jax.Array:
    return jax.random.bernoulli(jax.random.PRNGKey(seed), 0.6, (U, N, 1))


def _check(f: object, *args: jax.Array) -> None:
    check_grads(f, args, order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_matmuls() -> None:
    x, w = _normal(0, U, N, 4), _normal(1, U, 4, 6)
    _check(unit_matmul, x, w)
    _check(shared_input_matmul, _normal(2, N, 4), w)
    bias = _normal(3, U, 1, 6)
    _check(lambda x, w, b: split_unit_matmul(x, w, b, 2), x, w, bias)
    _check(lambda x, w: split_unit_matmul(x, w, None, 4), x, w)


@pytest.mark.parametrize("heads", [1, 2])
def test_weighted_heads(heads: int) -> None:
    _check(weighted_heads, _normal(0, U, N, heads), _normal(1, U, N, heads, 6))


def test_active_weight_grad_matmul_blocks_inactive_rows_of_the_weight_gradient() -> None:
    x, w, g = _normal(0, U, N, 4), _normal(1, U, 4, 6), _normal(2, U, N, 6)
    active = _mask(3)
    _, vjp = jax.vjp(lambda x, w: active_weight_grad_matmul(x, w, active), x, w)
    grad_x, grad_w = vjp(g)
    np.testing.assert_allclose(grad_x, jnp.einsum("unb,uab->una", g, w), atol=1e-12)
    np.testing.assert_allclose(grad_w, jnp.einsum("una,unb->uab", jnp.where(active, x, 0.0), g), atol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
def test_lstm_and_gru_updates(masked: bool) -> None:
    mask = _mask(9) if masked else None
    d = 4
    h, c = _normal(1, U, N, d), _normal(2, U, N, d)
    _check(lambda pre, h, c: lstm_update(pre, h, c, mask), _normal(0, U, N, 4 * d), h, c)
    _check(lambda gx, gh, h: gru_update(gx, gh, h, mask), _normal(3, U, N, 3 * d), _normal(4, U, N, 3 * d), h)


@pytest.mark.parametrize("dropout", [False, True])
def test_communication_attention(dropout: bool) -> None:
    sizes = _Heads(heads=2, key=3, value=4)
    qkv = _normal(0, U, N, 2 * (2 * 3 + 4))
    drop = None
    if dropout:
        keep = jax.random.bernoulli(jax.random.PRNGKey(1), 0.7, (N, 2, U, U))
        drop = jnp.where(keep, 1.0 / 0.7, 0.0)
    _check(lambda qkv: _attend(sizes, qkv, drop), qkv)


@pytest.mark.parametrize("dynamics", ["lstm", "gru"])
def test_layer_gradient_under_attention_dropout(dynamics: str) -> None:
    """Every unit active (``k = U``), two input heads so the null value is weighted apart."""
    cfg = RIMConfig(
        5, 12, 3, 3, dynamics=dynamics, num_input_heads=2, input_key_size=4, input_value_size=3,
        num_comm_heads=2, comm_key_size=3, comm_value_size=2, attention_dropout=0.3,
    )  # fmt: skip
    params = init_params(jax.random.PRNGKey(0), cfg, jnp.float64)
    x = _normal(1, 6, 2, 5)
    state = zero_state(cfg, 2, jnp.float64)
    rng = jax.random.PRNGKey(2)

    @jax.jit
    def loss(params: dict, x: jax.Array) -> jax.Array:
        out, _, _ = layer_sequence(params, cfg, x, state, dropout_rng=rng, record=False)
        return jnp.sum(jnp.sin(out))

    _check(loss, params, x)


def test_top_k_mask_is_lax_top_k() -> None:
    rank = jax.random.randint(jax.random.PRNGKey(0), (6, 200), 0, 4).astype(jnp.float64)  # many ties
    rank = rank.at[2, :50].set(jnp.nan)
    for k in (1, 3, 6):
        top = jax.lax.top_k(rank.T, k)[1]  # (N, k)
        expected = jax.nn.one_hot(top, 6, dtype=jnp.int32).sum(1).T > 0
        assert np.array_equal(np.asarray(top_k_mask(rank, k)), np.asarray(expected)), k
