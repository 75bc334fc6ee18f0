"""Recurrent actor-critic policy: features extractor -> recurrent core -> actor and critic heads."""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, MlpExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor, nn

from agents.buffers import PackedSequences
from agents.cores import DEFAULT_HIDDEN_SIZE, RecurrentCore, make_core
from agents.extractors import MiniGridCNN

_FUSED_ADAM = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 4)  # fused Adam on CPU


class RecurrentPolicy(RecurrentActorCriticPolicy):
    """One recurrent core shared by actor and critic, chosen by name.

    Subclasses sb3-contrib's ``RecurrentActorCriticPolicy`` for its ``predict`` and its rollout
    machinery, but builds none of its LSTMs: the core comes from :func:`agents.cores.make_core`,
    so ``lstm``, ``gru``, ``rim`` and ``rim_gru`` differ only in the core. Value and policy
    gradients both reach the core.

    :param core: core name (``lstm``, ``gru``, ``rim``, ``rim_gru``).
    :param core_kwargs: options of the core (``hidden_size``, ``num_units``, ``k``, ...).
    :param net_arch: hidden layers of the actor and critic heads on top of the core.
    :param features_extractor_class: defaults to :class:`MiniGridCNN` for image observations.
    :param normalize_images: default ``False``: MiniGrid images hold category codes.
    :param optimizer_kwargs: default for Adam: SB3's ``eps=1e-5`` and, from torch 2.4 (fused
        Adam on CPU), ``fused=True`` (one kernel for all parameters: ~3x faster optimizer steps
        on CPU than the per-tensor loop).
    Other arguments are SB3's ``ActorCriticPolicy`` ones.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        features_extractor_class: type[BaseFeaturesExtractor] | None = None,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = False,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        core: str = "lstm",
        core_kwargs: dict[str, Any] | None = None,
        use_sde: bool = False,
    ) -> None:
        if features_extractor_class is None:
            is_image = isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 3
            features_extractor_class = MiniGridCNN if is_image else FlattenExtractor
        if optimizer_kwargs is None and optimizer_class is torch.optim.Adam:
            optimizer_kwargs = dict(eps=1e-5, fused=True) if _FUSED_ADAM else dict(eps=1e-5)  # SB3's eps
        self.core_name = core
        self.core_kwargs = dict(core_kwargs or {})
        self.lstm_output_dim = self.core_kwargs.get("hidden_size", DEFAULT_HIDDEN_SIZE)
        ActorCriticPolicy.__init__(
            self,
            observation_space,
            action_space,
            lr_schedule,
            net_arch=dict(pi=[64], vf=[64]) if net_arch is None else net_arch,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            use_sde=use_sde,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            share_features_extractor=True,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.core: RecurrentCore = make_core(core, self.features_dim, **self.core_kwargs)
        self.lstm_hidden_state_shape = (self.core.num_layers, 1, self.core.hidden_size)
        self.shared_lstm, self.enable_critic_lstm = True, False
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    @property
    def lstm_actor(self) -> RecurrentCore:
        """The core, under the name sb3-contrib's algorithms read its sizes from."""
        return self.core

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(core=self.core_name, core_kwargs=self.core_kwargs)
        for key in ("lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm", "lstm_kwargs"):
            data.pop(key, None)
        return data

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = MlpExtractor(
            self.lstm_output_dim, net_arch=self.net_arch, activation_fn=self.activation_fn, device=self.device
        )

    def _latent(
        self, obs: Tensor, states: tuple[Tensor, Tensor], episode_starts: Tensor, rollout: bool = False
    ) -> tuple[Tensor, Any]:
        """Core output for a flat batch of padded sequences.

        :param obs: ``(n_seq * L, ...)`` observations, sequence-major (sb3-contrib's layout).
        :param states: ``(h, c)`` each ``(num_layers, n_seq, hidden_size)``.
        :param episode_starts: ``(n_seq * L,)``.
        :param rollout: an acting step of a rollout (:meth:`agents.cores.RecurrentCore.rollout`).
        :returns: ``(latent (n_seq * L, hidden_size), new states)``.
        """
        features = self.extract_features(obs)
        n_seq = states[0].shape[1]
        seq = features.reshape(n_seq, -1, features.shape[-1]).transpose(0, 1)  # (L, n_seq, F)
        if episode_starts.numel() == seq.shape[0] * n_seq:
            starts = episode_starts.reshape(n_seq, -1).transpose(0, 1)  # (L, n_seq)
        else:  # sb3-contrib bootstraps a truncated episode's last obs with the env-wide flags: no reset
            starts = torch.zeros(seq.shape[:2], device=seq.device)
        out, new_states = (self.core.rollout if rollout else self.core)(seq, states, starts)
        return out.transpose(0, 1).reshape(-1, out.shape[-1]), new_states

    def forward(
        self, obs: Tensor, lstm_states: RNNStates, episode_starts: Tensor, deterministic: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, RNNStates]:
        latent, states = self._latent(obs, lstm_states.pi, episode_starts, rollout=True)
        latent_pi, latent_vf = self.mlp_extractor(latent)
        values = self.value_net(latent_vf)
        actions, log_prob = self._act(latent_pi, deterministic)
        actions = actions.reshape((-1, *self.action_space.shape))
        return actions, values, log_prob, RNNStates(states, states)

    def _act(self, latent_pi: Tensor, deterministic: bool) -> tuple[Tensor, Tensor]:
        """Actions ``(N, ...)`` and their log-probabilities ``(N,)`` from the actor's latent.

        Discrete actions skip building a ``torch.distributions.Categorical`` (its argument
        checks cost more than the sampling at acting batch sizes): the same ``multinomial`` draw
        on the softmax of the logits, so the same actions for the same random state (the
        probabilities and log-probabilities equal Categorical's up to rounding).
        """
        if not isinstance(self.action_dist, CategoricalDistribution):
            distribution = self._get_action_dist_from_latent(latent_pi)
            actions = distribution.get_actions(deterministic=deterministic)
            return actions, distribution.log_prob(actions)
        logits = self.action_net(latent_pi)
        probs = torch.softmax(logits, dim=-1)
        actions = probs.argmax(dim=-1) if deterministic else torch.multinomial(probs, 1, True).squeeze(-1)
        return actions, torch.log_softmax(logits, dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def get_distribution(
        self, obs: Tensor, lstm_states: tuple[Tensor, Tensor], episode_starts: Tensor
    ) -> tuple[Distribution, tuple[Tensor, ...]]:
        latent, states = self._latent(obs, lstm_states, episode_starts)
        return self._get_action_dist_from_latent(self.mlp_extractor.forward_actor(latent)), states

    def predict_values(self, obs: Tensor, lstm_states: tuple[Tensor, Tensor], episode_starts: Tensor) -> Tensor:
        latent, _ = self._latent(obs, lstm_states, episode_starts)
        return self.value_net(self.mlp_extractor.forward_critic(latent))

    def evaluate_packed(self, batch: PackedSequences, actions: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Values, log-probabilities and entropies ``(B,)`` of a packed minibatch.

        Only the core runs on the padded layout: features are scattered into it and the core's
        outputs gathered back, so the encoder and the heads see the ``B`` real samples only, and a RIM
        core's selection remedies (loads, balance loss) count the real samples only.
        """
        features = self.extract_features(batch.observations)
        rows = batch.max_len * batch.n_seq
        padded = features.new_zeros(rows, features.shape[-1]).index_copy(0, batch.index, features)
        real = features.new_zeros(rows).index_fill_(0, batch.index, 1.0).view(batch.max_len, batch.n_seq)
        starts = features.new_zeros(batch.max_len, batch.n_seq)
        starts[0] = batch.first_starts
        noise = None
        if batch.noise is not None:  # the rollout's selection-noise draws, replayed: (L, N, num_layers, U)
            noise = batch.noise.new_zeros(rows, batch.noise.shape[-1]).index_copy(0, batch.index, batch.noise)
            noise = noise.view(batch.max_len, batch.n_seq, self.core.module.num_layers, -1)
        out, _ = self.core(padded.view(batch.max_len, batch.n_seq, -1), batch.states, starts, real, noise)
        latent = out.reshape(rows, -1).index_select(0, batch.index)
        latent_pi, latent_vf = self.mlp_extractor(latent)
        distribution = self._get_action_dist_from_latent(latent_pi)
        return self.value_net(latent_vf).flatten(), distribution.log_prob(actions), distribution.entropy()

    def aux_loss(self) -> Tensor | None:
        """The core's loss term from the last training forward (:meth:`agents.cores.RecurrentCore.aux_loss`),
        or ``None``; the algorithms add it to their loss and log it as ``train/aux_loss``."""
        return self.core.aux_loss()

    def evaluate_actions(
        self, obs: Tensor, actions: Tensor, lstm_states: RNNStates, episode_starts: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        latent, _ = self._latent(obs, lstm_states.pi, episode_starts)
        latent_pi, latent_vf = self.mlp_extractor(latent)
        distribution = self._get_action_dist_from_latent(latent_pi)
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy()
