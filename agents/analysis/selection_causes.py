"""Why a RIM policy's top-k selection freezes: one probe per suspected cause (issue 26, item 1).

A RIM layer activates the ``k`` units whose ranking score is highest (with one input head, the score of the
real input relative to the null input; the paper's rule). The suspects, each with its probe:

* **Near-constant features** (:func:`feature_drift`, :func:`selection_under`): the features a MiniGrid policy
  feeds its core change little from step to step, and share one large common direction, so the units' scores
  barely move. The probe replays the core on the features the policy saw, and on transformed copies of them:
  ``shuffled`` (the same feature vectors in a random order across steps and episodes: the marginal distribution
  kept, the temporal drift gone), ``centred`` (each vector minus the mean vector, rescaled to its own norm: the
  common direction gone) and ``gaussian`` (i.i.d. normal draws with the features' per-dimension mean and
  standard deviation). If the selection switches far more on a transformed copy than on the actual features,
  that property of the features holds the selection still.
* **The margin of the choice** (:func:`selection_under`, ``margin``): the gap between the ``k``-th and the
  ``(k+1)``-th ranking score, per step. A margin that grows over training means the choice locks in.
* **No gradient to losing units** (:func:`gradient_by_unit`): the top-k choice has no gradient, and a unit
  that is inactive keeps its state and contributes nothing to the output, so the task loss gives its input
  query and its dynamics an exact zero gradient, while the winners' queries are trained to read the input.
  The probe takes the gradient of the policy's loss on its own episodes (log-likelihood of its actions and a
  value term) per unit and reports it beside each unit's active frequency.
* **The initial state** (:func:`selection_under`, ``first_step_sets``): with a zero initial state the first
  step's queries are the query biases alone, so every episode starts from the same choice; the probe counts
  the distinct active sets at episodes' first steps.

Shapes: ``T`` steps of an episode, ``F`` features, ``U`` units, ``Ly`` layers.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from agents.experiment.recording import policy_step, zero_state
from agents.experiment.selection_stats import frozen_from, switch_rate
from envs.levels import make_condition_env
from envs.splits import Condition
from rims import RIMGRU, RIMLSTM

log = logging.getLogger(__name__)

TRANSFORMS = ("actual", "shuffled", "centred", "gaussian")


@dataclass(frozen=True)
class PlayedEpisodes:
    """Episodes a policy played, as its core saw them.

    :param features: per episode the features fed to the core, ``(T, F)`` float32.
    :param actions: per episode the actions taken, ``(T,)`` int64.
    :param returns: per episode the return.
    """

    features: list[Tensor]
    actions: list[np.ndarray]
    returns: list[float]


def rim_module(model: Any) -> RIMLSTM | RIMGRU:
    """The RIM layer stack of a trained or untrained agent.

    :raises ValueError: the agent's core is not a RIM core.
    """
    module = model.policy.core.module
    if not isinstance(module, (RIMLSTM, RIMGRU)):
        raise ValueError(f"the selection probes need a RIM core, got {type(module).__name__}")
    return module


def play_features(model: Any, condition: Condition, episodes: int, max_steps: int | None = None) -> PlayedEpisodes:
    """Play the condition's first ``episodes`` levels deterministically and keep the core's input features.

    :param max_steps: stop an episode after this many steps (``None``: its time limit).
    :raises ValueError: ``episodes < 1``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    policy = model.policy
    policy.set_training_mode(False)
    features, actions, returns = [], [], []
    for episode in range(episodes):
        env = make_condition_env(condition, sequential=True, first=episode, monitor=False, render_mode=None)
        try:
            obs, _ = env.reset()
            states, steps, taken, total = zero_state(policy), [], [], 0.0
            done = False
            with torch.no_grad():
                while not done and (max_steps is None or len(taken) < max_steps):
                    obs_tensor, _ = policy.obs_to_tensor(obs[None])
                    steps.append(policy.extract_features(obs_tensor)[0].float())
                    chosen, states, _, _ = policy_step(policy, obs[None], states, np.array([not taken]), True)
                    obs, reward, terminated, truncated, _ = env.step(int(chosen[0]))
                    taken.append(int(chosen[0]))
                    total += float(reward)
                    done = terminated or truncated
        finally:
            env.close()
        features.append(torch.stack(steps))
        actions.append(np.asarray(taken, dtype=np.int64))
        returns.append(total)
    return PlayedEpisodes(features, actions, returns)


def feature_drift(features: Sequence[Tensor]) -> dict[str, float]:
    """How much the core's input moves: ``consecutive_cosine`` (mean cosine similarity of a step's features with
    the previous step's, within episodes) and ``common_share`` (the share of the features' mean squared norm that
    lies along their mean vector, ``|mean|^2 / mean |x|^2``: 1 when every vector is the same).

    :param features: per episode ``(T, F)``.
    """
    stacked = torch.cat(list(features))  # (sum T, F)
    pairs = [torch.nn.functional.cosine_similarity(f[1:], f[:-1], dim=-1) for f in features if len(f) > 1]
    cosine = float(torch.cat(pairs).mean()) if pairs else math.nan
    mean = stacked.mean(0)
    share = float(mean.pow(2).sum() / stacked.pow(2).sum(-1).mean().clamp_min(1e-12))
    return {"consecutive_cosine": cosine, "common_share": share}


def transform(features: Sequence[Tensor], name: str, seed: int = 0) -> list[Tensor]:
    """A transformed copy of the features (see the module docstring), episode lengths kept.

    :param name: one of :data:`TRANSFORMS`.
    :raises ValueError: an unknown name.
    """
    if name not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {name!r}")
    lengths = [len(f) for f in features]
    stacked = torch.cat(list(features))  # (S, F)
    generator = torch.Generator().manual_seed(seed)
    if name == "shuffled":
        stacked = stacked[torch.randperm(len(stacked), generator=generator)]
    elif name == "centred":
        centred = stacked - stacked.mean(0)
        scale = stacked.norm(dim=-1, keepdim=True) / centred.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        stacked = centred * scale
    elif name == "gaussian":
        noise = torch.randn(stacked.shape, generator=generator, dtype=stacked.dtype)
        stacked = stacked.mean(0) + noise * stacked.std(0)
    return list(torch.split(stacked, lengths))


def _rank(attention: Tensor) -> Tensor:
    """The ranking score of the null-attention rule from the recorded input attention ``(..., U, H)``: with one
    head the logit of the attention on the input (the score relative to null), else its mean over heads."""
    if attention.shape[-1] == 1:
        a = attention[..., 0].clamp(1e-7, 1 - 1e-7)
        return torch.log(a) - torch.log1p(-a)
    return attention.mean(-1)


def selection_under(module: RIMLSTM | RIMGRU, features: Sequence[Tensor]) -> dict[str, Any]:
    """Replay the core on ``features`` (each episode from the module's initial state, evaluation mode) and
    summarise its selection: ``switch_rate`` (within episodes), ``unit_frequency`` (``Ly * U``), ``distinct_sets``,
    ``first_step_sets`` (distinct active sets at the episodes' first steps), ``margin`` (mean over steps and
    layers of the ``k``-th minus the ``(k+1)``-th ranking score, in the score's units).

    :param features: per episode ``(T, F)``.
    """
    was_training = module.training
    module.eval()
    masks, margins, firsts = [], [], set()
    try:
        with torch.no_grad():
            for episode in features:
                _, _, info = module(episode.unsqueeze(1), None, return_info=True)
                active = info.active[:, :, 0]  # (Ly, T, U)
                rank = _rank(info.input_attention[:, :, 0])  # (Ly, T, U)
                top = rank.sort(dim=-1, descending=True).values
                margins.append((top[..., module.k - 1] - top[..., module.k]).reshape(-1))
                flat = active.permute(1, 0, 2).reshape(len(episode), -1)  # (T, Ly*U)
                masks.append(flat.numpy())
                firsts.add(tuple(flat[0].tolist()))
    finally:
        module.train(was_training)
    stacked = np.concatenate(masks)
    starts = np.concatenate([np.eye(1, len(m), 0, dtype=bool)[0] for m in masks])
    codes = {tuple(row) for row in stacked.tolist()}
    return {
        "switch_rate": switch_rate(stacked, starts),
        "unit_frequency": [float(f) for f in stacked.mean(0)],
        "distinct_sets": len(codes),
        "first_step_sets": len(firsts),
        "margin": float(torch.cat(margins).mean()),
    }


def gradient_by_unit(model: Any, played: PlayedEpisodes) -> list[dict[str, float]]:
    """Per unit of the first layer: its active frequency and the gradient norm its parameters get from the
    policy's loss on its own episodes (mean negative log-likelihood of the actions taken plus half the mean
    squared value; training mode, so a remedy's training-time behaviour is included).

    :returns: one row per unit: ``unit``, ``frequency``, ``query_grad`` (its input query weights and bias),
        ``dynamics_grad`` (its input-to-hidden and hidden-to-hidden weights; ``nan`` with shared schemata).
    """
    policy = model.policy
    module = rim_module(model)
    cell = module.layers[0]
    policy.set_training_mode(True)
    policy.zero_grad(set_to_none=True)
    active_steps = []
    try:
        for features, actions in zip(played.features, played.actions, strict=True):
            out, _, info = module(features.unsqueeze(1), None, return_info=True)  # (T, 1, hidden)
            latent_pi = policy.mlp_extractor.forward_actor(out[:, 0])
            latent_vf = policy.mlp_extractor.forward_critic(out[:, 0])
            log_prob = policy._get_action_dist_from_latent(latent_pi).log_prob(torch.as_tensor(actions))
            value = policy.value_net(latent_vf)
            loss = (-log_prob.mean() + 0.5 * value.pow(2).mean()) / len(played.features)
            loss.backward()
            active_steps.append(info.active[0, :, 0].float())  # (T, U)
    finally:
        policy.set_training_mode(False)
    frequency = torch.cat(active_steps).mean(0)
    per_unit_sets = cell.num_schemata is None
    rows = []
    for unit in range(cell.num_units):
        query = [p.grad[unit] for p in (cell.weight_query, cell.bias_query) if p is not None and p.grad is not None]
        dynamics = [cell.weight_ih.grad, cell.weight_hh.grad] if per_unit_sets else []
        rows.append(
            {
                "unit": unit,
                "frequency": float(frequency[unit]),
                "query_grad": _norm(query),
                "dynamics_grad": _norm([g[unit] for g in dynamics if g is not None]) if per_unit_sets else math.nan,
            }
        )
    policy.zero_grad(set_to_none=True)
    return rows


def _norm(tensors: Sequence[Tensor]) -> float:
    """The joint Euclidean norm of some gradient slices (0.0 for none)."""
    return float(torch.sqrt(sum((t.double().pow(2).sum() for t in tensors), torch.zeros((), dtype=torch.float64))))


def freeze_point(metrics_csv: Path, prefix: str = "sel/rollout") -> dict[str, Any]:
    """When the selection of a training run froze, from its rollout statistics (``metrics.csv``).

    :returns: ``frames`` (:func:`~agents.experiment.selection_stats.frozen_from`: the first logged frame count
        from which the rollout switch rate stays frozen; ``None`` if it does not), ``first_switch``,
        ``final_switch`` (mean of the last tenth of the updates) and ``updates`` logged.
    :raises ValueError: the file has no rollout selection statistics.
    """
    with metrics_csv.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get(f"{prefix}/switch_rate") not in (None, "")]
    if not rows:
        raise ValueError(f"{metrics_csv} has no {prefix}/switch_rate column values (a RIM run logs them)")
    frames = [int(float(r["time/total_timesteps"])) for r in rows]
    switch = np.array([float(r[f"{prefix}/switch_rate"]) for r in rows])
    tail = switch[-max(1, len(switch) // 10) :]
    return {
        "frames": frozen_from(frames, switch),
        "first_switch": float(switch[0]),
        "final_switch": float(tail.mean()),
        "updates": len(rows),
    }
