"""Fast and slow learning of RIM policies (Meta-RIMs; Madan et al., ICLR 2021).

Madan, Ke, Goyal, Schölkopf and Bengio, "Fast and Slow Learning of Recurrent Independent
Mechanisms" (ICLR 2021, arXiv:2105.08710) split a RIM policy's parameters in two: the parameters
of the two attention mechanisms (input attention and communication attention) are
meta-parameters, "learnt slowly in the outer loop", and everything else (the units' recurrent
weights; here also the encoder and the actor/critic heads) is "updated fast in the inner
loop" (paper, abstract and Fig. 1). They report faster adaptation than plain RIMs and LSTMs on
MiniGrid/BabyAI navigation with PPO, and that the reverse split (fast attention, slow units)
works much worse. Their code was not released.

The slow group is found, never named here: every submodule of the policy's core with an
``attention_parameters()`` method (:meth:`rims.RIMCell.attention_parameters` and any other
RIM-family layer) contributes the ``(name, parameter)`` pairs it returns. A core with none (an
``nn.LSTM``/``nn.GRU``) is refused.

The schedule (:class:`FastSlowConfig`), per rollout of the on-policy algorithm:

1. Inner loop: the algorithm's own update (PPO's epochs of minibatches of ``inner_batch_size``
   samples; A2C's one step on its short rollout) moves the fast group only, with its own
   optimizer (the algorithm's optimizer class, ``inner_learning_rate`` and its schedule).
   The slow group gets no gradient and does not move.
2. Outer loop: the algorithm's loss on the whole rollout (one packed batch), evaluated after the
   inner loop has adapted the fast group, is differentiated with respect to the slow group
   only, and the gradient is summed over ``outer_horizon`` rollouts; then the slow group takes
   one step (mean gradient, clipped to the algorithm's ``max_grad_norm``) with a separate
   optimizer of the same class at ``outer_learning_rate``, and the sum restarts.

What the sources available to us do not fix is our choice: the meta-gradient is first-order
(the outer gradient is taken at the adapted fast parameters, without differentiating through
the inner updates: the first-order approximation of MAML, Finn et al. 2017, sec. 5.2; Nichol
et al. 2018, "On first-order meta-learning algorithms"), the outer loss is the algorithm's own
loss (PPO's clipped surrogate against the rollout's behaviour policy), and the defaults (the
agent's learning rate for both groups, ``outer_horizon=4`` rollouts) are untuned. The slow
group therefore takes one step per ``outer_horizon`` rollouts where the fast group takes
``n_epochs * minibatches`` steps per rollout.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastSlowConfig:
    """Settings of fast and slow learning (see the module docstring for the schedule).

    :param inner_learning_rate: learning rate of the fast group; ``None``: the algorithm's
        ``learning_rate`` (and its schedule).
    :param outer_learning_rate: learning rate of the slow group (constant); ``None``: the
        algorithm's initial learning rate.
    :param outer_horizon: rollouts whose outer gradients are summed into one slow step (>= 1).
    :param inner_batch_size: samples per minibatch of PPO's inner loop; ``None``: the
        algorithm's ``batch_size``. A2C's inner loop is its whole (short) rollout: must be
        ``None`` there.
    """

    inner_learning_rate: float | None = None
    outer_learning_rate: float | None = None
    outer_horizon: int = 4
    inner_batch_size: int | None = None

    def __post_init__(self) -> None:
        for key in ("inner_learning_rate", "outer_learning_rate"):
            value = getattr(self, key)
            if value is not None and (not _is_number(value) or not value > 0):
                raise ValueError(f"fast_slow.{key} must be a positive number or null, got {value!r}")
        for key, optional in (("outer_horizon", False), ("inner_batch_size", True)):
            value = getattr(self, key)
            if optional and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                what = "a positive integer or null" if optional else "a positive integer"
                raise ValueError(f"fast_slow.{key} must be {what}, got {value!r}")

    @classmethod
    def from_value(cls, value: FastSlowConfig | Mapping[str, Any] | bool | None) -> FastSlowConfig | None:
        """The config from what an algorithm is given: a config, a mapping of its fields,
        ``True`` (all defaults), or ``None``/``False`` (fast/slow learning off).

        :raises ValueError: unknown keys or invalid values (the message names the key).
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"fast_slow must be a mapping of {_FIELDS}, true or null, got {value!r}")
        unknown = sorted(set(value) - set(_FIELDS))
        if unknown:
            raise ValueError(f"fast_slow has unknown option(s) {unknown}; valid options are {list(_FIELDS)}")
        return cls(**value)


_FIELDS = tuple(field.name for field in dataclasses.fields(FastSlowConfig))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def slow_parameters(core: nn.Module, prefix: str = "core") -> list[tuple[str, nn.Parameter]]:
    """The attention parameters of every RIM-family layer in ``core``, named from the policy.

    Every submodule with an ``attention_parameters()`` method contributes the pairs it returns
    (names relative to that submodule); a parameter reached twice is listed once.

    :param prefix: the core's attribute name in the policy (names read ``core.<path>.<name>``).
    """
    found: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for path, module in core.named_modules(prefix=prefix):
        method = getattr(module, "attention_parameters", None)
        if not callable(method):
            continue
        for name, param in method():
            if id(param) not in seen:
                seen.add(id(param))
                found.append((f"{path}.{name}", param))
    return found


def split_parameters(
    policy: nn.Module, core: nn.Module, core_name: str
) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """``(fast, slow)`` named parameters of ``policy``: slow are the attention parameters of
    ``core`` (the policy's attribute ``core``), fast are all the others.

    :param core_name: the core's name, for the error.
    :raises ValueError: the core has no attention parameters (``lstm``, ``gru``).
    """
    slow = slow_parameters(core)
    if not slow:
        raise ValueError(
            f"fast_slow needs a RIM-family core (layers with attention_parameters()); core {core_name!r} has none"
        )
    slow_ids = {id(p) for _, p in slow}
    fast = [(name, p) for name, p in policy.named_parameters() if id(p) not in slow_ids]
    return fast, slow


class SlowLearner:
    """The slow group's optimizer and its outer gradient summed over the horizon.

    ``state_dict``/``load_state_dict`` carry the optimizer state, the gradient sum and the
    count of rollouts in it, so that SB3 ``save``/``load`` and :mod:`agents.experiment.checkpoint`
    restore a run mid-horizon exactly.

    :param params: the slow group, ``(name, parameter)`` pairs.
    :param optimizer: its optimizer (over exactly these parameters).
    :param horizon: rollouts per slow step.
    :param max_grad_norm: clip norm of the mean gradient.
    """

    def __init__(
        self,
        params: list[tuple[str, nn.Parameter]],
        optimizer: torch.optim.Optimizer,
        horizon: int,
        max_grad_norm: float,
    ) -> None:
        self.names = [name for name, _ in params]
        self.params = [p for _, p in params]
        self.optimizer, self.horizon, self.max_grad_norm = optimizer, horizon, max_grad_norm
        self.grad_sum: list[Tensor] = [torch.zeros_like(p) for p in self.params]
        self.rollouts = 0  # rollouts summed into grad_sum
        self.steps = 0  # slow steps taken

    def accumulate(self, loss: Tensor) -> bool:
        """Add the gradient of ``loss`` with respect to the slow group; step at the horizon.

        Only the slow group's gradient is computed (``torch.autograd.grad``): no ``.grad`` of
        any parameter is touched, and the fast group is not moved.

        :returns: whether the slow group took a step.
        """
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        for total, grad in zip(self.grad_sum, grads, strict=True):
            if grad is not None:
                total.add_(grad)
        self.rollouts += 1
        if self.rollouts < self.horizon:
            return False
        for param, total in zip(self.params, self.grad_sum, strict=True):
            param.grad = total / self.rollouts
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for total in self.grad_sum:
            total.zero_()
        self.rollouts = 0
        self.steps += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state, gradient sum (by parameter name), rollouts in it and steps taken."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "grad_sum": {name: total.clone() for name, total in zip(self.names, self.grad_sum, strict=True)},
            "rollouts": self.rollouts,
            "steps": self.steps,
        }

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Restore :meth:`state_dict`'s output (``strict``: the parameter names must match).

        :raises ValueError: ``strict`` and the names differ.
        """
        sums = state["grad_sum"]
        if strict and list(sums) != self.names:
            raise ValueError(f"slow group parameters differ: saved {list(sums)}, this model {self.names}")
        self.optimizer.load_state_dict(state["optimizer"])
        for name, total in zip(self.names, self.grad_sum, strict=True):
            if name in sums:
                total.copy_(sums[name])
        self.rollouts, self.steps = int(state["rollouts"]), int(state["steps"])


def build(
    policy: nn.Module,
    core: nn.Module,
    core_name: str,
    config: FastSlowConfig,
    learning_rate: float,
    max_grad_norm: float,
) -> SlowLearner:
    """Put ``policy.optimizer`` on the fast group and return the slow group's learner.

    Both optimizers are of the policy's ``optimizer_class`` with its ``optimizer_kwargs`` (Adam
    for PPO, RMSprop for A2C); the fast one starts at ``learning_rate`` (the algorithm's
    schedule then sets it), the slow one stays at ``config.outer_learning_rate`` (default
    ``learning_rate``).

    :raises ValueError: the core has no attention parameters.
    """
    fast, slow = split_parameters(policy, core, core_name)
    optimizer_class = policy.optimizer_class
    kwargs = dict(policy.optimizer_kwargs)
    policy.optimizer = optimizer_class([p for _, p in fast], lr=learning_rate, **kwargs)
    outer_lr = config.outer_learning_rate if config.outer_learning_rate is not None else learning_rate
    slow_optimizer = optimizer_class([p for _, p in slow], lr=outer_lr, **kwargs)
    log.debug("fast/slow groups: %d fast and %d slow parameter tensors", len(fast), len(slow))
    return SlowLearner(slow, slow_optimizer, config.outer_horizon, max_grad_norm)
