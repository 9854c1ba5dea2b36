"""Argument checks shared by every public function: one message style, naming the argument.

Each check returns the value converted to a plain Python ``int``/``float`` and raises
``ValueError`` (wrong value) or ``TypeError`` (wrong kind of value) with a one-line message
that starts with the argument's name, so a user sees at once which argument to fix:

>>> positive_int("batch", 16)
16
>>> positive_int("batch", 0)
Traceback (most recent call last):
ValueError: batch must be a positive int, got 0

``bool`` is never accepted as a number (``True`` would otherwise pass as 1), and strings are
never parsed (``"3"`` is not 3).
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "ArgumentTypeError",
    "integer",
    "is_int",
    "is_real",
    "nonnegative_real",
    "positive_int",
    "positive_real",
    "probability",
    "real",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong kind (e.g. a string where a number belongs).

    A ``TypeError`` that is also a ``ValueError``, so ``except ValueError`` written for the
    value checks catches it too.
    """


def is_int(value) -> bool:
    """An integer that is not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number that is not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(name: str, value, minimum: int | None = None, hint: str = "") -> int:
    """``value`` as an ``int`` ≥ ``minimum`` (when given); ``ValueError`` naming ``name``.

    Parameters
    ----------
    name : str
        The argument's name, as the user wrote it (it starts the message).
    value : object
        What the user passed.
    minimum : int or None
        Smallest allowed value.
    hint : str
        Appended to the message (e.g. what to do instead).
    """
    if not is_int(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be an int{bound}{hint}, got {value!r}")
    return int(value)


def positive_int(name: str, value, hint: str = "") -> int:
    """``value`` as an ``int`` ≥ 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int{hint}, got {value!r}")
    return int(value)


def real(name: str, value, *, finite: bool = True) -> float:
    """``value`` as a ``float`` (finite unless ``finite=False``); ``TypeError`` for non-numbers."""
    if not is_real(value):
        raise ArgumentTypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if finite and not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def nonnegative_real(name: str, value) -> float:
    """``value`` as a finite ``float`` ≥ 0."""
    value = real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def positive_real(name: str, value) -> float:
    """``value`` as a finite ``float`` > 0."""
    value = real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def probability(name: str, value, *, open_interval: bool = True) -> float:
    """``value`` as a ``float`` in (0, 1) (or [0, 1] with ``open_interval=False``)."""
    value = real(name, value)
    ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not ok:
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value
