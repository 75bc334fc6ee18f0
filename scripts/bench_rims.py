"""Benchmark RIMLSTM / RIMGRU against nn.LSTM / nn.GRU in one process.

Prints, for each case, the median time per call of the baseline and the RIM module and their
ratio; baseline and RIM take turns round by round. Usage::

    python scripts/bench_rims.py --threads 1
    OMP_WAIT_POLICY=PASSIVE python scripts/bench_rims.py --threads 2
    python scripts/bench_rims.py --family        # the models after RIMs against the RIM core

With ``--family`` the baseline is the RIM core (``RIMLSTM``, 4 units, k=3) and the entries are
the cores of ``configs/model/{brims,rim_sw,scoff}.yaml`` at the policy shape (b): BRIMs (two
layers, top-down), the shared workspace and SCOFF's schemata, each as the agents build it.

Cases (issue 2):
  (a) seed configuration: input 600, hidden 300, 6 units, k=4, sequence 50, batch 64, fwd+bwd.
  (b) MiniGrid policy configuration: input 64, hidden 128, 4 units, k=3: fwd+bwd over 32 steps
      with batch 128, and one acting step with batch 16 under no_grad (baseline: nn.LSTM on one
      time step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from rims import RIMGRU, RIMLSTM
from rims.fast_paths import native


@dataclass(frozen=True)
class Case:
    """One benchmark configuration."""

    name: str
    input_size: int
    hidden_size: int
    num_units: int
    k: int
    seq_len: int
    batch: int
    train: bool


CASES = (
    Case("(a) seed 600->300, 6 units k=4, L=50 N=64, fwd+bwd", 600, 300, 6, 4, 50, 64, True),
    Case("(b) policy 64->128, 4 units k=3, L=32 N=128, fwd+bwd", 64, 128, 4, 3, 32, 128, True),
    Case("(b) policy 64->128, 4 units k=3, acting step N=16, no_grad", 64, 128, 4, 3, 1, 16, False),
)


def _timer(fns: list[Callable[[], None]], repeats: int, min_seconds: float) -> list[tuple[float, float]]:
    """Median and best seconds per call of each function over ``repeats`` rounds of ``min_seconds``.

    The functions take turns round by round, so a slow minute of the machine hits all of them.
    """
    inner = []
    for fn in fns:
        fn()
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-7)
        inner.append(max(1, int(min_seconds / once)))
    rounds: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, count, times in zip(fns, inner, rounds, strict=True):
            start = time.perf_counter()
            for _ in range(count):
                fn()
            times.append((time.perf_counter() - start) / count)
    return [(statistics.median(times), min(times)) for times in rounds]


def _workload(model: nn.Module, case: Case, lstm: bool, layers: int = 1) -> Callable[[], None]:
    """A closure running one forward (and backward when training) of ``model``."""
    x = torch.randn(case.seq_len, case.batch, case.input_size)
    h = torch.zeros(layers, case.batch, case.hidden_size)
    state = (h, h.clone()) if lstm else h
    if case.train:
        model.train()
        # A dense upstream gradient, as from a real loss (out.sum() would give a stride-0 one).
        grad = torch.randn(case.seq_len, case.batch, case.hidden_size)

        def run() -> None:
            out, _ = model(x, state)
            out.backward(grad)

        return run
    model.eval()

    def act() -> None:
        with torch.no_grad():
            model(x, state)

    return act


FAMILY: dict[str, dict] = {
    "brims (2 layers, top-down)": {"num_layers": 2, "top_down": True},
    "rim_sw (workspace, 4 slots of 32, write_k 2)": {"communication": "workspace", "write_k": 2},
    "scoff (2 schemata)": {"num_schemata": 2},
}


def _family(repeats: int, min_seconds: float) -> None:
    """The models after RIMs against the RIM core at the policy shape (b), training and acting.

    A model with several layers (BRIMs) is also timed against the stacked RIM of the same depth
    (``top_down=False``, each layer on the fused path), the part of its cost that the top-down
    input adds: a two-layer model cannot cost less than two layers.
    """
    print(f"{'case':70s} {'rim ms':>9s} {'model ms':>9s} {'ratio':>6s} {'best':>6s}")
    for case in CASES[1:]:
        for name, options in FAMILY.items():
            size = (case.input_size, case.hidden_size, case.num_units, case.k)
            layers = options.get("num_layers", 1)
            baselines = [("rim", {})]
            if layers > 1:
                baselines.append((f"{layers}-layer rim", {"num_layers": layers}))
            for base_name, base_options in baselines:
                rim = RIMLSTM(*size, attention_dropout=0.0, **base_options)
                model = RIMLSTM(*size, attention_dropout=0.0, **options)
                workloads = [
                    _workload(rim, case, True, base_options.get("num_layers", 1)),
                    _workload(model, case, True, layers),
                ]
                (t_rim, best_rim), (t_model, best_model) = _timer(workloads, repeats, min_seconds)
                label = f"{name}: {'fwd+bwd' if case.train else 'acting'}" + (
                    " vs " + base_name if base_options else ""
                )
                ratios = f"{t_model / t_rim:6.2f} {best_model / best_rim:6.2f}"
                print(f"{label:70s} {t_rim * 1e3:9.3f} {t_model * 1e3:9.3f} {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=11, help="timed rounds per case (median reported)")
    parser.add_argument("--min-seconds", type=float, default=0.3, help="minimum duration of one round")
    parser.add_argument("--gru", action="store_true", help="also compare RIMGRU with nn.GRU")
    parser.add_argument("--python-loops", action="store_true", help="time loops in Python (as RIMS_NATIVE=0)")
    parser.add_argument("--family", action="store_true", help="BRIMs, shared workspace, SCOFF against the RIM core")
    args = parser.parse_args()
    if args.python_loops:
        os.environ["RIMS_NATIVE"] = "0"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
        f"median (and best) of {args.repeats} rounds; ratio = RIM / baseline; "
        f"RIM training time loops: {'C++' if native.native_loops() is not None else 'Python'}"
    )
    if args.family:
        _family(args.repeats, args.min_seconds)
        return
    kinds = [("LSTM", nn.LSTM, RIMLSTM, True)] + ([("GRU", nn.GRU, RIMGRU, False)] if args.gru else [])
    print(f"{'case':62s} {'base ms':>9s} {'RIM ms':>9s} {'ratio':>6s} {'best':>6s}")
    for label, base_cls, rim_cls, lstm in kinds:
        for case in CASES:
            base = base_cls(case.input_size, case.hidden_size)
            rim = rim_cls(case.input_size, case.hidden_size, case.num_units, case.k)
            workloads = [_workload(base, case, lstm), _workload(rim, case, lstm)]
            (t_base, best_base), (t_rim, best_rim) = _timer(workloads, args.repeats, args.min_seconds)
            name = f"{label} {case.name}"
            print(
                f"{name:62s} {t_base * 1e3:9.3f} {t_rim * 1e3:9.3f} {t_rim / t_base:6.2f} {best_rim / best_base:6.2f}"
            )


if __name__ == "__main__":
    main()
