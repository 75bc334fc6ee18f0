"""Recurrent A2C: the recurrent PPO machinery with A2C's update."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from agents.buffers import ChunkedRecurrentRolloutBuffer
from agents.fast_slow import FastSlowConfig
from agents.policies import RecurrentPolicy
from agents.ppo import RecurrentPPO


class RecurrentA2C(RecurrentPPO):
    """Advantage actor-critic with a recurrent core (stable-baselines3 has no recurrent A2C).

    Differs from :class:`RecurrentPPO` only in the update: one gradient step per rollout on the
    whole rollout (all its sequences), the plain policy-gradient loss (no ratio, no
    clipping), RMSprop (``alpha=0.99, eps=1e-5``) and short rollouts, as SB3's ``A2C``
    defaults: ``n_steps=5, learning_rate=7e-4, gae_lambda=1.0, ent_coef=0.0, vf_coef=0.5,
    max_grad_norm=0.5``.

    With ``fast_slow`` (:mod:`agents.fast_slow`) the inner loop is that one step, on the fast group
    only (the short rollout is the small, recent batch: ``inner_batch_size`` must be ``None``),
    and the slow group's outer gradient is the loss of the same rollout after it, summed over
    ``outer_horizon`` rollouts; both optimizers are RMSprop.
    """

    _padded_update_adds_core_loss = True  # its padded path adds the core's loss term too

    def __init__(
        self,
        policy: str | type[RecurrentPolicy],
        env: Any,
        learning_rate: float = 7e-4,
        n_steps: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rms_prop_eps: float = 1e-5,
        normalize_advantage: bool = False,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        policy_kwargs = dict(policy_kwargs or {})
        policy_kwargs.setdefault("optimizer_class", torch.optim.RMSprop)
        policy_kwargs.setdefault("optimizer_kwargs", dict(alpha=0.99, eps=rms_prop_eps, weight_decay=0))
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            n_epochs=1,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            normalize_advantage=normalize_advantage,
            policy_kwargs=policy_kwargs,
            **kwargs,
        )

    def _setup_fast_slow(self, config: FastSlowConfig) -> None:
        if config.inner_batch_size is not None:
            raise ValueError(
                f"fast_slow.inner_batch_size must be null for A2C (its inner step is the whole "
                f"{self.n_steps}-step rollout), got {config.inner_batch_size}"
            )
        super()._setup_fast_slow(config)

    def train(self) -> None:
        """One gradient step on the whole rollout (with ``fast_slow``: the fast group's, then
        the slow group's outer gradient of the same rollout)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        loss, policy_loss, value_loss, entropy_loss = self._rollout_loss()
        self.policy.optimizer.zero_grad()
        params = self._backward(loss)
        torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.policy.optimizer.step()
        self._n_updates += 1
        if self.slow_learner is not None:
            self._outer_step(self._rollout_loss()[0])
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/policy_loss", policy_loss.item())
        self.logger.record("train/value_loss", value_loss.item())
        self.logger.record("train/entropy_loss", entropy_loss.item())

    def _rollout_loss(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A2C's loss on the whole rollout and its policy, value and entropy terms (scalars); the loss
        includes the core's own term (:meth:`RecurrentPPO._core_aux_loss`), logged as ``train/aux_loss``."""
        values, log_prob, entropy, advantages, returns = self._evaluate_rollout()
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -(advantages * log_prob).mean()
        value_loss = F.mse_loss(returns, values)
        entropy_loss = -entropy.mean() if entropy is not None else log_prob.mean()
        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
        aux = self._core_aux_loss()  # the core's loss term of the forward just run (e.g. model.balance_loss)
        if aux is not None:
            loss = loss + aux
            self.logger.record("train/aux_loss", aux.item())
        return loss, policy_loss, value_loss, entropy_loss

    def _evaluate_rollout(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
        """Values, log-probabilities, entropies, advantages and returns ``(B,)`` of every sample.

        Packed (no padding) where :meth:`RecurrentPPO._packs`, else sb3-contrib's padded
        sequences with the padding masked out.
        """
        buffer = self.rollout_buffer
        if self._packs():
            assert isinstance(buffer, ChunkedRecurrentRolloutBuffer)
            batch = next(buffer.get_packed(batch_size=None))
            values, log_prob, entropy = self.policy.evaluate_packed(batch, self._distribution_actions(batch.actions))
            return values, log_prob, entropy, batch.advantages, batch.returns
        data = next(buffer.get(batch_size=None))
        mask = data.mask > 1e-8
        values, log_prob, entropy = self.policy.evaluate_actions(
            data.observations, self._distribution_actions(data.actions), data.lstm_states, data.episode_starts
        )
        entropy = entropy[mask] if entropy is not None else None
        return values.flatten()[mask], log_prob[mask], entropy, data.advantages[mask], data.returns[mask]
