"""A dataset's intensity rule: how 16-bit and float images become ``uint8``, one way for all.

``uint8`` images are used as stored. Wider data follows fixed mappings where they suffice
(integers within 0..255 are cast, floats within 0..1 scaled by 255, floats within 0..255
cast); a dataset whose images hold other values (12- or 16-bit microscopy, negative values,
floats beyond 255) gets an :class:`IntensityRule`: the 0.1st..99.9th percentile range of its
training images' values (a fixed sample of each, all channels pooled so colors keep their
balance), stretched linearly to 0..255 and clipped. The rule is computed once, from the
training images, by :func:`seg_project.data.stats.compute_intensity_rule` (a dataset
statistic); it then maps *every* non-``uint8`` image of the dataset, training and test alike.
It is stored with the run (``INPUT.INTENSITY_RANGE`` in ``config.yaml`` and
``intensity_rule.json`` beside the weights) and :func:`resolve_intensity_rule` finds it again
for prediction.
"""

import json
import math
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from ..utils.errors import DatasetError
from ..utils.run_files import INTENSITY_RULE_FILE

__all__ = [
    "INTENSITY_PERCENTILES",
    "IntensityRule",
    "finite_float32",
    "fixed_mapping",
    "read_intensity_rule_file",
    "resolve_intensity_rule",
    "rule_of_values",
    "write_intensity_rule_file",
]

# The percentiles of a dataset's values that an IntensityRule stretches to 0..255.
INTENSITY_PERCENTILES = (0.1, 99.9)


class IntensityRule(NamedTuple):
    """One linear map of a dataset's wide (non-``uint8``) values to ``uint8``.

    ``low`` becomes 0 and ``high`` 255, values in between are scaled linearly and rounded,
    values outside are clipped; NaN and infinities count as 0. The same rule maps every image
    of a dataset, so a stored value gets the same color in all of them.

    Attributes:
        low: the value that becomes 0.
        high: the value that becomes 255 (greater than ``low``).
    """

    low: float
    high: float

    @classmethod
    def checked(cls, low, high) -> "IntensityRule":
        """A rule from two numbers, checking that they are finite and ``low < high``.

        Raises:
            ValueError: otherwise.
        """
        try:
            low, high = float(low), float(high)
        except (TypeError, ValueError) as e:
            raise ValueError(f"intensity rule needs two numbers, got {low!r}, {high!r}") from e
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"intensity rule needs finite low < high, got {low}, {high}")
        return cls(low, high)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Map an array of any numeric dtype to ``uint8`` (same shape)."""
        data = finite_float32(array)
        low, span = np.float32(self.low), np.float32(self.high - self.low)
        return np.round(np.clip((data - low) / span, 0, 1) * 255).astype(np.uint8)

    def to_dict(self) -> Dict[str, float]:
        """``{"low": ..., "high": ...}`` (JSON-ready; :meth:`from_dict` reads it back)."""
        return {"low": float(self.low), "high": float(self.high)}

    @classmethod
    def from_dict(cls, data: Dict) -> "IntensityRule":
        """The rule of :meth:`to_dict`'s output.

        Raises:
            ValueError: missing keys or values that make no rule.
        """
        if not isinstance(data, dict) or not {"low", "high"} <= set(data):
            raise ValueError(f"intensity rule must be a dict with low and high, got {data!r}")
        return cls.checked(data["low"], data["high"])

    def to_config(self) -> List[float]:
        """``[low, high]``, the value of the config key ``INPUT.INTENSITY_RANGE``."""
        return [float(self.low), float(self.high)]

    @classmethod
    def from_config(cls, value: Optional[Sequence]) -> Optional["IntensityRule"]:
        """The rule of an ``INPUT.INTENSITY_RANGE`` value; None for an empty one (no rule).

        Raises:
            ValueError: a value that is neither empty nor two numbers ``low < high``.
        """
        if value is None or len(value) == 0:
            return None
        if len(value) != 2:
            raise ValueError(f"INPUT.INTENSITY_RANGE must be empty or [low, high], got {value!r}")
        return cls.checked(*value)


def finite_float32(array: np.ndarray) -> np.ndarray:
    data = array.astype(np.float32)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return data


def fixed_mapping(array: np.ndarray) -> Optional[np.ndarray]:
    """The dataset-independent ``uint8`` form of a wide array, or None when its values need
    an :class:`IntensityRule` (integers beyond 0..255, floats beyond 0..255 or negative)."""
    data = finite_float32(array)
    if data.size == 0:
        return data.astype(np.uint8)
    lo, hi = float(data.min()), float(data.max())
    if lo >= 0 and hi <= 255 and (np.issubdtype(array.dtype, np.integer) or hi > 1):
        return data.astype(np.uint8)
    if lo >= 0 and hi <= 1 and np.issubdtype(array.dtype, np.floating):
        return np.round(data * 255).astype(np.uint8)
    return None


def rule_of_values(values: np.ndarray) -> IntensityRule:
    low, high = (float(v) for v in np.percentile(values, INTENSITY_PERCENTILES))
    return IntensityRule(low, high if high > low else low + 1.0)


def _rule_file(weights_or_dir) -> Optional[Path]:
    text = str(weights_or_dir)
    if not text or "://" in text:
        return None  # a model-zoo or web URL: no run folder
    path = Path(text)
    return (path if path.is_dir() else path.parent) / INTENSITY_RULE_FILE


def write_intensity_rule_file(output_dir, rule: Optional[IntensityRule]) -> Path:
    """Write ``intensity_rule.json`` (``{"intensity_rule": null | {"low", "high"}}``) into a
    run's output folder, beside its checkpoints; returns its path."""
    from ..utils.atomic_files import write_text

    data = {"intensity_rule": rule.to_dict() if rule is not None else None}
    return write_text(Path(output_dir) / INTENSITY_RULE_FILE, json.dumps(data, indent=2) + "\n")


def read_intensity_rule_file(weights_or_dir) -> Optional[IntensityRule]:
    """The rule stored beside a weights file (or in a run folder); None when there is no
    ``intensity_rule.json`` or it holds ``null``.

    Raises:
        DatasetError: the file exists but is not a valid rule.
    """
    path = _rule_file(weights_or_dir)
    if path is None or not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))["intensity_rule"]
        return None if stored is None else IntensityRule.from_dict(stored)
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(path, f"not a valid intensity rule file: {e}") from e


def resolve_intensity_rule(cfg, weights=None) -> Optional[IntensityRule]:
    """The rule a model's inputs must be read with: ``cfg.INPUT.INTENSITY_RANGE`` when set,
    else the ``intensity_rule.json`` beside ``weights`` (default ``cfg.MODEL.WEIGHTS``),
    else None.

    Raises:
        ValueError: an invalid ``INPUT.INTENSITY_RANGE``.
        DatasetError: an invalid ``intensity_rule.json``.
    """
    rule = IntensityRule.from_config(cfg.INPUT.get("INTENSITY_RANGE", ()))
    if rule is not None:
        return rule
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    return read_intensity_rule_file(weights) if weights else None


