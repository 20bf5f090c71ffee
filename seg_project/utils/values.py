"""Type checks of values read from JSON files (metrics, results, submissions): the project's
one notion of "a number", "a finite number" and "an integer"."""

import math

__all__ = ["is_finite_number", "is_int", "is_number"]


def is_number(value) -> bool:
    """Whether ``value`` is an int or a float (numpy floats are floats), not a bool.

    Args:
        value: any value.
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value) -> bool:
    """Whether ``value`` is a number (:func:`is_number`) and finite (no NaN, no infinity).

    Args:
        value: any value.
    """
    # (is_number inlined: the checks run for every value of a 100k-entry submission)
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def is_int(value) -> bool:
    """Whether ``value`` is a JSON integer: a Python int, not a bool (nor a numpy integer,
    which JSON can't write).

    Args:
        value: any value.
    """
    return type(value) is int
