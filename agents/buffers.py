"""sb3-contrib's recurrent rollout buffer with sequences cut to a maximum length."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, NamedTuple

import numpy as np
import torch
from sb3_contrib.common.recurrent.buffers import RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RecurrentRolloutBufferSamples, RNNStates
from torch import Tensor

_FLATTENED = (
    "observations",
    "actions",
    "values",
    "log_probs",
    "advantages",
    "returns",
    "hidden_states_pi",
    "cell_states_pi",
    "hidden_states_vf",
    "cell_states_vf",
    "episode_starts",
)


class PackedSequences(NamedTuple):
    """A minibatch of ``B`` samples without padding, and where each sits in the padded layout.

    The samples form ``n_seq`` sequences (each starts at an episode start, a chunk start or the
    minibatch's first sample). Sample ``b`` is step ``t`` of sequence ``s`` and sits at row
    ``index[b] = t * n_seq + s`` of the time-major padded layout ``(max_len, n_seq)``, so only
    the recurrent core sees padding; everything else runs on the ``B`` real samples.
    """

    observations: Tensor  # (B, *obs_shape)
    actions: Tensor  # (B, *action_shape)
    old_values: Tensor  # (B,)
    old_log_prob: Tensor  # (B,)
    advantages: Tensor  # (B,)
    returns: Tensor  # (B,)
    states: tuple[Tensor, Tensor]  # (h, c) each (num_layers, n_seq, hidden_size): state before each first step
    first_starts: Tensor  # (n_seq,): 1.0 where the sequence's first step starts an episode and the core resets its
    # state; 0.0 also where the buffer kept the initial state the rollout drew (initial_states)
    index: Tensor  # (B,) long
    max_len: int
    n_seq: int
    noise: Tensor | None = None  # (B, num_layers * U): the selection-noise draws the rollout acted with, if kept


class ChunkedRecurrentRolloutBuffer(RecurrentRolloutBuffer):
    """Training sequences end at episode starts, at environment changes and every
    ``max_seq_len`` steps (truncated backpropagation through time).

    Each chunk starts from the recurrent state stored during the rollout, so the forward pass
    is exact; gradients stop at chunk boundaries. Without chunking a minibatch holds a few
    sequences padded to the rollout length, which makes recurrent training run many small
    steps; with it, the same samples form more, shorter sequences.

    Minibatches: when ``max_seq_len`` divides both the rollout length and the batch size, each
    minibatch is ``batch_size / max_seq_len`` whole chunks drawn in random order from all
    environments, so sequences are padded only where an episode starts inside a chunk (and
    every minibatch mixes environments and times). Otherwise sb3-contrib's scheme: consecutive
    samples from a random point of the environment-major order, split into chunks.

    :param max_seq_len: longest training sequence (>= 1).
    Other arguments are ``RecurrentRolloutBuffer``'s.
    """

    def __init__(self, *args: Any, max_seq_len: int = 32, **kwargs: Any) -> None:
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        self.max_seq_len = max_seq_len
        self.initial_states: Callable[[], tuple[Tensor, ...] | None] | None = None
        """Set by the algorithm for a core that draws a random initial state: the draw of the last acting step
        (``(h_0[, c_0])`` each ``(num_layers, n_envs, hidden_size)``), which :meth:`add` keeps where an episode
        starts in place of the state before the reset, so that the update replays the rollout's draw."""
        self.noise_draws: Callable[[], Tensor | None] | None = None
        self.noise_width = 0
        super().__init__(*args, **kwargs)

    def keep_noise(self, width: int, source: Callable[[], Tensor | None]) -> None:
        """Keep the selection-noise draws of every acting step (``source()``: ``(1, n_envs, num_layers, U)``, or
        ``None`` for none), ``width = num_layers * U`` per sample, for :class:`PackedSequences` ``noise``."""
        self.noise_draws, self.noise_width = source, width
        self.reset()

    def reset(self) -> None:
        """sb3-contrib's ``reset``, and zeros for the selection-noise draws if kept."""
        super().reset()
        if getattr(self, "noise_width", 0):
            self.selection_noise = np.zeros((self.buffer_size, self.n_envs, self.noise_width), dtype=np.float32)

    def add(self, *args: Any, lstm_states: RNNStates, **kwargs: Any) -> None:
        """sb3-contrib's ``add``; where an episode starts, the state kept is the initial state the acting step
        drew (:attr:`initial_states`), if any, and the step's selection-noise draws are kept if asked
        (:meth:`keep_noise`). ``args``: ``(obs, action, reward, episode_start, value, log_prob)``.

        :raises RuntimeError: a draw that is missing or not for this buffer's environments (a core that did not
            act through :meth:`agents.cores.RecurrentCore.rollout`).
        """
        if self.noise_draws is not None:
            draws = self.noise_draws()  # (1, n_envs, num_layers, U)
            if draws is None or draws.shape[1] != self.n_envs:
                shape = None if draws is None else tuple(draws.shape)
                raise RuntimeError(f"selection-noise draws for {self.n_envs} environments expected, got {shape}")
            self.selection_noise[self.pos] = draws.reshape(self.n_envs, self.noise_width).cpu().numpy()
        starts = np.asarray(kwargs["episode_start"] if "episode_start" in kwargs else args[3], dtype=bool)
        if self.initial_states is not None and starts.any():
            drawn = self.initial_states()  # (h_0[, c_0]) each (num_layers, n_envs, hidden_size)
            if drawn is None or drawn[0].shape[1] != self.n_envs:
                shape = None if drawn is None else tuple(drawn[0].shape)
                raise RuntimeError(f"an initial-state draw for {self.n_envs} environments expected, got {shape}")
            rows = torch.as_tensor(starts, device=drawn[0].device).view(1, -1, 1)
            kept = tuple(torch.where(rows, new, old) for new, old in zip(drawn, lstm_states.pi, strict=False))
            states = (*kept, *lstm_states.pi[len(kept) :])
            lstm_states = RNNStates(states, states)
        super().add(*args, lstm_states=lstm_states, **kwargs)

    def get(self, batch_size: int | None = None) -> Generator[RecurrentRolloutBufferSamples, None, None]:
        """sb3-contrib's padded minibatches of the samples :meth:`_draws` picks."""
        if batch_size is None:
            yield from super().get(batch_size)
            return
        assert self.full, "Rollout buffer must be full before sampling from it"
        self._flatten_env_major()
        env_change = np.zeros(self.episode_starts.shape, dtype=np.float32)  # _get_samples adds the chunk starts
        for batch_inds in self._draws(batch_size):
            yield self._get_samples(batch_inds, env_change)

    def get_packed(self, batch_size: int | None = None) -> Generator[PackedSequences, None, None]:
        """The minibatches :meth:`get` draws (same samples, same random draws), packed.

        :param batch_size: samples per minibatch; ``None``: the whole rollout in one, in buffer order.
        """
        assert self.full, "Rollout buffer must be full before sampling from it"
        self._flatten_env_major()
        if batch_size is None:
            yield self._packed(np.arange(self.buffer_size * self.n_envs))
            return
        for batch_inds in self._draws(batch_size):
            yield self._packed(batch_inds)

    def _draws(self, batch_size: int) -> Generator[np.ndarray, None, None]:
        """Environment-major sample indices of each minibatch of one epoch (see the class).

        Whole chunks in random order where ``max_seq_len`` divides the rollout length and the
        batch size; otherwise sb3-contrib's draw: consecutive samples from a random split point.
        """
        length, total = self.max_seq_len, self.buffer_size * self.n_envs
        if batch_size % length or self.buffer_size % length:
            split = np.random.randint(total)
            order = np.concatenate((np.arange(split, total), np.arange(split)))
            for start in range(0, total, batch_size):
                yield order[start : start + batch_size]
            return
        # env-major order: chunk c holds samples c * length ... c * length + length - 1 of one env
        chunks = np.random.permutation(total // length)
        per_batch = batch_size // length
        for start in range(0, len(chunks), per_batch):
            yield (chunks[start : start + per_batch, None] * length + np.arange(length)).ravel()

    def _packed(self, batch_inds: np.ndarray) -> PackedSequences:
        """Samples ``batch_inds`` (environment-major indices, sequences as consecutive runs)."""
        step = batch_inds % self.buffer_size
        episode_starts = self.episode_starts[batch_inds].reshape(-1) > 0
        first = episode_starts | (step % self.max_seq_len == 0)
        first[0] = True
        seq_starts = np.flatnonzero(first)
        seq_id = np.cumsum(first) - 1
        position = np.arange(len(batch_inds)) - seq_starts[seq_id]
        n_seq, max_len = len(seq_starts), int(position.max()) + 1
        heads = batch_inds[seq_starts]

        def tensor(array: np.ndarray) -> Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), device=self.device)

        return PackedSequences(
            observations=tensor(self.observations[batch_inds]),
            actions=tensor(self.actions[batch_inds]),
            old_values=tensor(self.values[batch_inds].reshape(-1)),
            old_log_prob=tensor(self.log_probs[batch_inds].reshape(-1)),
            advantages=tensor(self.advantages[batch_inds].reshape(-1)),
            returns=tensor(self.returns[batch_inds].reshape(-1)),
            states=(
                tensor(self.hidden_states_pi[heads].swapaxes(0, 1)),
                tensor(self.cell_states_pi[heads].swapaxes(0, 1)),
            ),
            first_starts=tensor(episode_starts[seq_starts].astype(np.float32) * (self.initial_states is None)),
            index=tensor(position * n_seq + seq_id),
            max_len=max_len,
            n_seq=n_seq,
            noise=tensor(self.selection_noise[batch_inds]) if self.noise_width else None,
        )

    def _flatten_env_major(self) -> None:
        """Lay the stored arrays out environment-major once per rollout (``(n_envs * n_steps, ...)``,
        states ``(n_envs * n_steps, num_layers, hidden)``), as ``RecurrentRolloutBuffer.get`` does
        (same fields, :data:`_FLATTENED`: keep the two in step when upgrading sb3-contrib)."""
        if self.generator_ready:
            return
        for name in ("hidden_states_pi", "cell_states_pi", "hidden_states_vf", "cell_states_vf"):
            setattr(self, name, getattr(self, name).swapaxes(1, 2))
        for name in (*_FLATTENED, "selection_noise") if self.noise_width else _FLATTENED:
            setattr(self, name, self.swap_and_flatten(getattr(self, name)))
        self.generator_ready = True

    def _get_samples(
        self, batch_inds: np.ndarray, env_change: np.ndarray, env: Any = None
    ) -> RecurrentRolloutBufferSamples:
        # Flattened env-major order: index = env * n_steps + step.
        step = np.arange(self.buffer_size * self.n_envs) % self.buffer_size
        chunk_start = (step % self.max_seq_len == 0).astype(env_change.dtype).reshape(env_change.shape)
        return super()._get_samples(batch_inds, np.maximum(env_change, chunk_start), env)
