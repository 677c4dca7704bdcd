"""Argument checks shared by every public entry point: one wording for one kind of mistake.

Each check returns the value in its canonical type (``int``, ``float``, ``bool``) or raises a
``ValueError`` that names the argument (``what``), the allowed values and the value given.
Booleans are never accepted where a number is asked for (``True`` is not the integer 1 here).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable


def is_integer(value) -> bool:
    """True for Python and numpy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """True for real numbers (integers and floats, numpy's too), False for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _span(low, high) -> str:
    if low is not None and high is not None:
        return f" in {low}..{high}"
    if low is not None:
        return f" >= {low}"
    return "" if high is None else f" <= {high}"


def check_int(value, what: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int if it is an integer in ``low..high`` (either bound may be None).

    Raises:
        ValueError: "<what> must be an integer in <low>..<high>, got <value>" (or ">= <low>").
    """
    if not is_integer(value) or (low is not None and value < low) or (
            high is not None and value > high):
        raise ValueError(f"{what} must be an integer{_span(low, high)}, got {value!r}")
    return int(value)


def check_positive_int(value, what: str) -> int:
    """``value`` as an int if it is an integer >= 1."""
    if not is_integer(value) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def check_number(value, what: str, low: float | None = None, high: float | None = None,
                 *, positive: bool = False) -> float:
    """``value`` as a float if it is a finite real number (> 0 with ``positive``) in
    [low, high] (either bound may be None)."""
    if not is_number(value) or not math.isfinite(float(value)) or (positive and value <= 0):
        kind = "a positive number" if positive else "a finite number"
        raise ValueError(f"{what} must be {kind}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{what} must be in [{low}, {high}], got {value!r}")
    return float(value)


def check_bool(value, what: str) -> bool:
    """``value`` if it is a bool (numpy's too)."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ValueError(f"{what} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value, what: str, allowed: Iterable):
    """``value`` if it is one of ``allowed``."""
    allowed = list(allowed)
    if not isinstance(value, str | int | float | type(None)) or value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
    return value


__all__ = ["check_bool", "check_choice", "check_int", "check_number", "check_positive_int",
           "is_integer", "is_number"]
