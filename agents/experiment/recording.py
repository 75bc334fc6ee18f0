"""Record one episode of a trained recurrent agent: frames, actions, rewards and, for RIM cores,
which units were active at every step.

The policy is stepped by hand (features extractor -> core -> actor head) so that the RIM core
can be asked for its :class:`rims.RIMInfo`; the actions are exactly those of a
``model.predict(obs, state, episode_start, deterministic)`` loop on the same level.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from PIL import Image
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import Tensor

from agents.cores import RecurrentCore
from agents.experiment.atomic import atomic_path
from agents.policies import RecurrentPolicy
from envs.factors import env_factors, factor_array
from envs.levels import make_condition_env
from envs.splits import Condition
from rims import RIMGRU, RIMLSTM

State = tuple[Tensor, Tensor]


@dataclass
class Recording:
    """One played episode.

    ``T`` is the number of steps, ``U`` the number of RIM units and ``Ly`` the number of
    recurrent layers. Step ``t`` chose ``actions[t]`` from the observation shown in
    ``frames[t]`` and received ``rewards[t]``; ``frames[T]`` shows the state after the last step.

    :ivar condition: name of the condition played.
    :ivar level_seed: the level (environment reset seed) played.
    :ivar frames: ``T + 1`` RGB frames, each ``(H, W, 3)`` uint8, all of the same size (empty
        if recorded with ``render=False``).
    :ivar actions: ``(T,)`` int64 actions.
    :ivar rewards: ``(T,)`` float64 rewards.
    :ivar active: ``(T, U)`` bool, the units of the first layer that were active when choosing
        each action; ``None`` for non-RIM cores (``lstm``, ``gru``).
    :ivar active_layers: ``(T, Ly, U)`` bool, the same for every layer (``active`` is
        ``active_layers[:, 0]``); ``None`` for non-RIM cores.
    :ivar terminated: whether the episode ended in a terminal state (rather than by truncation
        or ``max_steps``).
    :ivar choices: what the models after RIMs chose per step, ``(T, Ly, U)`` each:
        ``"schema"`` (int, -1 for inactive units; SCOFF) and ``"workspace_writes"`` (bool;
        shared workspace); empty for the other cores.
    :ivar factors: ``{factor: (T,) int64}``, the environment factors (:mod:`envs.factors`) of the state each
        action was chosen in; empty when not recorded.
    """

    condition: str
    level_seed: int
    frames: list[np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    active: np.ndarray | None = None
    active_layers: np.ndarray | None = None
    terminated: bool = False
    choices: dict[str, np.ndarray] = field(default_factory=dict)
    factors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def length(self) -> int:
        """Number of steps ``T``."""
        return len(self.actions)

    @property
    def total_return(self) -> float:
        """Undiscounted sum of the rewards."""
        return float(np.sum(self.rewards))


def is_rim_core(core: RecurrentCore) -> bool:
    """Whether ``core`` wraps a RIM module (and so can report active units)."""
    return isinstance(core.module, (RIMLSTM, RIMGRU))


CHOICES = ("schema", "workspace_writes")  # RIMInfo fields recorded per step when a core has them


def _core_step(
    core: RecurrentCore, features: Tensor, states: State, starts: Tensor
) -> tuple[Tensor, State, Tensor | None, dict[str, Tensor]]:
    """One step of the core for ``N`` environments, resetting the state where an episode starts.

    :param features: ``(1, N, F)`` time-major features of one observation per environment.
    :param states: ``(h, c)`` each ``(num_layers, N, hidden_size)``.
    :param starts: ``(N,)`` float, 1.0 where an episode starts at this step.
    :returns: ``(output (1, N, hidden_size), (h, c), active, choices)`` with ``active`` the
        ``(num_layers, N, U)`` bool mask of a RIM core, ``None`` otherwise, and ``choices`` the
        :data:`CHOICES` the core reports, each ``(num_layers, N, U)``.
    """
    starts = starts.view(1, -1)  # (1, N)
    if not is_rim_core(core):
        out, new_states = core(features, states, starts)
        return out, new_states, None, {}
    keep = (1.0 - starts[0]).view(1, -1, 1)
    h, c = states[0] * keep, states[1] * keep
    if core.has_cell:
        out, (h, c), info = core.module(features, (h, c), return_info=True)
    else:
        out, h, info = core.module(features, h, return_info=True)
    choices = {name: getattr(info, name)[:, 0] for name in CHOICES if getattr(info, name) is not None}
    return out, (h, c), info.active[:, 0], choices


def policy_step(
    policy: RecurrentPolicy, obs: np.ndarray, states: State, starts: np.ndarray, deterministic: bool
) -> tuple[np.ndarray, State, np.ndarray | None, dict[str, np.ndarray]]:
    """The actions ``model.predict`` takes on a batch of observations, with the core's active units.

    Call it under ``torch.no_grad()``.

    :param obs: ``(N, ...)`` one observation per environment as the environment returns it
        (e.g. ``(N, 7, 7, 3)``).
    :param states: ``(h, c)`` each ``(num_layers, N, hidden_size)`` (see :func:`zero_state`).
    :param starts: ``(N,)`` bool, True where an episode starts at this step (its state is reset).
    :returns: ``(actions (N,) int64, new states, active (num_layers, N, U) bool or None,
        choices)``, ``choices`` as :func:`_core_step`'s, as arrays.
    """
    obs_tensor, _ = policy.obs_to_tensor(obs)
    features = policy.extract_features(obs_tensor)  # (N, F)
    start_tensor = torch.as_tensor(starts, dtype=torch.float32, device=features.device)  # (N,)
    out, states, active, choices = _core_step(policy.core, features.unsqueeze(0), states, start_tensor)
    latent_pi = policy.mlp_extractor.forward_actor(out[0])  # (N, hidden_size) -> (N, latent)
    actions = policy._get_action_dist_from_latent(latent_pi).get_actions(deterministic=deterministic)
    chosen = {name: value.cpu().numpy() for name, value in choices.items()}
    mask = None if active is None else active.cpu().numpy()
    return actions.reshape(-1).cpu().numpy().astype(np.int64), states, mask, chosen


def zero_state(policy: RecurrentPolicy, n: int = 1) -> State:
    """Zero ``(h, c)``, each ``(num_layers, n, hidden_size)``, as ``predict`` starts from."""
    zeros = torch.zeros(policy.core.num_layers, n, policy.core.hidden_size, device=policy.device)
    return zeros, zeros.clone()


def record_episode(
    model: BaseAlgorithm,
    condition: Condition,
    episode: int = 0,
    deterministic: bool = True,
    max_steps: int | None = None,
    render: bool = True,
) -> Recording:
    """Play and record one episode of ``condition`` with a trained recurrent model.

    The level is the ``episode``-th level seed of the condition (``condition.seeds.start +
    episode``), the one :func:`agents.experiment.evaluation.run_episodes` plays as its ``episode``-th.

    :param model: a trained :class:`agents.RecurrentPPO` or :class:`agents.RecurrentA2C` (any core).
    :param condition: the condition to play (see :mod:`envs.splits`).
    :param episode: index of the level seed within the condition.
    :param deterministic: the distribution's mode (as ``predict(..., deterministic=True)``)
        instead of a sample (which draws from torch's global RNG, as ``predict`` does).
    :param max_steps: stop after this many steps even if the episode has not ended.
    :param render: record RGB frames; ``False`` leaves ``frames`` empty (faster, and a long
        episode on a large grid holds hundreds of megabytes of frames).
    :raises ValueError: a model without a :class:`agents.RecurrentPolicy`, a negative
        ``episode`` or ``max_steps < 1``.
    """
    policy = model.policy
    if not isinstance(policy, RecurrentPolicy):
        raise ValueError(f"record_episode needs a model with a RecurrentPolicy, got {type(policy).__name__}")
    if episode < 0:
        raise ValueError(f"episode must be >= 0, got {episode}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    policy.set_training_mode(False)
    render_mode = "rgb_array" if render else None
    env = make_condition_env(condition, sequential=True, first=episode, monitor=False, render_mode=render_mode)
    try:
        return _play(policy, env, condition.name, deterministic, max_steps, render)
    finally:
        env.close()


def _play(
    policy: RecurrentPolicy, env: gym.Env, name: str, deterministic: bool, max_steps: int | None, render: bool
) -> Recording:
    """Run the episode loop of :func:`record_episode` on a fresh ``env``."""
    obs, info = env.reset()
    frames = [_frame(env)] if render else []
    actions: list[int] = []
    rewards: list[float] = []
    masks: list[np.ndarray] = []
    choices: dict[str, list[np.ndarray]] = {}
    factors: list[dict[str, int]] = []
    states = zero_state(policy)
    terminated = truncated = False
    with torch.no_grad():
        while not (terminated or truncated) and (max_steps is None or len(actions) < max_steps):
            batch_actions, states, active, chosen = policy_step(
                policy, obs[None], states, np.array([not actions]), deterministic
            )
            for key, value in chosen.items():
                choices.setdefault(key, []).append(value[:, 0])
            action = int(batch_actions[0])
            factors.append(env_factors(env))
            obs, reward, terminated, truncated, _ = env.step(action)
            if render:
                frames.append(_frame(env))
            actions.append(action)
            rewards.append(float(reward))
            if active is not None:
                masks.append(active[:, 0])
    layers = np.stack(masks).astype(bool) if masks else None
    return Recording(
        condition=name,
        level_seed=int(info["level_seed"]),
        frames=frames,
        actions=np.asarray(actions, dtype=np.int64),
        rewards=np.asarray(rewards, dtype=np.float64),
        active=None if layers is None else layers[:, 0],
        active_layers=layers,
        terminated=bool(terminated),
        choices={key: np.stack(values) for key, values in choices.items()},
        factors=factor_array(factors) if factors else {},
    )


def _frame(env: gym.Env) -> np.ndarray:
    """The environment's current RGB frame, ``(H, W, 3)`` uint8."""
    return np.array(env.render(), dtype=np.uint8)


def _images(frames: Iterable[np.ndarray]) -> Iterator[Image.Image]:
    """Frames as Pillow images, checking that all have one ``(H, W, 3)`` shape."""
    shape: tuple[int, ...] | None = None
    for frame in frames:
        array = np.asarray(frame, dtype=np.uint8)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"frames must be (H, W, 3) RGB arrays, got shape {array.shape}")
        if shape is not None and array.shape != shape:
            raise ValueError(f"all frames must have the same shape: {array.shape} after {shape}")
        shape = array.shape
        yield Image.fromarray(array)


def save_gif(frames: Iterable[np.ndarray], path: str | Path, fps: float = 4) -> Path:
    """Write ``frames`` as a looping GIF, atomically (temporary file, then rename).

    ``frames`` may be a generator: Pillow keeps each frame palette-encoded (one byte a
    pixel) only, so long episodes need not hold all RGB frames at once. Pillow merges
    consecutive identical frames into one shown for their summed duration, so the playback
    is unchanged but the file may hold fewer frames.

    :param frames: RGB frames, each ``(H, W, 3)`` uint8, all of the same size.
    :param path: the GIF to write; missing parent folders are created.
    :param fps: frames per second.
    :returns: ``path``.
    :raises ValueError: no frames, frames of different sizes, or ``fps <= 0``.
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    images = _images(frames)
    first = next(images, None)
    if first is None:
        raise ValueError("save_gif needs at least one frame")
    target = Path(path)
    with atomic_path(target) as tmp:
        first.save(tmp, format="GIF", save_all=True, append_images=images, duration=round(1000 / fps), loop=0)
    return target
