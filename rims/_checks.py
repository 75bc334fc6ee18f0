"""Argument validation shared by the RIM modules.

Every check raises at construction time with a message naming the argument, what was
expected and what was given, so a bad configuration fails before any tensor is built.
"""

from __future__ import annotations

SELECTION_RULES: tuple[str, ...] = ("null_attention", "input_score")
"""Names of the top-k selection rules.

``null_attention`` (default, the paper's rule): the ``k`` units that put the least attention
on the null input are active. ``input_score``: the ``k`` units with the highest raw
attention score on the real input are active.
"""

COMMUNICATION_UPDATES: tuple[str, ...] = ("bounded", "residual")
"""How an active unit adds what it read from the other units to its state.

``bounded`` (default): ``h = tanh(h_tilde + message)``, so ``|h| < 1`` for every step, as in
``nn.LSTM``/``nn.GRU``, and a state carried across windows cannot grow. ``residual`` (the
paper's update, Goyal et al. 2019, eq. in section 2.4): ``h = h_tilde + message``, which adds
to the state without bound.
"""

COMMUNICATIONS: tuple[str, ...] = ("pairwise", "workspace")
"""How the units of a layer exchange information: ``pairwise`` attention among units (RIMs) or
write/broadcast through a shared ``workspace`` (Goyal et al. 2022)."""

DYNAMICS: tuple[str, ...] = ("lstm", "gru")
"""Names of the per-unit recurrent dynamics."""


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an ``int`` >= 1, else raise.

    :param name: argument name used in the error message.
    :param value: the value given by the caller.
    :raises TypeError: if ``value`` is not an ``int`` (``bool`` is rejected too).
    :raises ValueError: if ``value`` < 1.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int (>= 1), got {value}")
    return value


def check_probability(name: str, value: object) -> float:
    """Return ``value`` as a float if it lies in ``[0, 1)``, else raise.

    :param name: argument name used in the error message.
    :param value: the value given by the caller.
    :raises TypeError: if ``value`` is not a real number.
    :raises ValueError: if ``value`` is outside ``[0, 1)``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {value!r} of type {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {value}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return str(value)


def check_rim_sizes(hidden_size: object, num_units: object, k: object) -> tuple[int, int, int]:
    """Validate the RIM width arguments and return them.

    :param hidden_size: total hidden width (``num_units`` x unit size), as in ``nn.LSTM``.
    :param num_units: number of recurrent units.
    :param k: number of units active per step.
    :raises ValueError: if a size is not positive, ``k`` is outside ``[1, num_units]`` or
        ``hidden_size`` is not divisible by ``num_units``.
    """
    hidden_size = check_positive_int("hidden_size", hidden_size)
    num_units = check_positive_int("num_units", num_units)
    k = check_positive_int("k", k)
    if k > num_units:
        raise ValueError(f"k must be in [1, num_units] = [1, {num_units}], got k={k}")
    if hidden_size % num_units != 0:
        raise ValueError(
            f"hidden_size must be divisible by num_units={num_units} (hidden_size is the total width "
            f"of all units), got hidden_size={hidden_size}"
        )
    return hidden_size, num_units, k


def check_write_k(write_k: object, k: int) -> int:
    """Return the number of writers per workspace slot: ``write_k``, or ``max(1, k // 2)`` for ``None``.

    :raises TypeError: not an int or ``None``.
    :raises ValueError: outside ``[1, k]`` (only active units write).
    """
    if write_k is None:
        return max(1, k // 2)
    write_k = check_positive_int("write_k", write_k)
    if write_k > k:
        raise ValueError(f"write_k must be in [1, k] = [1, {k}] (only active units write), got write_k={write_k}")
    return write_k


def check_schemata(num_schemata: object, num_units: int) -> int | None:
    """Return ``num_schemata`` (``None``: per-unit weights) if it is an int in ``[1, num_units]``.

    :raises TypeError: not an int or ``None``.
    :raises ValueError: outside ``[1, num_units]`` (schemata are shared by the units).
    """
    if num_schemata is None:
        return None
    num_schemata = check_positive_int("num_schemata", num_schemata)
    if num_schemata > num_units:
        raise ValueError(
            f"num_schemata must be in [1, num_units] = [1, {num_units}] (units share the schemata), "
            f"got num_schemata={num_schemata}"
        )
    return num_schemata


def check_input_shape(name: str, shape: tuple[int, ...], input_size: int) -> bool:
    """Check a sequence input's shape the way ``nn.LSTM`` does; return whether it is batched.

    :param name: module name for the message.
    :param shape: ``(L, N, H_in)``, ``(N, L, H_in)`` or unbatched ``(L, H_in)``.
    :param input_size: expected ``H_in``.
    :raises ValueError: if the input is not 2-D or 3-D.
    :raises RuntimeError: if the feature size differs from ``input_size``.
    """
    if len(shape) not in (2, 3):
        raise ValueError(f"{name}: Expected input to be 2D or 3D, got {len(shape)}D input")
    if shape[-1] != input_size:
        raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {input_size}, got {shape[-1]}")
    return len(shape) == 3


def check_state_shapes(shapes: list[tuple[int, ...]], expected: tuple[int, ...], batched: bool) -> None:
    """Check recurrent state shapes the way ``nn.LSTM`` / ``nn.GRU`` do.

    :param shapes: shape of each state tensor (``[h]`` or ``[h, c]``).
    :param expected: ``(num_layers, N, hidden_size)``, or ``(num_layers, hidden_size)`` unbatched.
    :param batched: whether the input was batched (3-D).
    :raises RuntimeError: naming the state, the expected and the given shape.
    """
    rank = 3 if batched else 2
    for i, shape in enumerate(shapes):
        if len(shape) != rank:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {kind} input, hx should also be {rank}-D but got hx[{i}] with {len(shape)}-D shape {shape}"
            )
        if tuple(shape) != expected:
            label = "hidden" if len(shapes) == 1 else f"hidden[{i}]"
            raise RuntimeError(f"Expected {label} size {expected}, got {list(shape)}")
