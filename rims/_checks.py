"""Argument checks shared by the RIM modules (the options themselves: :mod:`rims.options`).

Every check raises at construction time with a message naming the argument, what was
expected and what was given, so a bad configuration fails before any tensor is built.
"""

from __future__ import annotations


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


def check_non_negative_float(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite real number >= 0, else raise.

    :raises TypeError: if ``value`` is not a real number; :raises ValueError: if it is negative or not finite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float >= 0, got {value!r} of type {type(value).__name__}")
    if not 0.0 <= float(value) < float("inf"):
        raise ValueError(f"{name} must be a finite float >= 0, got {value}")
    return float(value)


def check_non_negative_int(name: str, value: object) -> int:
    """Return ``value`` if it is an ``int`` >= 0, else raise.

    :raises TypeError: if ``value`` is not an ``int`` (``bool`` is rejected too); :raises ValueError: if < 0.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0, got {value!r} of type {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``, else raise ``TypeError`` (expected vs given)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r} of type {type(value).__name__}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return str(value)


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
