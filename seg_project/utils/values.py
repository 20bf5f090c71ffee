"""Values read from JSON and YAML files (metrics, results, submissions, a run's config): the
project's one notion of "a number", "a finite number" and "an integer", and the value at a
dotted config key."""

import math

__all__ = ["config_value", "is_finite_number", "is_int", "is_number"]


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


def config_value(config, key: str):
    """The value at a dotted key (``"TEST.PATHOLOGY.SCORE_THRESHOLD"``) of a config: a plain
    dict (a run's ``config.yaml`` as read) or a Detectron2 ``CfgNode`` (a dict too).

    Args:
        config: the config.
        key: the dotted key.

    Returns:
        the value, or None when any part of the key is absent.
    """
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
