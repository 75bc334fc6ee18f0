"""Train a JAX RIM with Optax on the copying task of the RIMs paper (short version).

Each sequence shows 10 random symbols (1-8), then ``--delay`` blanks, then a delimiter (9),
then 9 blanks; the model must output the 10 symbols at the last 10 steps. Chance level is
``ln 8 = 2.079`` nats per symbol; the loss printed is the mean over those 10 steps.

Usage::

    python scripts/jax_copying.py  # 1500 steps, delay 10: about 2 minutes on one CPU core
"""

from __future__ import annotations

import argparse
import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rims.jax import RIMLSTM

SYMBOLS, BLANK, DELIM, COPY = 8, 0, 9, 10


def make_batch(key: jax.Array, batch: int, delay: int) -> tuple[jax.Array, jax.Array]:
    """Inputs ``(L, N)`` and targets ``(COPY, N)`` (symbols in 1..8) of one batch."""
    symbols = jax.random.randint(key, (COPY, batch), 1, SYMBOLS + 1)
    blanks = jnp.full((delay, batch), BLANK)
    delim = jnp.full((1, batch), DELIM)
    tail = jnp.full((COPY - 1, batch), BLANK)
    return jnp.concatenate([symbols, blanks, delim, tail]), symbols


class CopyModel(nn.Module):
    """One-hot input -> RIM-LSTM -> per-step symbol logits."""

    hidden_size: int = 120
    num_units: int = 6
    k: int = 4

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = jax.nn.one_hot(tokens, DELIM + 1)  # (L, N, 10)
        rim = RIMLSTM(
            DELIM + 1,
            self.hidden_size,
            self.num_units,
            self.k,
            input_key_size=32,
            input_value_size=64,
            num_comm_heads=2,
            comm_key_size=16,
            comm_value_size=16,
            attention_dropout=0.0,
        )
        out, _ = rim(x)
        return nn.Dense(SYMBOLS + 1)(out[-COPY:])  # (COPY, N, 9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--delay", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=100)
    args = parser.parse_args()

    key = jax.random.PRNGKey(args.seed)
    key, init_key, data_key = jax.random.split(key, 3)
    model = CopyModel()
    tokens, _ = make_batch(data_key, args.batch, args.delay)
    params = model.init(init_key, tokens)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
    opt_state = optimizer.init(params)

    def loss_fn(p: dict, tokens: jax.Array, targets: jax.Array) -> jax.Array:
        logits = model.apply(p, tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @jax.jit
    def train_step(p: dict, state: optax.OptState, k: jax.Array) -> tuple[dict, optax.OptState, jax.Array]:
        tokens, targets = make_batch(k, args.batch, args.delay)
        loss, grads = jax.value_and_grad(loss_fn)(p, tokens, targets)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    print(f"copying task: delay {args.delay}, batch {args.batch}; chance loss ln 8 = {math.log(SYMBOLS):.3f}")
    start = time.perf_counter()
    window: list[float] = []
    for i in range(1, args.steps + 1):
        key, step_key = jax.random.split(key)
        params, opt_state, loss = train_step(params, opt_state, step_key)
        window.append(float(loss))
        if i % args.log_every == 0:
            mean = sum(window) / len(window)
            print(f"step {i:5d}  loss {mean:.4f}  ({time.perf_counter() - start:.0f} s)")
            window.clear()


if __name__ == "__main__":
    main()
