"""How pictures are drawn: one :class:`DrawStyle` carried from the command line (or a caller)
to every picture, and the per-picture decisions made from it (:func:`picture_style`,
:func:`picture_size`).

The options of :class:`DrawStyle` are the drawing options of both drawing tools
(``tools/visualize_data.py``, ``tools/visualize.py``); :func:`seg_project.visualization.jobs.
draw_style` maps their command-line flags onto it, the only place that does.
"""

from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

__all__ = [
    "AUTO_LABEL_LIMIT",
    "CROWDED_ALPHA",
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_SIZE",
    "DrawStyle",
    "RESIZE_MODES",
    "Style",
    "TOOL_STYLE",
    "picture_size",
    "picture_style",
]

# Above this many instances in a picture, per-instance labels give way to outlines and the
# legend's counts (unless labels are asked for).
AUTO_LABEL_LIMIT = 50
# Mask fill opacity with labels: the tissue under a cell stays visible; the outline is solid.
DEFAULT_ALPHA = 0.45
# Mask fill opacity above the label limit: light, so that a crowd leaves the tissue readable.
CROWDED_ALPHA = 0.2
# The long side the tools draw small images up to (pixels); 0: the image's size.
DEFAULT_MIN_SIZE = 1024
# How the image is resized: "nearest" (crisp pixel blocks) or "smooth" (bilinear up, area
# down). Masks are always resized by nearest neighbour.
RESIZE_MODES = ("nearest", "smooth")


@dataclass(frozen=True)
class DrawStyle:
    """How instances are drawn over an image: the options every drawing function takes.

    The defaults draw a picture at the image's size; :data:`TOOL_STYLE` is what the drawing
    tools use without flags (small images drawn up to :data:`DEFAULT_MIN_SIZE` px).

    Attributes:
        labels: a label ("class" or "class 87%") by each instance; None: only with at most
            ``label_limit`` instances (see :func:`picture_style`). Ignored with ``outlines``.
        outlines: outlines only: no fill and no labels.
        label_limit: above this many instances a picture is crowded: outlines with a light
            fill (:data:`CROWDED_ALPHA`) and the legend's counts instead of labels (None: no
            limit).
        boxes: also draw the boxes (dashed).
        alpha: fill opacity of the masks; None: :data:`DEFAULT_ALPHA`, or
            :data:`CROWDED_ALPHA` above ``label_limit``. Ignored (0) with ``outlines``.
        legend: the legend strip under the image (each class's count, the drawn score
            threshold, a cap's note); None: when the picture is at least 160 px on each side.
        min_size: draw smaller images larger, to this long side in pixels (0: the image's
            size).
        max_size: draw larger images smaller, to this long side (None: never); it wins over
            ``min_size``.
        resize: how the image is resized, ``"nearest"`` or ``"smooth"`` (masks: always
            nearest).
        max_instances: draw at most this many instances per picture (predictions: the
            highest scores; ground truth: the first ones); None: all. The legend says when
            some were left out.

    Raises:
        ValueError: an option out of its range (checked when the style is made).
    """

    labels: Optional[bool] = None
    outlines: bool = False
    label_limit: Optional[int] = AUTO_LABEL_LIMIT
    boxes: bool = False
    alpha: Optional[float] = None
    legend: Optional[bool] = None
    min_size: int = 0
    max_size: Optional[int] = None
    resize: str = "nearest"
    max_instances: Optional[int] = None

    def __post_init__(self):
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.label_limit is not None and self.label_limit < 0:
            raise ValueError(f"label_limit must be at least 0 (or None: no limit), got "
                             f"{self.label_limit}")
        if self.min_size is None or self.min_size < 0:
            raise ValueError(f"min_size must be at least 0 (0: as is), got {self.min_size}")
        if self.max_size is not None and self.max_size < 1:
            raise ValueError(f"max_size must be at least 1 (or None: no limit), got "
                             f"{self.max_size}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.max_instances is not None and self.max_instances < 0:
            raise ValueError(f"max_instances must be at least 0 (or None: all), got "
                             f"{self.max_instances}")


# What the drawing tools draw with when given no flags.
TOOL_STYLE = DrawStyle(min_size=DEFAULT_MIN_SIZE)


class Style(NamedTuple):
    """How one picture's instances are drawn, decided from its :class:`DrawStyle` and its
    number of instances (see :func:`picture_style`).

    Attributes:
        labels: a label ("class" or "class 87%") by each instance.
        alpha: opacity of the mask fill (0: outlines only).
        crowded: there are more instances than the label limit.
    """

    labels: bool
    alpha: float
    crowded: bool


def picture_style(
    count: int,
    *,
    labels: Optional[bool] = None,
    outlines: bool = False,
    label_limit: Optional[int] = AUTO_LABEL_LIMIT,
    alpha: Optional[float] = None,
) -> Style:
    """Decide how a picture of ``count`` instances is drawn.

    Args:
        count: the number of instances drawn.
        labels: label each instance; None: only when ``count`` is at most ``label_limit``.
            Ignored (no labels) with ``outlines``.
        outlines: outlines only: no fill and no labels.
        label_limit: above this many instances the picture is crowded: no labels unless asked
            for, and a lighter fill; None: never crowded.
        alpha: fill opacity; None: :data:`DEFAULT_ALPHA`, or :data:`CROWDED_ALPHA` when
            crowded. Ignored (0) with ``outlines``.

    Returns:
        Style: the labels, the fill opacity and whether the picture is crowded.

    Raises:
        ValueError: ``alpha`` outside 0..1 or a negative ``label_limit``.
    """
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if label_limit is not None and label_limit < 0:
        raise ValueError(f"label_limit must be at least 0 (or None: no limit), got {label_limit}")
    crowded = label_limit is not None and count > label_limit
    if outlines:
        return Style(labels=False, alpha=0.0, crowded=crowded)
    if labels is None:
        labels = not crowded
    if alpha is None:
        alpha = CROWDED_ALPHA if crowded else DEFAULT_ALPHA
    return Style(labels=bool(labels), alpha=float(alpha), crowded=crowded)


def picture_size(
    height: int, width: int, min_size: int = 0, max_size: Optional[int] = None
) -> Tuple[int, int]:
    """The size of the picture of an image: scaled, keeping its aspect, so that its long side
    is at least ``min_size`` and at most ``max_size``.

    Args:
        height: the image's height.
        width: the image's width.
        min_size: smaller images are drawn larger, up to this long side (0: never).
        max_size: larger images (and enlarged ones) are drawn smaller, down to this long side
            (None: never); it wins over ``min_size``.

    Returns:
        tuple: ``(height, width)`` of the picture; the image's own when no scaling is needed.

    Raises:
        ValueError: a negative ``min_size`` or a ``max_size`` under 1.
    """
    if min_size is None or min_size < 0:
        raise ValueError(f"min_size must be at least 0 (0: as is), got {min_size}")
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be at least 1 (or None: no limit), got {max_size}")
    long_side = max(height, width)
    target = max(long_side, min_size)
    if max_size is not None:
        target = min(target, max_size)
    if target == long_side or long_side == 0:
        return height, width
    scale = target / long_side
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))
