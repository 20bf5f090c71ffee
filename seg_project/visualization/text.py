"""The text of pictures: the legend strip under the image, panel titles, instance labels.

- The legend is a strip of its own under the image (:func:`legend_strip`), so it never
  covers a cell: a grid of the classes (a swatch of the class color, ``"name: count"``) and a
  last row with what was drawn (``"score >= 0.5"``, ``"top 300 of 675 shown"``), right-aligned
  so that a panel title (:func:`put_title`) fits at its left; on narrow pictures (under about
  300 px) what was drawn gets a row of its own above the title's. Its height depends only on
  the picture's width and the class names (:func:`legend_height`), so two pictures of one
  image (ground truth and predictions) get strips of one height.
- Panel titles are white with a dark outline; the outline is the text's own strokes widened
  (a dilation of the rendered text), so it lines up with the text at every size.
- Both are drawn with OpenCV's Hershey font (ASCII), blended with its anti-aliasing.
- Instance labels ("class 87%") are the one piece still drawn through Detectron2's
  ``Visualizer`` (:func:`draw_labels`), for its placement and boxed text.
"""

import math
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "STRIP_BACKGROUND",
    "draw_labels",
    "legend_height",
    "legend_strip",
    "put_text",
    "put_title",
    "text_scale",
]

FONT = cv2.FONT_HERSHEY_SIMPLEX
# The legend strip's background and its text color (RGB).
STRIP_BACKGROUND = (28, 28, 28)
_NOTE_COLOR = (235, 235, 235)
_TITLE_COLOR = (255, 255, 255)
_OUTLINE_COLOR = (0, 0, 0)
# The widest count a legend column leaves room for.
_COUNT_ROOM = "000000"
# The default panel titles of side-by-side pictures: the legend's last row leaves their room.
_TITLE_ROOM = "ground truth"
# A long "what was drawn" line: when it does not fit beside a title, it gets its own row.
_INFO_ROOM = "score >= 0.55; top 300 of 2283 shown"


def text_scale(width: int) -> float:
    """The font scale of the legend and titles of a picture (panel) ``width`` px wide:
    about 15 px letters at 1,024 px, never under 0.45 (legible) nor over 1.2."""
    return float(np.clip(width / 1400.0, 0.45, 1.2))


def _thickness(scale: float) -> int:
    return max(1, int(round(scale * 1.6)))


def _text_box(text: str, scale: float, thickness: int) -> Tuple[int, int, int]:
    """``(width, height above the baseline, depth below it)`` of a text in pixels."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    return width, height, baseline


def _row_height(scale: float) -> int:
    _, height, depth = _text_box("Ag", scale, _thickness(scale))
    return int(math.ceil((height + depth) * 1.5))


def _coverage(text: str, scale: float, thickness: int, pad: int) -> Tuple[np.ndarray, int]:
    """The text rendered as coverage (0..1, anti-aliased) with ``pad`` blank pixels on each
    side; also the row of its baseline in the returned array."""
    width, height, depth = _text_box(text, scale, thickness)
    margin = pad + thickness
    mask = np.zeros((height + depth + 2 * margin, width + 2 * margin), np.uint8)
    baseline = margin + height
    cv2.putText(mask, text, (margin, baseline), FONT, scale, 255, thickness, cv2.LINE_AA)
    return mask.astype(np.float32) / 255.0, baseline


def _blend(canvas: np.ndarray, coverage: np.ndarray, color, x: int, y: int) -> None:
    """Blend ``color`` into ``canvas`` with opacity ``coverage`` placed at column ``x``, row
    ``y`` (its top-left corner), clipped to the canvas; in place."""
    height, width = canvas.shape[:2]
    h, w = coverage.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        return
    alpha = coverage[y0 - y:y1 - y, x0 - x:x1 - x, None]
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    color = np.asarray(color, np.float32)
    canvas[y0:y1, x0:x1] = (region * (1.0 - alpha) + color * alpha + 0.5).astype(np.uint8)


def put_text(canvas: np.ndarray, text: str, x: int, baseline: int, scale: float, color,
             outline: int = 0, outline_color=_OUTLINE_COLOR) -> int:
    """Write ``text`` with its baseline's left end at ``(x, baseline)``, in place.

    Args:
        canvas: ``HxWx3 uint8`` picture.
        text: ASCII text.
        x: the column where the text starts.
        baseline: the row of its baseline.
        scale: the font scale (:func:`text_scale`).
        color: RGB of the strokes.
        outline: a halo this many pixels wide around the strokes (0: none): the strokes
            themselves dilated, drawn first, so it lines up with the text.
        outline_color: RGB of the halo.

    Returns:
        int: the text's width in pixels.
    """
    thickness = _thickness(scale)
    coverage, row = _coverage(text, scale, thickness, outline)
    margin = outline + thickness
    left, top = x - margin, baseline - row
    if outline:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * outline + 1,) * 2)
        _blend(canvas, cv2.dilate(coverage, kernel), outline_color, left, top)
    _blend(canvas, coverage, color, left, top)
    return _text_box(text, scale, thickness)[0]


def put_title(picture: np.ndarray, text: str, x: int, panel_width: int) -> None:
    """A panel's title at its bottom-left corner, in place: white with a dark outline, in
    the row where a legend strip (:func:`legend_strip`) leaves room for it.

    Args:
        picture: the whole picture.
        text: the title (ASCII).
        x: the panel's first column.
        panel_width: the panel's width (sets the size, as for the legend).
    """
    scale = text_scale(panel_width)
    row = _row_height(scale)
    _, height, depth = _text_box(text, scale, _thickness(scale))
    baseline = picture.shape[0] - (row - height - depth) // 2 - depth
    put_text(picture, text, x + _margin(scale), baseline, scale, _TITLE_COLOR,
             outline=max(1, _thickness(scale)))


def _margin(scale: float) -> int:
    return max(4, int(round(10 * scale)))


def _layout(width: int, class_names: Sequence[str]) -> Tuple[float, int, int, int, int]:
    """``(scale, row height, column width, columns, rows)`` of a legend ``width`` px wide:
    the class grid's rows, then one row for what was drawn and the title, or two on a
    picture too narrow for both in one."""
    scale = text_scale(width)
    thickness = _thickness(scale)
    row = _row_height(scale)
    margin = _margin(scale)
    widest = max((_text_box(f"{name}: {_COUNT_ROOM}", scale, thickness)[0]
                  for name in class_names), default=0)
    column = row + widest + 2 * margin  # swatch, text, gap
    columns = max(1, (width - margin) // column)
    beside = (width - 4 * margin - _text_box(_TITLE_ROOM, scale, thickness)[0]
              >= _text_box(_INFO_ROOM, scale, thickness)[0])
    rows = math.ceil(len(class_names) / columns) + (1 if beside else 2)
    return scale, row, column, columns, rows


def legend_height(width: int, class_names: Sequence[str]) -> int:
    """The height of the legend strip of a picture ``width`` px wide: one row per line of
    the class grid, then the row of what was drawn.

    Args:
        width: the picture's width.
        class_names: the classes (their names set the grid's column width).

    Returns:
        int: pixels.
    """
    _, row, _, _, rows = _layout(width, class_names)
    return rows * row


def legend_strip(width: int, class_names: Sequence[str], lines: Sequence[str], colors,
                 info: str = "") -> np.ndarray:
    """The legend strip of a picture: the classes' lines in a grid, then ``info``.

    Args:
        width: the picture's width.
        class_names: the K classes.
        lines: the K legend lines (``"name: count"``), then any notes (e.g. a cap's
            ``"top 300 of 675 shown"``), which join ``info``.
        colors: K class colors (RGB 0..255).
        info: what was drawn, e.g. ``"score >= 0.5"``.

    Returns:
        np.ndarray: ``(legend_height(width, class_names), width, 3)`` ``uint8`` RGB.
    """
    scale, row, column, columns, rows = _layout(width, class_names)
    strip = np.empty((rows * row, width, 3), np.uint8)
    strip[:] = STRIP_BACKGROUND
    margin = _margin(scale)
    swatch = max(6, row // 2)
    _, height, depth = _text_box("Ag", scale, _thickness(scale))
    lift = (row - height - depth) // 2 + depth  # from a row's bottom to its baseline
    k = len(class_names)
    for index, line in enumerate(lines[:k]):
        top = (index // columns) * row
        left = margin + (index % columns) * column
        color = tuple(int(c) for c in colors[index])
        y0 = top + (row - swatch) // 2
        strip[y0:y0 + swatch, left:left + swatch] = color
        put_text(strip, line, left + swatch + margin // 2, top + row - lift, scale, _NOTE_COLOR)
    text = "; ".join([t for t in (info, *lines[k:]) if t])
    if text:
        beside = rows == math.ceil(k / columns) + 1
        room = width - 2 * margin
        if beside:
            room -= _text_box(_TITLE_ROOM, scale, _thickness(scale))[0] + 2 * margin
        info_scale = scale
        text_width = _text_box(text, scale, _thickness(scale))[0]
        while text_width > room > 0:  # a long note: smaller letters (widths are not linear)
            info_scale *= 0.97 * room / text_width
            text_width = _text_box(text, info_scale, _thickness(info_scale))[0]
        put_text(strip, text, width - margin - text_width,
                 strip.shape[0] - lift - (0 if beside else row), info_scale, _NOTE_COLOR)
    return strip


def _label_font(height: int, width: int) -> float:
    """Detectron2's default label size for a picture (points), as ``Visualizer`` computes
    it, made a little smaller."""
    return max(0.6 * max(np.sqrt(height * width) // 90, 10), 8)


def draw_labels(canvas: np.ndarray, labels: Sequence[Tuple[str, Optional[Tuple], tuple]],
                metadata) -> np.ndarray:
    """Instance labels drawn over the picture with Detectron2's ``Visualizer``: each below
    its instance (beside it at the picture's bottom edge).

    Args:
        canvas: the picture.
        labels: ``(text, extent, color)`` per label: the instance's ``(x0, y0, x1, y1)`` in
            the picture (None: no label) and its RGB color (0..1).
        metadata: the classes' names and colors.

    Returns:
        np.ndarray: the picture with the labels (a new array).
    """
    from detectron2.utils.visualizer import ColorMode, Visualizer

    height, width = canvas.shape[:2]
    visualizer = Visualizer(canvas, metadata, instance_mode=ColorMode.SEGMENTATION)
    font = _label_font(height, width)
    for text, extent, color in labels:
        if extent is None:
            continue
        x0, y0, x1, y1 = extent
        position = (x1, y0) if y1 >= height - 5 else (x0, y1)
        visualizer.draw_text(text, position, color=color, horizontal_alignment="left",
                             font_size=font)
    picture = visualizer.get_output().get_image()
    if picture.shape[:2] != (height, width):  # matplotlib rounding; never seen, but cheap
        picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_NEAREST)
    return picture
