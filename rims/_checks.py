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
