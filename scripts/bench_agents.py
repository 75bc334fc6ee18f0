"""Training throughput (frames/s) of our recurrent PPO against sb3-contrib's, side by side.

Same script, same environment (MiniGrid-DoorKey-5x5-v0, 8 envs in-process), same encoder
(:class:`agents.MiniGridCNN`, no /255 scaling) and heads (one 64-unit layer each),
n_steps=128, batch 256, 4 epochs, 1 torch thread, LSTM width 128. sb3-contrib runs with one
LSTM shared by actor and critic (``shared_lstm=True, enable_critic_lstm=False``). Plain
feed-forward PPO with the same encoder is the ceiling. Each entry learns ``--frames`` frames
after one warm-up rollout, in a fresh process (so that no entry inherits another's memory
state), over ``--rounds`` rounds in alternating order; medians are reported. Every entry steps
the same environments, built by :func:`envs.make_minigrid_vec_env` (int actions,
:class:`envs.IntActions`): by default with :mod:`envs.fast_obs` observations, with
``--minigrid-obs`` with MiniGrid's own observation code (same observations, slower steps).

The ``ours rim, fast/slow (meta-RIM)`` entry is the rim entry with fast and slow learning
(``fast_slow=True``: :class:`agents.fast_slow.FastSlowConfig`'s defaults, an outer pass on the whole
rollout per rollout and one slow step per 4 rollouts). ``--entries`` times a subset, e.g. the two
RIM PPO entries side by side (issue 17's bar: meta-RIM >= 0.8x plain RIM). The ``ours rim, <remedy>``
entries are the rim entry with one selection remedy each (:data:`REMEDIES`; issue 26's bar: >= 0.9x
plain RIM).

Usage::

    python scripts/bench_agents.py --frames 16384
    python scripts/bench_agents.py --frames 16384 --minigrid-obs
    python scripts/bench_agents.py --frames 16384 --entries "ours rim (4 units, k=3)" "ours rim, fast/slow (meta-RIM)"
    python scripts/bench_agents.py --frames 16384 --entries "ours rim (4 units, k=3)" "ours rim, noisy top-k" \\
        "ours rim, loss-free balancing" "ours rim, balance loss" "ours rim, learned initial state" \\
        "ours rim, random initial state"
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from sb3_contrib import RecurrentPPO as ContribRecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from agents import MiniGridCNN, RecurrentPPO
from envs import make_minigrid_vec_env

ENV_ID = "MiniGrid-DoorKey-5x5-v0"
COMMON = dict(n_steps=128, batch_size=256, n_epochs=4, seed=0, verbose=0)
RIM, META_RIM = "ours rim (4 units, k=3)", "ours rim, fast/slow (meta-RIM)"
REMEDIES: dict[str, dict[str, Any]] = {
    "ours rim, noisy top-k": dict(selection_noise=0.5, selection_noise_learned=True, selection_noise_anneal=1000),
    "ours rim, loss-free balancing": dict(balance_rate=1e-3),
    "ours rim, balance loss": dict(balance_loss=1e-2),
    "ours rim, learned initial state": dict(initial_state="learned"),
    "ours rim, random initial state": dict(initial_state="random"),
}
"""The selection remedies (:mod:`rims.remedies`), each on the rim entry (issue 26's bar: >= 0.9x plain RIM)."""
ENCODER = dict(features_extractor_class=MiniGridCNN, normalize_images=False, net_arch=dict(pi=[64], vf=[64]))


def _candidates() -> dict[str, Callable[[object], BaseAlgorithm]]:
    rim = dict(hidden_size=128, num_units=4, k=3)
    return {
        "sb3-contrib RecurrentPPO lstm (shared)": lambda env: ContribRecurrentPPO(
            "CnnLstmPolicy",
            env,
            policy_kwargs=dict(**ENCODER, lstm_hidden_size=128, shared_lstm=True, enable_critic_lstm=False),
            **COMMON,
        ),
        "ours lstm, sb3-contrib sequences": lambda env: RecurrentPPO(
            "RecurrentPolicy", env, policy_kwargs=dict(core="lstm"), max_seq_len=None, **COMMON
        ),
        "ours lstm": lambda env: RecurrentPPO("RecurrentPolicy", env, policy_kwargs=dict(core="lstm"), **COMMON),
        "ours gru": lambda env: RecurrentPPO("RecurrentPolicy", env, policy_kwargs=dict(core="gru"), **COMMON),
        RIM: lambda env: RecurrentPPO(
            "RecurrentPolicy", env, policy_kwargs=dict(core="rim", core_kwargs=rim), **COMMON
        ),
        META_RIM: lambda env: RecurrentPPO(
            "RecurrentPolicy", env, policy_kwargs=dict(core="rim", core_kwargs=rim), fast_slow=True, **COMMON
        ),
        "ours rim_gru (4 units, k=3)": lambda env: RecurrentPPO(
            "RecurrentPolicy", env, policy_kwargs=dict(core="rim_gru", core_kwargs=rim), **COMMON
        ),
        **{
            name: lambda env, options=options: RecurrentPPO(
                "RecurrentPolicy", env, policy_kwargs=dict(core="rim", core_kwargs={**rim, **options}), **COMMON
            )
            for name, options in REMEDIES.items()
        },
        "feed-forward PPO (ceiling)": lambda env: PPO("CnnPolicy", env, policy_kwargs=ENCODER, **COMMON),
    }


def _timed(model: BaseAlgorithm, seconds: dict[str, float]) -> None:
    """Accumulate the time of ``model``'s rollouts and updates into ``seconds``."""
    for phase, attribute in (("rollout", "collect_rollouts"), ("update", "train")):
        method = getattr(model, attribute)

        def timed(*args: object, _method: Callable[..., Any] = method, _phase: str = phase, **kwargs: object) -> Any:
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                seconds[_phase] += time.perf_counter() - start

        setattr(model, attribute, timed)


def _run_entry(name: str, frames: int, fast_observations: bool) -> tuple[float, float, float]:
    """Frames/s, rollout seconds and update seconds of one entry (run in a fresh process)."""
    torch.set_num_threads(1)
    env = make_minigrid_vec_env(ENV_ID, n_envs=8, seed=0, fast_observations=fast_observations)
    model = _candidates()[name](env)
    model.learn(128 * 8)  # warm-up rollout + update
    seconds = {"rollout": 0.0, "update": 0.0}
    _timed(model, seconds)
    start = time.perf_counter()
    model.learn(frames, reset_num_timesteps=False)
    fps = frames / (time.perf_counter() - start)
    env.close()
    return fps, seconds["rollout"], seconds["update"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16384, help="frames timed per entry (after warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all entries (median reported)")
    parser.add_argument("--minigrid-obs", action="store_true", help="MiniGrid's own observation code")
    parser.add_argument("--entries", nargs="+", choices=list(_candidates()), help="time only these entries")
    args = parser.parse_args()
    observations = "MiniGrid's observation code" if args.minigrid_obs else "envs.fast_obs observations"
    print(
        f"{ENV_ID}, 8 envs ({observations}), n_steps 128, batch 256, 4 epochs, torch threads 1; each entry in a "
        f"fresh process, {args.rounds} round(s) in alternating order, median"
    )
    names = args.entries or list(_candidates())
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1, maxtasksperchild=1) as pool:
        for round_index in range(args.rounds):
            for name in names if round_index % 2 == 0 else names[::-1]:
                runs[name].append(pool.apply(_run_entry, (name, args.frames, not args.minigrid_obs)))
    results: dict[str, float] = {}
    for name in names:
        fps, rollout, update = (statistics.median(values) for values in zip(*runs[name], strict=True))
        results[name] = fps
        spread = "/".join(f"{run[0]:.0f}" for run in runs[name])
        split = f"rollouts {rollout:5.2f} s, updates {update:5.2f} s; runs {spread}"
        print(f"{name:40s} {fps:8.0f} frames/s  ({split})", flush=True)
    ratios = (
        ("ours lstm", "sb3-contrib RecurrentPPO lstm (shared)"),
        ("ours lstm, sb3-contrib sequences", "sb3-contrib RecurrentPPO lstm (shared)"),
        (RIM, "ours lstm"),
        ("ours lstm", "feed-forward PPO (ceiling)"),
        (RIM, "feed-forward PPO (ceiling)"),
        (META_RIM, RIM),
        *((remedy, RIM) for remedy in REMEDIES),
    )
    for name, reference in ratios:
        if name in results and reference in results:
            print(f"{name} / {reference}: {results[name] / results[reference]:.2f}x")


if __name__ == "__main__":
    main()
