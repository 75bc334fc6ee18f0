"""Schemas of the ``agent`` group: recurrent PPO / A2C (``agents/ppo.py``, ``agents/a2c.py``) and
their fast/slow variants (``agents/fast_slow.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from omegaconf import MISSING

from agents.experiment.config.checks import (
    ConfigError,
    in_range,
    non_negative_number,
    one_of,
    positive_int,
    positive_number,
)
from agents.fast_slow import FastSlowConfig

PPO_NAMES = ("ppo", "ppo_meta")
A2C_NAMES = ("a2c", "a2c_meta")


@dataclass
class FastSlowSchema:
    """``agent.fast_slow``: fast and slow learning (Meta-RIMs); checked by :class:`FastSlowConfig`."""

    inner_learning_rate: float | None = field(
        default=None, metadata={"help": "fast group's learning rate; null: agent.learning_rate"}
    )
    outer_learning_rate: float | None = field(
        default=None, metadata={"help": "slow group's (constant) learning rate; null: agent.learning_rate"}
    )
    outer_horizon: int = field(default=4, metadata={"help": "rollouts whose outer gradients make one slow step"})
    inner_batch_size: int | None = field(
        default=None, metadata={"help": "PPO inner minibatch, <= n_steps * n_envs; null: agent.batch_size (A2C: null)"}
    )

    def __post_init__(self) -> None:
        try:
            FastSlowConfig(**asdict(self))
        except ValueError as error:
            raise ConfigError(f"agent.{error}") from error


@dataclass
class AgentConfig:
    """Keys shared by PPO and A2C."""

    name: str = field(default="ppo", metadata={"help": "ppo, a2c, or ppo_meta / a2c_meta (fast/slow learning)"})
    n_steps: int = field(default=128, metadata={"help": "steps per environment per rollout"})
    learning_rate: float = field(default=0.0003, metadata={"help": "optimizer learning rate, > 0"})
    gamma: float = field(default=0.99, metadata={"help": "discount factor, in [0, 1]"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda, in [0, 1]"})
    ent_coef: float = field(default=0.01, metadata={"help": "entropy bonus coefficient, >= 0"})
    vf_coef: float = field(default=0.5, metadata={"help": "value loss coefficient, >= 0"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "gradient clipping norm, > 0"})
    max_seq_len: int = field(default=32, metadata={"help": "longest BPTT sequence, >= 1"})
    # MISSING, not None, in the schema: model=meta_rim sets it before the agent group composes,
    # and a None here would erase it; typed_config reads a missing value as null (off).
    fast_slow: FastSlowSchema | None = field(
        default=MISSING, metadata={"help": "fast/slow learning (agent.fast_slow.*); null: off"}
    )

    def __post_init__(self) -> None:
        positive_int("agent.n_steps", self.n_steps)
        positive_int("agent.max_seq_len", self.max_seq_len)
        positive_number("agent.learning_rate", self.learning_rate)
        positive_number("agent.max_grad_norm", self.max_grad_norm)
        in_range("agent.gamma", self.gamma, 0.0, 1.0)
        in_range("agent.gae_lambda", self.gae_lambda, 0.0, 1.0)
        non_negative_number("agent.ent_coef", self.ent_coef)
        non_negative_number("agent.vf_coef", self.vf_coef)
        if self.name.endswith("_meta") and self.fast_slow is None:
            raise ConfigError(
                f"agent.fast_slow must be set for agent.name={self.name!r} (fast/slow learning), got null"
            )


@dataclass
class PPOConfig(AgentConfig):
    """``agent=ppo|ppo_meta``: recurrent PPO."""

    name: str = field(default="ppo", metadata={"help": "ppo, or ppo_meta (fast/slow learning)"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size, in [1, agent.n_steps * n_envs]"})
    n_epochs: int = field(default=4, metadata={"help": "passes over each rollout, >= 1"})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip, in (0, 1]"})

    def __post_init__(self) -> None:
        one_of("agent.name", self.name, PPO_NAMES)
        super().__post_init__()
        positive_int("agent.batch_size", self.batch_size)
        positive_int("agent.n_epochs", self.n_epochs)
        in_range("agent.clip_range", self.clip_range, 0.0, 1.0, low_open=True)


@dataclass
class A2CConfig(AgentConfig):
    """``agent=a2c|a2c_meta``: recurrent A2C (RMSprop)."""

    name: str = field(default="a2c", metadata={"help": "a2c, or a2c_meta (fast/slow learning)"})
    n_steps: int = field(default=5, metadata={"help": "steps per environment per rollout"})
    learning_rate: float = field(default=0.0007, metadata={"help": "RMSprop learning rate, > 0"})
    gae_lambda: float = field(default=1.0, metadata={"help": "GAE lambda, in [0, 1]"})

    def __post_init__(self) -> None:
        one_of("agent.name", self.name, A2C_NAMES)
        super().__post_init__()
        if self.fast_slow is not None and self.fast_slow.inner_batch_size is not None:
            raise ConfigError(
                "agent.fast_slow.inner_batch_size must be null for A2C (its inner step is the whole rollout), "
                f"got {self.fast_slow.inner_batch_size}"
            )


def agent_schema(name: object) -> type[AgentConfig]:
    """The schema of an ``agent`` node named ``name`` (unknown names: :class:`PPOConfig`, which rejects them)."""
    return A2CConfig if name in A2C_NAMES else PPOConfig
