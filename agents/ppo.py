"""Recurrent PPO with a pluggable core (sb3-contrib's algorithm, our policy and sequence path)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import RecurrentPPO as _ContribRecurrentPPO
from sb3_contrib.common.recurrent.buffers import RecurrentRolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import explained_variance

from agents import fast_slow
from agents.buffers import ChunkedRecurrentRolloutBuffer, PackedSequences
from agents.fast_slow import FastSlowConfig, SlowLearner
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
    :param fast_slow: fast and slow learning (Meta-RIMs, :mod:`agents.fast_slow`): a
        :class:`agents.fast_slow.FastSlowConfig`, a mapping of its fields or ``True`` for its
        defaults; ``None`` (default) trains all parameters together. Needs a RIM-family core
        (``ValueError`` naming the core otherwise) and packed updates (``max_seq_len`` set).
        Its two optimizers are in ``save``/``load`` and in :mod:`agents.experiment.checkpoint`.
    Other arguments are sb3-contrib's ``RecurrentPPO`` ones. The algorithm makes no process-wide
    setting: torch's thread count is the caller's (``rims-train`` sets ``torch_threads``, default 1:
    small recurrent nets on few cores run many times faster single-threaded).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"RecurrentPolicy": RecurrentPolicy}

    def __init__(
        self,
        policy: str | type[RecurrentPolicy],
        env: Any,
        *args: Any,
        max_seq_len: int | None = 32,
        fast_slow: FastSlowConfig | Mapping[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> None:
        if max_seq_len is not None and max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1 or None, got {max_seq_len}")
        self.max_seq_len = max_seq_len
        self.fast_slow = FastSlowConfig.from_value(fast_slow)
        self.slow_learner: SlowLearner | None = None
        super().__init__(policy, env, *args, **kwargs)

    _padded_update_adds_core_loss = False  # sb3-contrib's own update (max_seq_len=None) has no aux-loss hook

    def _setup_model(self) -> None:
        if self.fast_slow is not None and self.fast_slow.inner_learning_rate is not None:
            self.learning_rate = self.fast_slow.inner_learning_rate  # the fast group's, before the schedule is built
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
        core = getattr(self.policy, "core", None)
        options = getattr(getattr(core, "module", None), "options", None)
        if not self._packs() and not self._padded_update_adds_core_loss and getattr(options, "balance_loss", 0) > 0:
            raise ValueError(
                f"{type(self).__name__}: balance_loss={options.balance_loss} needs the packed update (max_seq_len "
                "set, not None, and a RecurrentPolicy); sb3-contrib's padded update adds no core loss term"
            )
        if self._packs() and (core.replays_initial_state or core.replays_noise):  # the update replays the draws
            core.keeps_rollout_draws = True
            if core.replays_initial_state:
                self.rollout_buffer.initial_states = self._drawn_initial_state
            if core.replays_noise:
                self.rollout_buffer.keep_noise(core.module.num_layers * core.module.num_units, self._drawn_noise)
        if self.fast_slow is not None:
            self._setup_fast_slow(self.fast_slow)

    def _setup_fast_slow(self, config: FastSlowConfig) -> None:
        """Fast group on ``policy.optimizer``, slow group on :attr:`slow_learner`.

        :raises ValueError: no packed updates, or a core without attention parameters.
        """
        if not self._packs():
            raise ValueError("fast_slow needs packed updates: a RecurrentPolicy and max_seq_len set (not None)")
        assert isinstance(self.policy, RecurrentPolicy)
        self.slow_learner = fast_slow.build(
            self.policy, self.policy.core, self.policy.core_name, config, self.lr_schedule(1), self.max_grad_norm
        )

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        if self.slow_learner is not None:
            state_dicts = [*state_dicts, "slow_learner"]
        return state_dicts, variables

    def _backward(self, loss: torch.Tensor) -> list[torch.nn.Parameter]:
        """Gradients of ``loss`` for the parameters the inner step moves; returns them.

        All of the policy's, or with fast/slow learning only the fast group's (the slow group's
        ``.grad`` is left alone).
        """
        if self.slow_learner is None:
            loss.backward()
            return list(self.policy.parameters())
        params = self.policy.optimizer.param_groups[0]["params"]
        loss.backward(inputs=params)
        return params

    def _outer_step(self, loss: torch.Tensor) -> None:
        """Add the slow group's gradient of ``loss`` (the whole rollout's) to the outer sum."""
        assert self.slow_learner is not None
        self.slow_learner.accumulate(loss)
        self.logger.record("train/outer_loss", loss.item())
        self.logger.record("train/n_outer_updates", self.slow_learner.steps)

    def _drawn_initial_state(self) -> tuple[torch.Tensor, ...] | None:
        """The random initial state the core drew at the last acting step (the buffer keeps it where an episode
        starts, so that the update starts from the rollout's draw instead of drawing another)."""
        return self.policy.core.last_initial

    def _drawn_noise(self) -> torch.Tensor | None:
        """The selection-noise draws of the last rollout step (:meth:`agents.cores.RecurrentCore.rollout`)."""
        return self.policy.core.last_noise

    def _packs(self) -> bool:
        """Whether updates run on packed minibatches (our buffer and a policy that evaluates them)."""
        return isinstance(self.rollout_buffer, ChunkedRecurrentRolloutBuffer) and isinstance(
            self.policy, RecurrentPolicy
        )

    def _distribution_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Stored actions ``(B, ...)`` as the distribution takes them (discrete ones ``long``, flat)."""
        if isinstance(self.action_space, spaces.Discrete):
            return actions.long().flatten()
        return actions

    def train(self) -> None:
        """sb3-contrib's PPO update (same losses, early stop and logs) on packed minibatches.

        With :class:`ChunkedRecurrentRolloutBuffer` and a :class:`RecurrentPolicy` the
        minibatches come unpadded (:class:`agents.buffers.PackedSequences`): the encoder, heads
        and losses run on the real samples only, so no masks are needed. Otherwise
        sb3-contrib's own update runs. One difference: a one-sample minibatch is not
        advantage-normalised (its standard deviation is undefined; sb3-contrib gets NaN).

        With :attr:`fast_slow` set, these minibatch steps (of ``inner_batch_size``) are the inner
        loop and move the fast group only; then the loss of the whole rollout feeds the slow
        group's outer gradient (:mod:`agents.fast_slow`).
        """
        if not self._packs():
            super().train()
            return
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        clip_range = self.clip_range(progress)
        clip_range_vf = None if self.clip_range_vf is None else self.clip_range_vf(progress)
        logs: dict[str, list[float]] = {"entropy": [], "policy": [], "value": [], "clip": [], "kl": [], "aux": []}
        batch_size = self.batch_size
        if self.fast_slow is not None and self.fast_slow.inner_batch_size is not None:
            batch_size = self.fast_slow.inner_batch_size
        for epoch in range(self.n_epochs):
            stop = False
            logs["kl"] = []  # sb3-contrib logs the last epoch's mean
            for batch in self.rollout_buffer.get_packed(batch_size):
                loss, terms = self._ppo_loss(batch, clip_range, clip_range_vf)
                for key, value in terms.items():
                    logs[key].append(value)
                if self.target_kl is not None and terms["kl"] > 1.5 * self.target_kl:
                    stop = True
                    if self.verbose >= 1:
                        self.logger.info(f"Early stopping at epoch {epoch} due to reaching max kl: {terms['kl']:.2f}")
                    break
                self.policy.optimizer.zero_grad()
                params = self._backward(loss)
                torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if stop:
                break
        if self.slow_learner is not None:
            whole = next(self.rollout_buffer.get_packed(None))
            self._outer_step(self._ppo_loss(whole, clip_range, clip_range_vf)[0])
        buffer = self.rollout_buffer
        self.logger.record("train/entropy_loss", np.mean(logs["entropy"]))
        self.logger.record("train/policy_gradient_loss", np.mean(logs["policy"]))
        self.logger.record("train/value_loss", np.mean(logs["value"]))
        self.logger.record("train/approx_kl", np.mean(logs["kl"]))
        self.logger.record("train/clip_fraction", np.mean(logs["clip"]))
        if logs["aux"]:
            self.logger.record("train/aux_loss", np.mean(logs["aux"]))
        self.logger.record("train/loss", loss.item())
        self.logger.record(
            "train/explained_variance", explained_variance(buffer.values.flatten(), buffer.returns.flatten())
        )
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", torch.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def _ppo_loss(
        self, batch: PackedSequences, clip_range: float, clip_range_vf: float | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """sb3-contrib's PPO loss of a packed minibatch and its terms (policy, value, entropy
        losses, clip fraction, approximate KL) as floats for the logs."""
        values, log_prob, entropy = self.policy.evaluate_packed(batch, self._distribution_actions(batch.actions))
        advantages = batch.advantages
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        log_ratio = log_prob - batch.old_log_prob
        ratio = torch.exp(log_ratio)
        clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
        policy_loss = -torch.min(advantages * ratio, advantages * clipped).mean()
        if clip_range_vf is not None:
            values = batch.old_values + torch.clamp(values - batch.old_values, -clip_range_vf, clip_range_vf)
        value_loss = ((batch.returns - values) ** 2).mean()
        entropy_loss = -(entropy if entropy is not None else -log_prob).mean()
        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
        with torch.no_grad():
            approx_kl = ((ratio - 1) - log_ratio).mean().item()
            clip_fraction = ((ratio - 1).abs() > clip_range).float().mean().item()
        terms = {"policy": policy_loss.item(), "value": value_loss.item(), "entropy": entropy_loss.item()}
        aux = self._core_aux_loss()
        if aux is not None:
            loss = loss + aux
            terms["aux"] = aux.item()
        return loss, {**terms, "clip": clip_fraction, "kl": approx_kl}

    def _core_aux_loss(self) -> torch.Tensor | None:
        """The recurrent core's loss term from the forward just run (the hook
        :meth:`agents.cores.RecurrentCore.aux_loss`; e.g. the RIM's balance loss, ``model.balance_loss``),
        already weighted by its own coefficient; ``None`` for a core without one."""
        hook = getattr(self.policy, "aux_loss", None)
        return None if hook is None else hook()
