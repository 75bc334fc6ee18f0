"""What is happening in a MiniGrid level at one step, as small integers (environment *factors*).

Read from the environment's own state (``env.unwrapped``: the grid, ``carrying``, the agent's view through
``gen_obs_grid``), never from the observation the agent gets, so that an analysis can ask whether a model's
units tie to these events (issue 26). Every factor exists for every level: one that a level does not have
(no key, one room, no perturbation) is a constant 0.

- ``carrying_key``: the agent holds a key.
- ``door_open``: some door of the level is open.
- ``key_in_view``, ``door_in_view``, ``goal_in_view``: such an object is on a visible cell of the agent's view
  (its own cell, where the view shows a carried object, excepted).
- ``room``: MultiRoom's index of the room the agent stands in (a doorway counts as the room it leads into);
  0 in levels without ``rooms``.
- ``perturbed_in_view``: a cell changed by a perturbation (:mod:`envs.perturbations`: background tiles,
  distractors) is visible and still holds what the perturbation put there.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from minigrid.core.constants import IDX_TO_OBJECT
from minigrid.minigrid_env import MiniGridEnv

from envs.fast_obs import fast_view, has_stock_observations

FACTORS: tuple[str, ...] = (
    "carrying_key", "door_open", "key_in_view", "door_in_view", "goal_in_view", "room", "perturbed_in_view",
)  # fmt: skip


def perturbed_cells(env: gym.Env) -> frozenset[tuple[int, int]]:
    """The cells the perturbation wrapper of ``env`` (if any) changed at the last reset."""
    while isinstance(env, gym.Wrapper):
        cells = getattr(env, "perturbed_cells", None)
        if cells is not None:
            return cells
        env = env.env
    return frozenset()


def _room(base: MiniGridEnv) -> int:
    """Index of the last of ``base.rooms`` whose rectangle (walls included) holds the agent; 0 without rooms."""
    x, y = (int(v) for v in base.agent_pos)
    found = 0
    for index, room in enumerate(getattr(base, "rooms", None) or []):
        (left, top), (width, height) = room.top, room.size
        if left <= x < left + width and top <= y < top + height:
            found = index
    return found


def _seen_types(base: MiniGridEnv) -> tuple[set[str], np.ndarray]:
    """The object types on the visible cells of the agent's view (its own cell excepted) and the ``(V, V)``
    visibility mask indexed ``[vx, vy]`` (as ``gen_obs_grid`` gives it). One pass over the view
    (:func:`envs.fast_obs.fast_view`) where the environment builds its view with MiniGrid's stock code, else its own
    ``gen_obs_grid``."""
    view = fast_view(base) if has_stock_observations(base) else None
    if view is not None:
        codes, visible = view
        seen = visible.copy()
        seen[base.agent_view_size // 2, base.agent_view_size - 1] = False
        return {IDX_TO_OBJECT[int(index)] for index in np.unique(codes[..., 0][seen])}, visible
    grid, visible = base.gen_obs_grid()  # (V, V) view grid, (V, V) bool indexed [i, j]
    size = grid.width
    own = (size - 1) * size + size // 2  # index j * V + i of the agent's own cell (i = V // 2, j = V - 1)
    shown = visible.T.reshape(-1)  # (V * V,) in the grid's row-major order
    types = {obj.type for index, obj in enumerate(grid.grid) if obj is not None and shown[index] and index != own}
    return types, visible


def env_factors(env: gym.Env) -> dict[str, int]:
    """The :data:`FACTORS` of ``env``'s current state (call it after ``reset`` and after each ``step``).

    :param env: a MiniGrid environment, possibly wrapped (the wrappers of :mod:`envs.levels`).
    :returns: ``{factor: value}``, values 0/1 except ``room``.
    """
    base = env.unwrapped
    types, visible = _seen_types(base)
    doors = [obj for obj in base.grid.grid if obj is not None and obj.type == "door"]
    carrying = base.carrying
    perturbed = 0
    for x, y in perturbed_cells(env):
        coords = base.relative_coords(x, y)
        if coords is not None and visible[coords] and base.grid.get(x, y) is not None:
            perturbed = 1
            break
    return {
        "carrying_key": int(carrying is not None and carrying.type == "key"),
        "door_open": int(any(door.is_open for door in doors)),
        "key_in_view": int("key" in types),
        "door_in_view": int("door" in types),
        "goal_in_view": int("goal" in types),
        "room": _room(base),
        "perturbed_in_view": perturbed,
    }


def factor_array(rows: list[dict[str, int]]) -> dict[str, np.ndarray]:
    """Per-step factor dicts as ``{factor: (T,) int64}``."""
    return {name: np.asarray([row[name] for row in rows], dtype=np.int64) for name in FACTORS}
