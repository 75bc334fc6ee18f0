"""Remedies against a top-k selection that collapses onto a fixed set of units.

Mixture-of-experts routing knows the failure as expert collapse; these are its known remedies,
adapted to the RIM selection (the ``k`` units with the highest ranking score are active, the
score being the one of :func:`rims.mechanisms.input_attention.selection_rank`). Each is an option of
:class:`rims.options.RIMOptions`, off by default, and a layer whose options are all at their
defaults computes exactly what it computed before them.

* **Noisy top-k** (``selection_noise``, ``selection_noise_learned``, ``selection_noise_anneal``;
  Shazeer et al. 2017, "Outrageously Large Neural Networks", eq. 3-5). In training mode only, a
  call draws ``eps ~ N(0, 1)`` of shape ``(L, U, N, 1)`` from torch's default generator on the
  input's device, before anything else it draws, and adds ``sigma_i * eps`` to the ranking score
  of the top-k choice; the gate values (the attention on the input) do not see it. ``sigma_i =
  selection_noise * a * exp(s_i)``: ``a = max(0, 1 - calls / selection_noise_anneal)`` (1 when
  ``selection_noise_anneal`` is 0; ``calls`` counts this layer's training-mode calls, buffer
  ``selection_noise_calls``) and ``s`` the learned log-scale ``selection_noise_log_scale (U,)``
  (``selection_noise_learned``; else ``s = 0``). Shazeer's scale is input-dependent,
  ``softplus(x W_noise)``; ours is per unit. Because the top-k choice has no gradient and the
  noise does not enter the gate values, the task loss gives ``s`` no gradient: ``s`` is
  learned only through the balance loss below, whose selection probabilities take the noisy
  score (with ``balance_loss = 0`` it gets an exact zero gradient). Evaluation mode
  (acting, :meth:`torch.nn.Module.eval`) has no noise, except inside :func:`acting_noise`, where
  an evaluation-mode call draws it too (without counting a call) and hands its draws ``eps`` back;
  inside :func:`replayed_noise` a training call takes given draws instead of drawing. Together
  they let a reinforcement-learning update replay the noise its rollout acted with (the agents'
  rollouts draw it, and the update replays it, so PPO's ratio starts at 1).
* **Loss-free balancing** (``balance_rate``; Wang et al. 2024, arXiv 2408.15664, Algorithm 1): a
  buffer ``selection_bias (U,)`` (in the state dict, so checkpoints and resume keep it) is added
  to the ranking score for the top-k choice only, in training and in evaluation. After every
  call in training mode with gradients recorded, with ``load_i`` the number of (step, sample)
  rows where unit ``i`` was active, ``b_i += balance_rate * sign(mean_j load_j - load_i)``,
  outside the gradient. The update is automatic, so a trainer calls nothing.
* **Switch balance loss** (``balance_loss``; Fedus et al. 2021, "Switch Transformers", eq. 4-6):
  after a call in training mode with gradients recorded, :func:`aux_loss` is
  ``alpha * U * sum_i f_i P_i`` with ``f_i`` the fraction of (step, sample) rows where unit
  ``i`` is active divided by ``k`` (so that ``sum_i f_i = 1``, as Switch's one-expert fractions)
  and ``P_i`` the mean over rows of ``softmax_i`` of the ranking score plus the noise term
  above (not the balancing bias). It is ``alpha`` at equal load and equal probabilities; the
  algorithms (``agents/ppo.py``, ``agents/a2c.py``) add it to their loss.
* **Counted rows.** Inside :func:`counted_rows` the loads and the balance loss of a layer's calls
  count only the (step, sample) rows a ``(L, N)`` weight marks (e.g. not the padding of a batch of
  sequences of different lengths: ``agents.policies.RecurrentPolicy.evaluate_packed``); outside it
  every row counts.
* **Initial state** (``initial_state``, ``initial_state_std``): ``zeros``; ``learned``
  (parameters ``initial_h`` and, with LSTM dynamics, ``initial_c``, each ``(hidden_size,)``,
  starting at zeros); ``random`` (``N(0, initial_state_std^2)`` per element, a fresh draw at
  every reset). Used when a call gets no state (``hx=None``) and, in the agents, at every
  episode start (:class:`agents.cores.RecurrentCore`).

Shapes: ``L`` steps, ``N`` batch, ``U`` units.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from rims.mechanisms.input_attention import Selection
from rims.mechanisms.zero_grad import attach_zero_grad

TRANSIENT = ("_aux_loss", "_counted_rows", "_acting_noise", "_replayed_noise")
"""A layer's attributes that are not state: the last call's balance loss (part of a graph) and what this
module's context managers set inside their blocks; pickling and deep copies leave them out."""


def any_on(options: Any) -> bool:
    """Whether any remedy changes a call of a layer with these options (:class:`rims.options.RIMOptions`): noise,
    the balancing bias, the balance loss or a learned parameter. At the defaults a layer skips the remedies'
    per-call bookkeeping entirely (the acting step is a few microseconds long)."""
    return (
        options.selection_noise > 0
        or options.selection_noise_learned
        or options.balance_rate > 0
        or options.balance_loss > 0
        or options.initial_state == "learned"
    )


def register_remedies(cell: nn.Module, kw: dict[str, Any]) -> None:
    """Register the parameters and buffers of the options that are on (none at the defaults).

    :param kw: ``device`` and ``dtype`` of the layer.
    """
    u, options = cell.num_units, cell.options
    learned = options.initial_state == "learned"
    parameters = {
        "selection_noise_log_scale": u if options.selection_noise_learned else None,
        "initial_h": cell.hidden_size if learned else None,
        "initial_c": cell.hidden_size if learned and cell.dynamics == "lstm" else None,
    }  # every name registered (None when off): rims.mechanisms.layer.LayerParameters has them all
    for name, size in parameters.items():
        cell.register_parameter(name, None if size is None else nn.Parameter(torch.zeros(size, **kw)))
    if options.selection_noise_anneal > 0:
        cell.register_buffer("selection_noise_calls", torch.zeros((), dtype=torch.long, device=kw["device"]))
    if options.balance_rate > 0:
        cell.register_buffer("selection_bias", torch.zeros(u, **kw))


def reset_remedies(cell: nn.Module) -> None:
    """Start the learned noise log-scale and the learned initial state at zero."""
    with torch.no_grad():
        for name in ("selection_noise_log_scale", "initial_h", "initial_c"):
            param = getattr(cell, name, None)
            if param is not None:
                param.zero_()


def remedy_parameters(cell: nn.Module) -> list[Tensor]:
    """The remedies' parameters of ``cell`` (given an exact zero gradient beside their own)."""
    names = ("selection_noise_log_scale", "initial_h", "initial_c")
    return [p for p in (getattr(cell, n, None) for n in names) if p is not None]


def begin_selection(cell: nn.Module, steps: int, batch: int, like: Tensor) -> Selection | None:
    """Draw the noise and build the score offset of one call of ``cell``; ``None`` when no
    remedy changes the call (every remedy off, or ``k == num_units``).

    :param like: a tensor with the input's device and dtype.
    """
    options, u = cell.options, cell.num_units
    if cell.k == u:
        return None
    noise = None
    acting = getattr(cell, "_acting_noise", None)
    if options.selection_noise > 0 and (cell.training or acting is not None):
        scale = options.selection_noise * _anneal(cell, count=cell.training)
        if scale > 0:
            eps = _draws(cell, steps, batch, like)
            if acting is not None:
                acting.append(eps)
            log_scale = getattr(cell, "selection_noise_log_scale", None)
            sigma = like.new_tensor(scale) if log_scale is None else scale * log_scale.exp().view(1, u, 1, 1)
            noise = eps * sigma  # (L, U, N, 1)
    bias = getattr(cell, "selection_bias", None)
    offset = None if noise is None else noise.detach()
    if bias is not None:
        bias = bias.view(1, u, 1, 1).to(like.dtype)
        offset = bias.expand(steps, u, batch, 1).contiguous() if offset is None else offset + bias
    learning = cell.training and torch.is_grad_enabled()
    keep_logits = learning and options.balance_loss > 0
    keep_masks = keep_logits or (learning and options.balance_rate > 0)
    if offset is None and not keep_masks:
        return None
    return Selection(offset, noise, keep_masks, keep_logits)


def _draws(cell: nn.Module, steps: int, batch: int, like: Tensor) -> Tensor:
    """``eps`` ``(L, U, N, 1)``: the draws :func:`replayed_noise` gives a training call, else fresh ``N(0, 1)``.

    :raises ValueError: given draws whose ``(L, N, U)`` is not the call's.
    """
    u = cell.num_units
    given = getattr(cell, "_replayed_noise", None)
    if given is None or not cell.training:
        return torch.randn(steps, u, batch, 1, device=like.device, dtype=like.dtype)
    if tuple(given.shape) != (steps, batch, u):
        expected = (steps, batch, u)
        raise ValueError(f"replayed_noise: draws of shape {tuple(given.shape)} for a call of (L, N, U) = {expected}")
    return given.to(like.dtype).permute(0, 2, 1).unsqueeze(-1).contiguous()  # the fused loops' layout


def _anneal(cell: nn.Module, count: bool = True) -> float:
    """The annealing factor ``max(0, 1 - calls / selection_noise_anneal)``; counts this call if ``count``."""
    calls = getattr(cell, "selection_noise_calls", None)
    if calls is None:
        return 1.0
    factor = max(0.0, 1.0 - int(calls) / cell.options.selection_noise_anneal)
    if count:
        calls.add_(1)
    return factor


def _rim_layers(module: nn.Module) -> list[nn.Module]:
    """The RIM layers in ``module`` (the modules that select units; itself included), in module order."""
    return [m for m in module.modules() if hasattr(m, "_remedies_on")]


@contextmanager
def _on_layers(layers: list[nn.Module], name: str, values: list[Any] | None) -> Iterator[None]:
    """Within the block, ``layers[i]`` holds ``values[i]`` as the attribute ``name`` (nothing set when ``values``
    is ``None``); on leaving, the attribute is removed from every layer, also after an error."""
    if values is not None:
        for layer, value in zip(layers, values, strict=True):
            setattr(layer, name, value)
    try:
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop(name, None)


@contextmanager
def acting_noise(module: nn.Module) -> Iterator[list[Tensor]]:
    """Within the block, the RIM layers in ``module`` with ``selection_noise > 0`` draw their selection noise in
    evaluation mode too (without counting a call for the annealing), and the yielded list receives, per layer
    and call in order, the unscaled draws ``eps`` ``(L, U, N, 1)``."""
    layers = _rim_layers(module)
    draws: list[Tensor] = []
    with _on_layers(layers, "_acting_noise", [draws] * len(layers)):
        yield draws


@contextmanager
def replayed_noise(module: nn.Module, draws: Tensor | None) -> Iterator[None]:
    """Within the block, a training-mode call of the ``i``-th RIM layer in ``module`` takes ``draws[:, :, i]``
    as its ``eps`` instead of drawing (scaled by the current scale, so a learned scale keeps its gradient).

    :param draws: ``(L, N, num_layers, U)``, as :func:`acting_noise` gave them (stacked), or ``None``.
    :raises ValueError: ``draws`` not 4-d with one slice per layer; (at a call) a slice that is not the call's
        ``(L, N, U)``.
    """
    layers = _rim_layers(module)
    if draws is not None and (draws.dim() != 4 or draws.shape[2] != len(layers)):
        raise ValueError(
            f"replayed_noise: draws must be (L, N, num_layers={len(layers)}, U), got shape {tuple(draws.shape)}"
        )
    with _on_layers(layers, "_replayed_noise", None if draws is None else list(draws.unbind(2))):
        yield


def finish_selection(cell: nn.Module, selection: Selection | None) -> None:
    """After a call: update the balancing bias from the loads, compute the balance loss
    (:func:`aux_loss`); both only for a call in training mode with gradients recorded, and over the
    rows :func:`counted_rows` marks (every row outside it)."""
    cell._aux_loss = None
    if selection is None or selection.masks is None:
        return
    masks = selection.masks.to(torch.float32 if selection.logits is None else selection.logits.dtype)
    rows = _row_weights(cell, masks)
    options = cell.options
    bias = getattr(cell, "selection_bias", None)
    if bias is not None:
        load = (masks if rows is None else masks * rows).sum((0, 2, 3))  # (U,) counted active rows per unit
        with torch.no_grad():
            bias.add_(torch.sign(load.mean() - load).to(bias.dtype), alpha=options.balance_rate)
    if selection.logits is not None:
        logits = selection.logits if selection.noise is None else selection.logits + selection.noise
        cell._aux_loss = switch_balance_loss(masks, logits, cell.k, options.balance_loss, rows)


def _row_weights(cell: nn.Module, masks: Tensor) -> Tensor | None:
    """The weights :func:`counted_rows` set on ``cell``, as ``(L, 1, N, 1)`` in ``masks``' dtype, or ``None``.

    :raises ValueError: weights whose ``(L, N)`` is not the call's.
    """
    rows = getattr(cell, "_counted_rows", None)
    if rows is None:
        return None
    expected = (masks.shape[0], masks.shape[2])
    if tuple(rows.shape) != expected:
        raise ValueError(f"counted_rows: weights of shape {tuple(rows.shape)} for a call of (L, N) = {expected}")
    return rows.detach().to(masks.dtype).view(expected[0], 1, expected[1], 1)


@contextmanager
def counted_rows(module: nn.Module, rows: Tensor | None) -> Iterator[None]:
    """Within the block, the loads (``balance_rate``) and the balance loss (``balance_loss``) of the
    calls of every RIM layer in ``module`` count only the rows where ``rows`` is nonzero.

    :param module: a RIM layer or stack (:class:`rims.RIMLSTM`, ...), or any module holding some;
        a module without a RIM layer is left alone.
    :param rows: ``(L, N)`` weights (1.0: counted, 0.0: e.g. padding) for calls of ``L`` steps and
        ``N`` samples, or ``None`` (every row counts).
    :raises ValueError: (at a call) weights whose shape is not the call's ``(L, N)``.
    """
    layers = _rim_layers(module)
    if rows is not None and rows.dim() != 2:
        raise ValueError(f"counted_rows: weights must be (L, N), got shape {tuple(rows.shape)}")
    with _on_layers(layers, "_counted_rows", None if rows is None else [rows] * len(layers)):
        yield


def finish_call(
    cell: nn.Module, selection: Selection | None, result: tuple[Tensor, tuple[Tensor, ...], Any]
) -> tuple[Tensor, tuple[Tensor, ...], Any]:
    """:func:`finish_selection`, then ``result`` (``(output, final states, info)`` of a call) with an
    exact zero gradient attached for the remedies' parameters, which a call may not use (every
    parameter gets a gradient after ``backward()``, as with ``nn.LSTM``)."""
    finish_selection(cell, selection)
    extra = remedy_parameters(cell)
    if not extra:
        return result
    out, finals, info = result
    return attach_zero_grad(out, *extra), finals, info


def switch_balance_loss(masks: Tensor, logits: Tensor, k: int, alpha: float, rows: Tensor | None = None) -> Tensor:
    """``alpha * U * sum_i f_i P_i`` (Fedus et al. 2021, eq. 4-6) for a top-k selection.

    :param masks: ``(L, U, N, 1)`` 1.0 where a unit is active (no gradient).
    :param logits: ``(L, U, N, 1)`` ranking scores; ``P_i`` is the mean of their softmax over units.
    :param k: active units per row: ``f_i`` is the fraction of rows unit ``i`` is active, over ``k``.
    :param rows: ``(L, 1, N, 1)`` weights of the rows in both means (default: every row 1.0).
    :returns: a scalar tensor (differentiable through ``logits``); 0 when no row counts.
    """
    u = masks.shape[1]
    probability = torch.softmax(logits, dim=1)  # (L, U, N, 1)
    masks = masks.detach().to(probability.dtype)
    if rows is None:
        return alpha * u * torch.dot(masks.mean((0, 2, 3)) / k, probability.mean((0, 2, 3)))
    rows = rows.to(probability.dtype)
    total = rows.sum().clamp_min(torch.finfo(rows.dtype).tiny)  # no counted row: f = 0, a zero loss
    fraction = (masks * rows).sum((0, 2, 3)) / (k * total)  # (U,), sums to 1 over the counted rows
    return alpha * u * torch.dot(fraction, (probability * rows).sum((0, 2, 3)) / total)


def aux_loss(cell: nn.Module) -> Tensor | None:
    """The balance loss of ``cell``'s last call in training mode with gradients recorded (a scalar,
    already multiplied by ``balance_loss``), or ``None`` (off, or the last call did not train)."""
    return getattr(cell, "_aux_loss", None)


def initial_states(cell: nn.Module, batch: int, like: Tensor) -> tuple[Tensor, ...]:
    """The layer's initial state for ``batch`` rows: ``(h, c)`` (LSTM) or ``(h,)`` (GRU), each
    ``(N, hidden_size)``, on ``like``'s device and dtype (see ``initial_state``)."""
    n_states = 2 if cell.dynamics == "lstm" else 1
    shape = (batch, cell.hidden_size)
    if cell.options.initial_state == "learned":
        params = (cell.initial_h, cell.initial_c) if n_states == 2 else (cell.initial_h,)
        return tuple(p.to(like.dtype).expand(shape) for p in params)
    if cell.options.initial_state == "random":
        std = cell.options.initial_state_std
        return tuple(torch.randn(shape, device=like.device, dtype=like.dtype) * std for _ in range(n_states))
    zeros = like.new_zeros(shape)
    return (zeros,) * n_states
