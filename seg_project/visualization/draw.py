"""Pictures of instances over their image, readable at any size and any crowd.

Size: a picture may be drawn larger or smaller than its image (``min_size`` / ``max_size``, on
the long side; :func:`picture_size`). The image is resized by nearest neighbour (every image
pixel a crisp block) or smoothly (``resize="smooth"``); masks always by nearest neighbour, with
the image's own pixel mapping, so a mask covers exactly the blocks of its image pixels; boxes
are scaled. The tools draw small images up to 1,024 px (``DEFAULT_MIN_SIZE``); these functions
draw at the image's size unless asked.

Crowds: instances are drawn in their class's color (``metadata.thing_colors``), each a little
lighter or darker than its neighbours so touching cells stay apart: a fill of ``alpha`` and a
thin solid outline inside the mask. With few instances each gets a label ("class" or "class
87%"); above ``label_limit`` (:data:`AUTO_LABEL_LIMIT`) the labels give way to outlines with a
light fill (:data:`CROWDED_ALPHA`) and the legend's counts; ``outlines=True`` draws outlines
only (no fill, no labels). :func:`picture_style` makes that choice. The legend (top-left)
names the classes with how many instances of each were drawn, and says when a cap left
instances out (:func:`legend_lines`).

Speed: masks are decoded within their crops (:mod:`.instances`) and painted into one map
of which instance each pixel shows, which is resized once; fills and outlines (OpenCV
erosion/dilation of that map) are composited with NumPy: under 0.1 s for 2,283 nuclei on a
1,024 px picture, where drawing them as matplotlib polygons (Detectron2's ``Visualizer``)
takes about 30 s. Only text (labels, legend) goes through the ``Visualizer``, and only when
there is text to draw (about 0.15 s for a legend). Overlapping masks: the later (smaller)
one shows.
"""

import colorsys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from .instances import Shape, ground_truth_shapes, prediction_shapes

__all__ = [
    "AUTO_LABEL_LIMIT",
    "CROWDED_ALPHA",
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_SIZE",
    "PictureInfo",
    "RESIZE_MODES",
    "Style",
    "draw_ground_truth",
    "draw_predictions",
    "legend_lines",
    "picture_size",
    "picture_style",
    "side_by_side",
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
# The legend and titles are left out of pictures smaller than this (in pixels, either side).
_MIN_SIDE_FOR_TEXT = 160
_SEPARATOR_COLOR = (255, 255, 255)
_KERNEL = np.ones((3, 3), np.uint8)


class Style(NamedTuple):
    """How a picture's instances are drawn (see :func:`picture_style`).

    Attributes:
        labels: a label ("class" or "class 87%") by each instance.
        alpha: opacity of the mask fill (0: outlines only).
        crowded: there are more instances than the label limit.
    """

    labels: bool
    alpha: float
    crowded: bool


class PictureInfo(NamedTuple):
    """What a picture shows (``return_info=True`` of :func:`draw_ground_truth` and
    :func:`draw_predictions`).

    Attributes:
        height: the picture's height in pixels.
        width: the picture's width in pixels.
        style: how the instances were drawn.
        shown: how many instances were drawn.
        total: how many there were (more than ``shown`` when a cap left some out).
        legend: the legend's lines ("epithelial: 412", ..., a cap's note); empty when no
            legend was drawn.
    """

    height: int
    width: int
    style: Style
    shown: int
    total: int
    legend: List[str]


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


def legend_lines(class_indices: Sequence[int], class_names: Sequence[str],
                 note: str = "") -> List[str]:
    """The legend's text: one ``"name: count"`` line per class, then ``note`` if any.

    Args:
        class_indices: the contiguous class of each instance drawn.
        class_names: the names of classes 0..K-1.
        note: a last line, e.g. ``"top 300 of 675 shown"`` when a cap left instances out.

    Returns:
        list[str]: the lines, top to bottom.
    """
    counts = np.bincount(np.asarray(class_indices, dtype=np.int64),
                         minlength=len(class_names))
    lines = [f"{name}: {count}" for name, count in zip(class_names, counts)]
    return lines + [note] if note else lines


# ---------------------------------------------------------------- scaling


def _index_map(size_in: int, size_out: int) -> np.ndarray:
    """For each picture row (or column), the image row (column) whose pixel covers its
    center: nearest-neighbour resizing, the same for the image and the masks."""
    if size_in == size_out:
        return np.arange(size_in)
    centers = (np.arange(size_out) + 0.5) * (size_in / size_out)
    return np.minimum(centers.astype(np.int64), size_in - 1)


def _resize_image(image: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                  resize: str) -> np.ndarray:
    height, width = image.shape[:2]
    out_height, out_width = len(rows), len(cols)
    if (out_height, out_width) == (height, width):
        return image.copy()
    if resize == "nearest" and out_height * out_width >= height * width:
        return image[rows[:, None], cols[None, :]]
    # Smooth, or a smaller picture (picking pixels would alias): bilinear up, area down.
    smaller = out_height * out_width < height * width
    return cv2.resize(image, (out_width, out_height),
                      interpolation=cv2.INTER_AREA if smaller else cv2.INTER_LINEAR)


def _span(index_map: np.ndarray, start: int, stop: int) -> Tuple[int, int]:
    """The picture rows (columns) ``[a, b)`` that show image rows ``[start, stop)``; at least
    one (a label's place, even for an instance that a reduced picture drops)."""
    a, b = np.searchsorted(index_map, [start, stop], side="left")
    if b <= a:
        a = min(int(a), len(index_map) - 1)
        b = a + 1
    return int(a), int(b)


def _picture_extent(shape: Shape, rows: np.ndarray, cols: np.ndarray, sy: float,
                    sx: float) -> Optional[Tuple[float, float, float, float]]:
    """Where a shape lies in the picture, ``(x0, y0, x1, y1)``: its mask's crop, else its box
    (None: neither)."""
    if shape.crop is not None:
        h, w = shape.crop.shape
        r0, r1 = _span(rows, shape.y0, shape.y0 + h)
        c0, c1 = _span(cols, shape.x0, shape.x0 + w)
        return c0, r0, c1, r1
    return _picture_box(shape, sy, sx)


def _picture_box(shape: Shape, sy: float, sx: float) -> Optional[Tuple[float, ...]]:
    """A shape's box in picture coordinates (None: it has none)."""
    if shape.box is None:
        return None
    x0, y0, x1, y1 = shape.box
    return x0 * sx, y0 * sy, x1 * sx, y1 * sy


# ---------------------------------------------------------------- masks and boxes


def _instance_colors(shapes: Sequence[Shape], thing_colors) -> List[Tuple[float, ...]]:
    """Each instance's class color (RGB in 0..1), made a little lighter or darker
    (deterministically) so touching instances of one class can be told apart."""
    rng = np.random.default_rng(0)
    factors = rng.uniform(-0.15, 0.15, size=len(shapes))
    colors = []
    for shape, factor in zip(shapes, factors):
        r, g, b = (c / 255.0 for c in thing_colors[shape.class_index])
        hue, lightness, saturation = colorsys.rgb_to_hls(r, g, b)
        lightness = min(max(lightness * (1 + factor), 0.0), 1.0)
        colors.append(colorsys.hls_to_rgb(hue, lightness, saturation))
    return colors


def _line_width(height: int, width: int) -> int:
    """Outline (and box) width in picture pixels: 1 up to ~1,500 px, then wider."""
    return max(1, int(round(max(height, width) / 1000)))


def _label_map(shapes: Sequence[Shape], order: Sequence[int], height: int, width: int,
               rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Which instance each picture pixel shows: ``i + 1`` for ``shapes[i]``, 0 for none.

    The masks are painted in ``order`` (later ones on top) at the image's size, then the map
    is resized by nearest neighbour with the image's pixel mapping (``rows``, ``cols``), so a
    mask covers exactly the picture blocks of its image pixels.

    Returns:
        np.ndarray: ``float32`` map of the picture's size (float: OpenCV's morphology takes
        no int32).
    """
    labels = np.zeros((height, width), np.float32)
    for index in order:
        shape = shapes[index]
        if shape.crop is None:
            continue
        h, w = shape.crop.shape
        region = labels[shape.y0:shape.y0 + h, shape.x0:shape.x0 + w]
        region[shape.crop[:region.shape[0], :region.shape[1]]] = index + 1
    if (len(rows), len(cols)) != (height, width):
        labels = labels[rows[:, None], cols[None, :]]
    return labels


def _composite_masks(canvas: np.ndarray, labels: np.ndarray, colors, alpha: float,
                     line_width: int) -> None:
    """Fill each instance's pixels with its color at ``alpha`` and outline it (``line_width``
    pixels inside its edge, also where it touches another instance), in place.

    Args:
        canvas: ``HxWx3 uint8`` picture.
        labels: :func:`_label_map` of the picture's size.
        colors: RGB (0..1) of instance ``i`` (label ``i + 1``).
        alpha: fill opacity (0: outlines only).
        line_width: outline width in pixels.
    """
    if not len(colors):
        return
    lut = np.zeros((len(colors) + 1, 3), np.float32)
    lut[1:] = np.asarray(colors, np.float32) * 255.0
    ids = labels.astype(np.int64)
    inside = ids > 0
    if alpha > 0:
        pixels = canvas[inside].astype(np.float32)
        canvas[inside] = (pixels * (1.0 - alpha) + lut[ids[inside]] * alpha + 0.5).astype(
            np.uint8)
    border = dict(iterations=line_width, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    edge = inside & ((cv2.erode(labels, _KERNEL, **border) != labels)
                     | (cv2.dilate(labels, _KERNEL, **border) != labels))
    canvas[edge] = (lut[ids[edge]] + 0.5).astype(np.uint8)


def _dashes(length: int, dash: int, gap: int) -> np.ndarray:
    return (np.arange(length) % (dash + gap)) < dash


def _composite_boxes(canvas: np.ndarray, boxes: Sequence[Optional[Tuple[float, ...]]],
                     colors, line_width: int) -> None:
    """Thin dashed boxes, in place (Detectron2's are several pixels wide, too heavy for small
    cells). A box ``(x0, y0, x1, y1)`` (picture coordinates; None: none) is drawn on its
    outermost pixels."""
    height, width = canvas.shape[:2]
    dash, gap = 4 * line_width, 3 * line_width
    for box, color in zip(boxes, colors):
        if box is None:
            continue
        rgb = (np.asarray(color) * 255.0 + 0.5).astype(np.uint8)
        x0, y0 = int(round(box[0])), int(round(box[1]))
        x1, y1 = int(round(box[2])) - 1, int(round(box[3])) - 1
        if x1 < x0 or y1 < y0 or x1 < 0 or y1 < 0 or x0 >= width or y0 >= height:
            continue
        cx0, cx1 = max(x0, 0), min(x1, width - 1)
        cy0, cy1 = max(y0, 0), min(y1, height - 1)
        on_x = _dashes(cx1 - cx0 + 1, dash, gap)
        on_y = _dashes(cy1 - cy0 + 1, dash, gap)
        for t in range(line_width):
            for y in (y0 + t, y1 - t):
                if 0 <= y < height:
                    canvas[y, cx0:cx1 + 1][on_x] = rgb
            for x in (x0 + t, x1 - t):
                if 0 <= x < width:
                    canvas[cy0:cy1 + 1, x][on_y] = rgb


# ---------------------------------------------------------------- text


def _font_size(height: int, width: int) -> float:
    """Detectron2's default label size for an image (points), as ``Visualizer`` computes it."""
    return max(np.sqrt(height * width) // 90, 10)


def _label_text(shape: Shape, class_names: Sequence[str]) -> str:
    text = class_names[shape.class_index]
    return text if shape.score is None else f"{text} {shape.score * 100:.0f}%"


def _draw_label(visualizer, extent: Optional[Tuple[float, ...]], text: str, color,
                height: int) -> None:
    """Put a label by the instance whose picture extent is ``extent`` (below it, or beside
    it at the picture's bottom edge); None: nowhere."""
    if extent is None:
        return
    x0, y0, x1, y1 = extent
    position = (x1, y0) if y1 >= height - 5 else (x0, y1)
    font = max(0.6 * _font_size(height, visualizer.output.width), 8)
    visualizer.draw_text(text, position, color=color, horizontal_alignment="left",
                         font_size=font)


def _draw_legend(visualizer, lines: Sequence[str], thing_colors) -> None:
    """The legend's lines in the top-left corner: each class's line in its color, a note
    (the lines after the classes) in white."""
    output = visualizer.output
    font = max(0.9 * _font_size(output.height, output.width), 10)
    step = font * output.dpi / 72 * 1.7
    for row, line in enumerate(lines):
        color = (tuple(c / 255.0 for c in thing_colors[row]) if row < len(thing_colors)
                 else (1.0, 1.0, 1.0))
        visualizer.draw_text(line, (4, 4 + row * step), color=color,
                             horizontal_alignment="left", font_size=font)


# ---------------------------------------------------------------- pictures


def _draw(
    image_rgb: np.ndarray, shapes: List[Shape], metadata, *, total: int, note: str,
    labels: Optional[bool], outlines: bool, label_limit: Optional[int], boxes: bool,
    alpha: Optional[float], legend: Optional[bool], min_size: int, max_size: Optional[int],
    resize: str, return_info: bool,
):
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image_rgb.shape}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    for shape in shapes:
        if not 0 <= shape.class_index < len(metadata.thing_colors):
            raise ValueError(f"class index {shape.class_index} has no color in the metadata "
                             f"({len(metadata.thing_colors)} classes)")
    style = picture_style(len(shapes), labels=labels, outlines=outlines,
                          label_limit=label_limit, alpha=alpha)
    height, width = image_rgb.shape[:2]
    out_height, out_width = picture_size(height, width, min_size, max_size)
    rows, cols = _index_map(height, out_height), _index_map(width, out_width)
    canvas = np.ascontiguousarray(_resize_image(image_rgb.astype(np.uint8, copy=False), rows,
                                                cols, resize))
    colors = _instance_colors(shapes, metadata.thing_colors)
    # Largest first, so small instances stay visible on top (as Detectron2 orders them).
    areas = [int(s.crop.sum()) if s.crop is not None else 0 for s in shapes]
    order = np.argsort(-np.asarray(areas, dtype=np.int64), kind="stable")
    line_width = _line_width(out_height, out_width)
    _composite_masks(canvas, _label_map(shapes, order, height, width, rows, cols), colors,
                     style.alpha, line_width)
    sy, sx = out_height / height, out_width / width
    if boxes:
        _composite_boxes(canvas, [_picture_box(s, sy, sx) for s in shapes], colors, line_width)
    if legend is None:
        legend = min(out_height, out_width) >= _MIN_SIDE_FOR_TEXT
    lines = legend_lines([s.class_index for s in shapes], metadata.thing_classes,
                         note) if legend else []
    picture = canvas
    if style.labels and shapes:
        texts = [_label_text(s, metadata.thing_classes) for s in shapes]
        extents = [_picture_extent(s, rows, cols, sy, sx) for s in shapes]
        picture = _draw_text(canvas, list(zip(texts, extents, colors)), lines, metadata)
    elif lines:
        picture = _draw_text(canvas, [], lines, metadata)
    if not return_info:
        return picture
    return picture, PictureInfo(out_height, out_width, style, len(shapes), total, lines)


def _draw_text(canvas: np.ndarray, labels: Sequence[Tuple], lines: Sequence[str],
               metadata) -> np.ndarray:
    """Labels and legend drawn over the picture with Detectron2's ``Visualizer``.

    Args:
        canvas: the picture.
        labels: ``(text, extent, color)`` per label (see :func:`_draw_label`).
        lines: the legend's lines (none: no legend).
        metadata: the classes' names and colors.

    Returns:
        np.ndarray: the picture with the text.
    """
    from detectron2.utils.visualizer import ColorMode, Visualizer

    height, width = canvas.shape[:2]
    visualizer = Visualizer(canvas, metadata, instance_mode=ColorMode.SEGMENTATION)
    for text, extent, color in labels:
        _draw_label(visualizer, extent, text, color, height)
    if lines:
        _draw_legend(visualizer, lines, metadata.thing_colors)
    picture = visualizer.get_output().get_image()
    if picture.shape[:2] != (height, width):  # matplotlib rounding; never seen, but cheap
        picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_NEAREST)
    return picture


def draw_ground_truth(
    image_rgb: np.ndarray,
    record: Dict,
    metadata,
    max_instances: Optional[int] = None,
    *,
    labels: Optional[bool] = None,
    outlines: bool = False,
    label_limit: Optional[int] = AUTO_LABEL_LIMIT,
    boxes: bool = False,
    alpha: Optional[float] = None,
    legend: Optional[bool] = None,
    min_size: int = 0,
    max_size: Optional[int] = None,
    resize: str = "nearest",
    return_info: bool = False,
):
    """Draw a Detectron2 dataset dict's annotations over its image.

    Args:
        image_rgb: ``HxWx3 uint8`` RGB image of the record.
        record: dataset dict with ``height``, ``width`` and ``annotations`` (``category_id``
            0..K-1; ``segmentation`` as RLE or polygons; optional ``bbox``/``bbox_mode``).
        metadata: Detectron2 metadata with ``thing_classes`` and ``thing_colors``.
        max_instances: draw only the first this many annotations (None: all); the legend
            says when some were left out ("first 100 of 675 shown").
        labels: class-name labels by each instance; None: only with at most ``label_limit``
            instances (see :func:`picture_style`).
        outlines: outlines only: no fill, no labels.
        label_limit: above this many instances, outlines with a light fill and the legend's
            counts instead of labels (None: no limit).
        boxes: also draw the annotation boxes (dashed).
        alpha: fill opacity of the masks; None: :data:`DEFAULT_ALPHA` (0.45), or
            :data:`CROWDED_ALPHA` (0.2) above ``label_limit``.
        legend: a class legend with counts in the top-left corner; None: when the picture is
            at least 160 px on each side.
        min_size: draw smaller images larger, to this long side in pixels (0: the image's
            size; the tools use :data:`DEFAULT_MIN_SIZE`).
        max_size: draw larger images smaller, to this long side (None: never).
        resize: how the image is resized, ``"nearest"`` or ``"smooth"`` (masks: always
            nearest).
        return_info: also return what the picture shows.

    Returns:
        np.ndarray: ``HxWx3 uint8`` RGB picture, of :func:`picture_size` (the image's size by
        default); with ``return_info``, ``(picture, PictureInfo)``.

    Raises:
        DatasetError: an annotation whose mask does not match the record's size.
        ValueError: the image is not ``HxWx3`` or not the record's size; a bad option.
    """
    _check_size(image_rgb, record)
    if max_instances is not None and max_instances < 0:
        raise ValueError(f"max_instances must be at least 0 (or None: all), got {max_instances}")
    shapes = ground_truth_shapes(record, max_instances)
    total = len(record.get("annotations", []))
    note = f"first {len(shapes)} of {total} shown" if total > len(shapes) else ""
    return _draw(image_rgb, shapes, metadata, total=total, note=note, labels=labels,
                 outlines=outlines, label_limit=label_limit, boxes=boxes, alpha=alpha,
                 legend=legend, min_size=min_size, max_size=max_size, resize=resize,
                 return_info=return_info)


def draw_predictions(
    image_rgb: np.ndarray,
    entries: Sequence[Dict],
    metadata,
    score_threshold: float = 0.5,
    max_instances: Optional[int] = None,
    *,
    bbox_format: str = "xywh",
    labels: Optional[bool] = None,
    outlines: bool = False,
    label_limit: Optional[int] = AUTO_LABEL_LIMIT,
    boxes: bool = False,
    alpha: Optional[float] = None,
    legend: Optional[bool] = None,
    min_size: int = 0,
    max_size: Optional[int] = None,
    resize: str = "nearest",
    return_info: bool = False,
    where: str = "<predictions>",
):
    """Draw COCO result entries (one image's predictions) over the image.

    Args:
        image_rgb: ``HxWx3 uint8`` RGB image.
        entries: dicts with ``score``, ``category_id`` (dataset id, mapped to the model's class
            by ``metadata.thing_dataset_id_to_contiguous_id``), ``segmentation`` (RLE of the
            image's size) and/or ``bbox``; ``image_id`` is not looked at.
        metadata: Detectron2 metadata with ``thing_classes`` and ``thing_colors``.
        score_threshold: entries scoring below this are left out.
        max_instances: draw at most this many, the highest scores first (None: all); the
            legend says when some were left out ("top 300 of 675 shown").
        bbox_format: ``"xywh"`` (COCO), ``"xyxy"``, or ``"auto"`` (see
            :func:`detect_bbox_format`).
        labels: "class score%" labels; None: only with at most ``label_limit`` instances.
        outlines, label_limit, alpha, legend, min_size, max_size, resize, return_info: see
            :func:`draw_ground_truth`.
        boxes: also draw the boxes (dashed), e.g. to check them against the masks.
        where: named in errors (e.g. the results file).

    Returns:
        np.ndarray: ``HxWx3 uint8`` RGB picture, of :func:`picture_size` (the image's size by
        default); with ``return_info``, ``(picture, PictureInfo)``.

    Raises:
        DatasetError: an entry with an unknown category or a mask of another size.
        ValueError: a bad option.
    """
    if max_instances is not None and max_instances < 0:
        raise ValueError(f"max_instances must be at least 0 (or None: all), got {max_instances}")
    height, width = np.asarray(image_rgb).shape[:2]
    shapes, passing = prediction_shapes(entries, metadata, height, width, score_threshold,
                                         max_instances, bbox_format, where)
    note = f"top {len(shapes)} of {passing} shown" if passing > len(shapes) else ""
    return _draw(image_rgb, shapes, metadata, total=passing, note=note, labels=labels,
                 outlines=outlines, label_limit=label_limit, boxes=boxes, alpha=alpha,
                 legend=legend, min_size=min_size, max_size=max_size, resize=resize,
                 return_info=return_info)


def _check_size(image_rgb: np.ndarray, record: Dict) -> None:
    shape = np.asarray(image_rgb).shape
    if tuple(shape[:2]) != (int(record["height"]), int(record["width"])):
        raise ValueError(f"{record.get('file_name', '<record>')}: image is "
                         f"{shape[0]}x{shape[1]} but the record says "
                         f"{record['height']}x{record['width']}")


def _put_title(picture: np.ndarray, text: str, x: int, panel_side: int) -> None:
    """White text with a dark outline at the bottom-left of a panel, in place; larger on
    larger panels (``panel_side``: the panel's short side)."""
    scale = max(0.5, panel_side / 1000)
    thickness = max(1, int(round(scale * 1.5)))
    origin = (x + int(6 * scale / 0.5), picture.shape[0] - int(8 * scale / 0.5))
    for color, width in (((0, 0, 0), thickness + 2), ((255, 255, 255), thickness)):
        cv2.putText(picture, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, width,
                    cv2.LINE_AA)


def side_by_side(
    left: np.ndarray, right: np.ndarray, titles: Optional[Tuple[str, str]] = (
        "ground truth", "prediction")
) -> np.ndarray:
    """Put two pictures of one image next to each other.

    Args:
        left: ``HxWx3`` picture.
        right: ``HxWx3`` picture of the same size (drawn with the same ``min_size`` /
            ``max_size``, so both halves have one scale).
        titles: captions at the bottom-left of each half (left out for pictures under
            160 px); None: no captions.

    Returns:
        np.ndarray: ``Hx2Wx3`` picture; a 2-pixel white line (drawn over the pictures' inner
        edge columns) separates the halves.

    Raises:
        ValueError: the pictures differ in size.
    """
    if left.shape != right.shape or left.ndim != 3:
        raise ValueError(f"side_by_side needs two HxWx3 pictures of one size, got {left.shape} "
                         f"and {right.shape}")
    height, width = left.shape[:2]
    picture = np.concatenate([left, right], axis=1)
    if width >= 2:
        picture[:, width - 1:width + 1] = _SEPARATOR_COLOR
    if titles and min(height, width) >= _MIN_SIDE_FOR_TEXT:
        for index, title in enumerate(titles):
            _put_title(picture, title, index * width, min(height, width))
    return picture
