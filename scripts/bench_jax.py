"""Speed of the jitted JAX RIM against Flax's LSTM and against the PyTorch RIM, one process.

Two comparisons, each timed in alternating rounds (one timing of every entry per round, so
drifts of a shared machine hit all entries alike) and reported as medians over the rounds,
with the median of the per-round ratios:

1. **JAX RIM vs Flax LSTM** at the shape of issue 14 (input 64, hidden 128, 4 units, k=3,
   L=32, N=128): forward+backward (gradient of a fixed random projection of the output with
   respect to all parameters) of ``rims.jax.RIMLSTM`` against ``flax.linen.OptimizedLSTMCell``
   (hidden 128) scanned by ``nn.RNN`` over the same sequence, both jitted.
2. **JAX RIM vs PyTorch RIM** on the seed configuration (input 600, hidden 300, 6 units, k=4,
   L=50, N=64) with the same weights: forward, and forward+backward.

Both frameworks run on the CPU with one thread (``torch.set_num_threads(1)`` and XLA's
single-threaded Eigen flag), eval-mode semantics (no dropout). Times are wall-clock; the
process CPU time of the same calls is printed beside them (steadier on a busy machine).

Usage::

    python scripts/bench_jax.py             # both comparisons
    python scripts/bench_jax.py --only flax --rounds 11
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

from rims import RIMLSTM
from rims import jax as rims_jax
from rims.jax import flax_module_for, params_from_torch


class Timing(NamedTuple):
    """Seconds per call of one measurement: wall-clock and process CPU time."""

    wall: float
    cpu: float


def _time(fn: Callable[[], object], repeats: int) -> Timing:
    """Mean time per call of ``repeats`` back-to-back calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return Timing((time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats)


def alternate(entries: dict[str, Callable[[], object]], rounds: int, repeats: int) -> dict[str, list[Timing]]:
    """Time every entry once per round, in turn, after two warm-up calls each."""
    for fn in entries.values():
        fn()
        fn()
    times: dict[str, list[Timing]] = {name: [] for name in entries}
    for _ in range(rounds):
        for name, fn in entries.items():
            times[name].append(_time(fn, repeats))
    return times


def report(title: str, times: dict[str, list[Timing]], numerator: str, denominator: str) -> float:
    """Print medians per entry and the median per-round ratio; return the wall-clock ratio."""
    print(f"\n{title}")
    print(f"{'entry':28s} {'wall ms':>9s} {'cpu ms':>9s}   (medians of {len(times[numerator])} rounds)")
    for name, series in times.items():
        wall = statistics.median(t.wall for t in series) * 1e3
        cpu = statistics.median(t.cpu for t in series) * 1e3
        print(f"{name:28s} {wall:9.2f} {cpu:9.2f}")
    pairs = list(zip(times[numerator], times[denominator], strict=True))
    wall_ratio = statistics.median(a.wall / b.wall for a, b in pairs)
    cpu_ratio = statistics.median(a.cpu / b.cpu for a, b in pairs)
    print(f"ratio {numerator} / {denominator}: {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x cpu (median per-round ratio)")
    return wall_ratio


def bench_flax(rounds: int, repeats: int) -> None:
    """JAX RIM against Flax's OptimizedLSTMCell, forward+backward at the issue's shape."""
    length, batch, size, hidden = 32, 128, 64, 128
    x = jax.random.normal(jax.random.PRNGKey(0), (length, batch, size))
    weight = jax.random.normal(jax.random.PRNGKey(1), (length, batch, hidden))
    rim = rims_jax.RIMLSTM(size, hidden, 4, 3)
    rim_vars = rim.init(jax.random.PRNGKey(2), x)
    lstm = nn.RNN(nn.OptimizedLSTMCell(hidden), time_major=True)
    lstm_vars = lstm.init(jax.random.PRNGKey(3), x)
    rim_grad = jax.jit(jax.grad(lambda v, inputs: (rim.apply(v, inputs)[0] * weight).sum()))
    lstm_grad = jax.jit(jax.grad(lambda v, inputs: (lstm.apply(v, inputs) * weight).sum()))
    entries = {
        "rims.jax RIMLSTM": lambda: jax.block_until_ready(rim_grad(rim_vars, x)),
        "flax OptimizedLSTMCell": lambda: jax.block_until_ready(lstm_grad(lstm_vars, x)),
    }
    title = (
        f"forward+backward, input {size}, hidden {hidden}, 4 units k=3 "
        f"(communication_update={getattr(rim, 'communication_update', 'residual')!r}), L={length} N={batch}"
    )
    report(title, alternate(entries, rounds, repeats), "rims.jax RIMLSTM", "flax OptimizedLSTMCell")


def bench_torch(rounds: int, repeats: int) -> None:
    """JAX RIM against the PyTorch RIM with the same weights, seed configuration."""
    torch.manual_seed(0)
    model = RIMLSTM(600, 300, 6, 4).eval()
    x = torch.randn(50, 64, 600)
    weight = torch.randn(50, 64, 300)
    flax_module = flax_module_for(model)
    variables = params_from_torch(model)
    jx, jw = jnp.asarray(x.numpy()), jnp.asarray(weight.numpy())
    forward = jax.jit(lambda v, inputs: flax_module.apply(v, inputs)[0])
    grad = jax.jit(jax.grad(lambda v, inputs: (flax_module.apply(v, inputs)[0] * jw).sum()))

    def torch_forward() -> None:
        with torch.no_grad():
            model(x)

    def torch_backward() -> None:
        model.zero_grad(set_to_none=True)
        model(x)[0].backward(weight)

    with torch.no_grad():
        expected = model(x)[0].numpy()
    diff = float(np.abs(np.asarray(forward(variables, jx)) - expected).max())
    print(f"\nseed configuration 600->300, 6 units k=4, L=50 N=64; max |JAX - torch| output = {diff:.2e}")
    forward_entries = {
        "torch forward (no grad)": torch_forward,
        "jax forward": lambda: forward(variables, jx).block_until_ready(),
    }
    report("forward", alternate(forward_entries, rounds, repeats), "jax forward", "torch forward (no grad)")
    backward_entries = {
        "torch forward+backward": torch_backward,
        "jax forward+backward": lambda: jax.block_until_ready(grad(variables, jx)),
    }
    times = alternate(backward_entries, rounds, repeats)
    report("forward+backward", times, "jax forward+backward", "torch forward+backward")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (medians over them)")
    parser.add_argument("--repeats", type=int, default=5, help="calls per timing")
    parser.add_argument("--only", choices=("flax", "torch"), help="run one comparison")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__} (1 thread), jax {jax.__version__} ({jax.devices()[0].platform}, 1 thread)")
    if args.only != "torch":
        bench_flax(args.rounds, args.repeats)
    if args.only != "flax":
        bench_torch(args.rounds, args.repeats)


if __name__ == "__main__":
    main()
