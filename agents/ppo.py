"""Recurrent PPO with a pluggable core (sb3-contrib's algorithm, our policy and sequence path)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from sb3_contrib import RecurrentPPO as _ContribRecurrentPPO
from sb3_contrib.common.recurrent.buffers import RecurrentRolloutBuffer
from stable_baselines3.common.policies import BasePolicy

from agents.buffers import ChunkedRecurrentRolloutBuffer
from agents.policies import RecurrentPolicy


class RecurrentPPO(_ContribRecurrentPPO):
    """PPO with a recurrent policy whose core is chosen by name.

    Same interface as SB3 / sb3-contrib (``learn``, ``save``, ``load``,
    ``predict(obs, state, episode_start, deterministic)``, callbacks, ``evaluate_policy``)::

        model = RecurrentPPO("RecurrentPolicy", vec_env,
                             policy_kwargs=dict(core="rim", core_kwargs=dict(hidden_size=128, num_units=4, k=3)))

    :param max_seq_len: longest training sequence (truncated BPTT from the stored rollout
        states, see :class:`agents.buffers.ChunkedRecurrentRolloutBuffer`); ``None`` keeps
        sb3-contrib's sequences (cut only at episode starts). Image/box observations only.
    :param torch_threads: torch intra-op threads for this process (default 1: small recurrent
        nets on few cores run many times faster single-threaded); ``None`` leaves torch as is.
    Other arguments are sb3-contrib's ``RecurrentPPO`` ones.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"RecurrentPolicy": RecurrentPolicy}

    def __init__(
        self,
        policy: str | type[RecurrentPolicy],
        env: Any,
        *args: Any,
        max_seq_len: int | None = 32,
        torch_threads: int | None = 1,
        **kwargs: Any,
    ) -> None:
        if max_seq_len is not None and max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1 or None, got {max_seq_len}")
        self.max_seq_len = max_seq_len
        if torch_threads is not None:
            if torch_threads < 1:
                raise ValueError(f"torch_threads must be >= 1 or None, got {torch_threads}")
            torch.set_num_threads(torch_threads)
        self.torch_threads = torch_threads
        super().__init__(policy, env, *args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.max_seq_len is not None and isinstance(self.rollout_buffer, RecurrentRolloutBuffer):
            self.rollout_buffer = ChunkedRecurrentRolloutBuffer(
                self.n_steps,
                self.observation_space,
                self.action_space,
                self.rollout_buffer.hidden_states_pi.shape,
                self.device,
                gamma=self.gamma,
                gae_lambda=self.gae_lambda,
                n_envs=self.n_envs,
                max_seq_len=self.max_seq_len,
            )
