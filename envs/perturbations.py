"""Visual perturbations of MiniGrid levels that keep the task and its solvability.

``background``: coloured floor tiles on a fraction of the free cells the agent can reach
(walkable; "a familiar thing in a new background"). ``distractors``: a few extra objects of types
and colours the level does not use, on reachable cells, placed only where every object the task
needs stays reachable.
Both keep the observation shape; :func:`is_solvable` checks reachability.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from minigrid.core.constants import COLOR_NAMES
from minigrid.core.world_object import Ball, Box, Door, Floor, Goal, Key, WorldObj
from minigrid.minigrid_env import MiniGridEnv


def _free_cells(env: MiniGridEnv) -> list[tuple[int, int]]:
    """Empty cells the agent can reach (:func:`reachable_cells`), its own excepted, in row-major order.

    Only reachable cells count: a level smaller than its grid (MultiRoom's rooms in a 25x25 grid) has
    empty cells outside its walls, and a perturbation placed there would never be seen.
    """
    agent = tuple(int(v) for v in env.agent_pos)
    reachable = reachable_cells(env)
    return [
        (x, y)
        for y in range(env.grid.height)
        for x in range(env.grid.width)
        if env.grid.get(x, y) is None and (x, y) != agent and (x, y) in reachable
    ]


def _used_colors(env: MiniGridEnv) -> set[str]:
    return {obj.color for obj in env.grid.grid if obj is not None and obj.type not in ("wall", "floor")}


def reachable_cells(env: MiniGridEnv) -> set[tuple[int, int]]:
    """The cells the agent can reach: breadth-first search from its position over cells it can stand
    on or clear (empty, floor, goal, doors, which a key opens, and keys, which it picks up). Lava,
    walls and other objects (balls, boxes) block."""
    grid = env.grid
    start = tuple(int(v) for v in env.agent_pos)
    seen = {start}
    queue = deque([start])
    while queue:
        x, y = queue.popleft()
        for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if not (0 <= nx < grid.width and 0 <= ny < grid.height) or (nx, ny) in seen:
                continue
            obj = grid.get(nx, ny)
            if obj is None or obj.can_overlap() or isinstance(obj, (Door, Key)):
                seen.add((nx, ny))
                queue.append((nx, ny))
    return seen


def is_solvable(env: MiniGridEnv) -> bool:
    """Whether the agent can reach every goal, key and door of the level (:func:`reachable_cells`);
    objects count as reached when on or next to a reached cell."""
    grid = env.grid
    seen = reachable_cells(env)
    needed = [
        (x, y) for y in range(grid.height) for x in range(grid.width) if isinstance(grid.get(x, y), (Goal, Key, Door))
    ]
    near = {(x + dx, y + dy) for x, y in seen for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))}
    return all(cell in near for cell in needed)


class _LevelPerturbation(gym.Wrapper):
    """Base: perturb the grid after each reset with an RNG derived from the level.

    :ivar perturbed_cells: the ``(x, y)`` cells the last reset changed (read by :func:`envs.factors.env_factors`).
    """

    salt = 0
    perturbed_cells: frozenset[tuple[int, int]] = frozenset()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        _, info = self.env.reset(seed=seed, options=options)
        base = self.env.unwrapped
        level_seed = int(base.np_random.integers(2**31)) if seed is None else seed
        before = list(base.grid.grid)  # objects by cell, row-major
        self._perturb(base, np.random.default_rng([level_seed, self.salt]))
        width = base.grid.width
        changed = (i for i, (old, new) in enumerate(zip(before, base.grid.grid, strict=True)) if old is not new)
        self.perturbed_cells = frozenset((i % width, i // width) for i in changed)
        return base.gen_obs(), info

    def _perturb(self, env: MiniGridEnv, rng: np.random.Generator) -> None:
        raise NotImplementedError


class BackgroundTiles(_LevelPerturbation):
    """Coloured floor tiles on ``fraction`` of the free reachable cells (at least one), in colours
    the level does not use.

    :param fraction: share of free cells covered, in (0, 1].
    """

    salt = 1

    def __init__(self, env: gym.Env, fraction: float = 0.5) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        super().__init__(env)
        self.fraction = fraction

    def _perturb(self, env: MiniGridEnv, rng: np.random.Generator) -> None:
        free = _free_cells(env)
        colors = [c for c in COLOR_NAMES if c not in _used_colors(env)] or list(COLOR_NAMES)
        for index in rng.permutation(len(free))[: max(1, round(self.fraction * len(free)))]:
            x, y = free[index]
            env.grid.set(x, y, Floor(colors[int(rng.integers(len(colors)))]))


class Distractors(_LevelPerturbation):
    """Up to ``count`` extra balls or boxes (types and colours unused by the level) on free
    reachable cells where the level stays solvable (:func:`is_solvable`).

    :param count: number of distractors to try to place.
    """

    salt = 2

    def __init__(self, env: gym.Env, count: int = 2) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        super().__init__(env)
        self.count = count

    def _perturb(self, env: MiniGridEnv, rng: np.random.Generator) -> None:
        used_types = {obj.type for obj in env.grid.grid if obj is not None}
        kinds: list[type[WorldObj]] = [k for k in (Ball, Box) if k.__name__.lower() not in used_types] or [Ball]
        colors = [c for c in COLOR_NAMES if c not in _used_colors(env)] or list(COLOR_NAMES)
        placed = 0
        for index in rng.permutation(len(free := _free_cells(env))):
            if placed == self.count:
                break
            x, y = free[index]
            env.grid.set(x, y, kinds[int(rng.integers(len(kinds)))](colors[int(rng.integers(len(colors)))]))
            if is_solvable(env):
                placed += 1
            else:
                env.grid.set(x, y, None)


PERTURBATIONS: dict[str, type[_LevelPerturbation]] = {"background": BackgroundTiles, "distractors": Distractors}
