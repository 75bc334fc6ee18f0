"""sb3-contrib's recurrent rollout buffer with sequences cut to a maximum length."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
from sb3_contrib.common.recurrent.buffers import RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RecurrentRolloutBufferSamples

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
        super().__init__(*args, **kwargs)

    def get(self, batch_size: int | None = None) -> Generator[RecurrentRolloutBufferSamples, None, None]:
        length, total = self.max_seq_len, self.buffer_size * self.n_envs
        if batch_size is None or batch_size % length or self.buffer_size % length:
            yield from super().get(batch_size)
            return
        assert self.full, "Rollout buffer must be full before sampling from it"
        self._flatten_env_major()
        # env-major order: chunk c holds samples c * length ... c * length + length - 1 of one env
        chunks = np.random.permutation(total // length)
        env_change = (np.arange(total) % length == 0).astype(np.float32).reshape(self.episode_starts.shape)
        per_batch = batch_size // length
        for start in range(0, len(chunks), per_batch):
            batch_inds = (chunks[start : start + per_batch, None] * length + np.arange(length)).ravel()
            yield super()._get_samples(batch_inds, env_change)

    def _flatten_env_major(self) -> None:
        """Lay the stored arrays out environment-major once per rollout (``(n_envs * n_steps, ...)``,
        states ``(n_envs * n_steps, num_layers, hidden)``), as ``RecurrentRolloutBuffer.get`` does."""
        if self.generator_ready:
            return
        for name in ("hidden_states_pi", "cell_states_pi", "hidden_states_vf", "cell_states_vf"):
            setattr(self, name, getattr(self, name).swapaxes(1, 2))
        for name in _FLATTENED:
            setattr(self, name, self.swap_and_flatten(getattr(self, name)))
        self.generator_ready = True

    def _get_samples(
        self, batch_inds: np.ndarray, env_change: np.ndarray, env: Any = None
    ) -> RecurrentRolloutBufferSamples:
        # Flattened env-major order: index = env * n_steps + step.
        step = np.arange(self.buffer_size * self.n_envs) % self.buffer_size
        chunk_start = (step % self.max_seq_len == 0).astype(env_change.dtype).reshape(env_change.shape)
        return super()._get_samples(batch_inds, np.maximum(env_change, chunk_start), env)
