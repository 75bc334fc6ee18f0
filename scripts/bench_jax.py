"""Speed of the jitted JAX RIM (lax.scan) against the PyTorch RIMLSTM, same weights, one process.

Prints median seconds per call and the ratio JAX / PyTorch for the seed configuration
(input 600, hidden 300, 6 units, k=4, L=50, N=64): forward, and forward+backward (gradient
of a fixed random projection of the output with respect to all parameters). Both run on the
CPU with one thread (torch.set_num_threads and XLA's single-threaded Eigen flag), eval-mode
semantics (no dropout) in both.

Usage::

    python scripts/bench_jax.py
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

from rims import RIMLSTM
from rims.jax import flax_module_for, params_from_torch


def _timer(fn: Callable[[], object], repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
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
    print(f"torch {torch.__version__} (1 thread), jax {jax.__version__} ({jax.devices()[0].platform}, 1 thread)")
    print(f"seed configuration 600->300, 6 units k=4, L=50 N=64; max |JAX - torch| output = {diff:.2e}")
    print(f"{'case':22s} {'torch ms':>9s} {'jax ms':>9s} {'jax/torch':>9s}")
    cases = (
        ("forward (no grad)", torch_forward, lambda: forward(variables, jx).block_until_ready()),
        ("forward+backward", torch_backward, lambda: jax.block_until_ready(grad(variables, jx))),
    )
    for name, t_fn, j_fn in cases:
        t_time, j_time = _timer(t_fn, args.repeats), _timer(j_fn, args.repeats)
        print(f"{name:22s} {t_time * 1e3:9.1f} {j_time * 1e3:9.1f} {j_time / t_time:9.2f}")


if __name__ == "__main__":
    main()
