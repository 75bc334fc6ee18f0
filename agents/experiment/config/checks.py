"""Checks shared by the config dataclasses; each error names the key, the expected range and the value."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration that cannot run; the message says which key, expected and given."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(key: str, value: Any, minimum: int = 1) -> None:
    """``value`` is an integer ``>= minimum`` (default 1).

    :raises ConfigError: naming ``key``.
    """
    if not _is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{key} must be {what}, got {value!r}")


def optional_positive_int(key: str, value: Any) -> None:
    """``value`` is ``None`` or a positive integer."""
    if value is not None:
        positive_int(key, value)


def positive_number(key: str, value: Any) -> None:
    """``value`` is a number ``> 0``."""
    if not _is_number(value) or not value > 0:
        raise ConfigError(f"{key} must be a positive number, got {value!r}")


def non_negative_number(key: str, value: Any) -> None:
    """``value`` is a number ``>= 0``."""
    if not _is_number(value) or value < 0:
        raise ConfigError(f"{key} must be a number >= 0, got {value!r}")


def in_range(key: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> None:
    """``value`` is a number in the interval ``low..high`` (open ends as flagged)."""
    ok = _is_number(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{key} must be in {interval}, got {value!r}")


def one_of(key: str, value: Any, options: Iterable[Any]) -> None:
    """``value`` is one of ``options``."""
    options = list(options)
    if value not in options:
        raise ConfigError(f"{key} must be one of {options}, got {value!r}")


def boolean(key: str, value: Any) -> None:
    """``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
