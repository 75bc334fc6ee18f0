"""sb3-contrib's recurrent rollout buffer with sequences cut to a maximum length."""

from __future__ import annotations

from typing import Any

import numpy as np
from sb3_contrib.common.recurrent.buffers import RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RecurrentRolloutBufferSamples


class ChunkedRecurrentRolloutBuffer(RecurrentRolloutBuffer):
    """Training sequences end at episode starts, at environment changes and every
    ``max_seq_len`` steps (truncated backpropagation through time).

    Each chunk starts from the recurrent state stored during the rollout, so the forward pass
    is exact; gradients stop at chunk boundaries. Without chunking a minibatch holds a few
    sequences padded to the rollout length, which makes recurrent training run many small
    steps; with it, the same samples form more, shorter sequences.

    :param max_seq_len: longest training sequence (>= 1).
    Other arguments are ``RecurrentRolloutBuffer``'s.
    """

    def __init__(self, *args: Any, max_seq_len: int = 32, **kwargs: Any) -> None:
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        self.max_seq_len = max_seq_len
        super().__init__(*args, **kwargs)

    def _get_samples(
        self, batch_inds: np.ndarray, env_change: np.ndarray, env: Any = None
    ) -> RecurrentRolloutBufferSamples:
        # Flattened env-major order: index = env * n_steps + step.
        step = np.arange(self.buffer_size * self.n_envs) % self.buffer_size
        chunk_start = (step % self.max_seq_len == 0).astype(env_change.dtype).reshape(env_change.shape)
        return super()._get_samples(batch_inds, np.maximum(env_change, chunk_start), env)
