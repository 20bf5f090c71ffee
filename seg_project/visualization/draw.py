"""Pictures of instances over their image, readable at any size and any crowd.

How a picture is drawn is one :class:`~.style.DrawStyle` (size, labels, fill, boxes, legend,
cap); :func:`draw_ground_truth` and :func:`draw_predictions` take it, and
:func:`side_by_side` puts two pictures of one image next to each other with their titles.

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
only (no fill, no labels). :func:`picture_style` makes that choice.

Legend: a strip under the image (:mod:`.text`), never over a cell: each class with its color
and how many of its instances were drawn, the score threshold of predictions
(``"score >= 0.5"``), and a cap's note when instances were left out (:func:`legend_lines`).
The picture is then taller than the image by :func:`legend_height`; ``legend=False`` draws
the image's size exactly.

Speed: masks are decoded within their crops (:mod:`.instances`) and painted into one map
of which instance each pixel shows, which is resized once; fills and outlines (OpenCV
erosion/dilation of that map) are composited with NumPy: under 0.1 s for 2,283 nuclei on a
1,024 px picture, where drawing them as matplotlib polygons (Detectron2's ``Visualizer``)
takes about 30 s. The legend and titles are OpenCV text; only the instance labels go through
the ``Visualizer`` (about 0.15 s when there are labels). Overlapping masks: the later
(smaller) one shows.
"""

import colorsys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data.instance_map import OverlapRule
from .instances import Shape, ground_truth_shapes, prediction_shapes
from .style import (
    AUTO_LABEL_LIMIT,
    CROWDED_ALPHA,
    DEFAULT_ALPHA,
    DEFAULT_MIN_SIZE,
    RESIZE_MODES,
    DrawStyle,
    Style,
    picture_size,
    picture_style,
)
from .text import draw_labels, legend_height, legend_strip, put_title

__all__ = [
    "AUTO_LABEL_LIMIT",
    "CROWDED_ALPHA",
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_SIZE",
    "DrawStyle",
    "PictureInfo",
    "RESIZE_MODES",
    "Style",
    "draw_ground_truth",
    "draw_predictions",
    "legend_height",
    "legend_lines",
    "picture_shape",
    "picture_size",
    "picture_style",
    "side_by_side",
    "threshold_text",
]

# The legend and titles are left out of pictures smaller than this (in pixels, either side).
_MIN_SIDE_FOR_TEXT = 160
_SEPARATOR_COLOR = (255, 255, 255)
_KERNEL = np.ones((3, 3), np.uint8)
_DEFAULT_STYLE = DrawStyle()


class PictureInfo(NamedTuple):
    """What a picture shows (``return_info=True`` of :func:`draw_ground_truth` and
    :func:`draw_predictions`).

    Attributes:
        height: the picture's height in pixels (the image's part and the legend strip).
        width: the picture's width in pixels.
        style: how the instances were drawn.
        shown: how many instances were drawn.
        total: how many there were (more than ``shown`` when a cap left some out).
        legend: the legend's lines ("epithelial: 412", ..., a cap's note); empty when no
            legend was drawn.
        legend_height: the rows of the legend strip at the picture's bottom (0: none); the
            image's part is the ``height - legend_height`` rows above it.
        score_threshold: predictions scoring below it were left out (None: ground truth);
            the legend says it (:func:`threshold_text`).
    """

    height: int
    width: int
    style: Style
    shown: int
    total: int
    legend: List[str]
    legend_height: int = 0
    score_threshold: Optional[float] = None


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


def picture_shape(height: int, width: int, class_names: Sequence[str],
                  style: DrawStyle = _DEFAULT_STYLE) -> Tuple[int, int]:
    """The size of the picture :func:`draw_ground_truth` and :func:`draw_predictions` make of
    an image: :func:`picture_size`, and the legend strip under it when there is one.

    Args:
        height: the image's height.
        width: the image's width.
        class_names: the classes (the legend's grid depends on their names).
        style: how the picture is drawn.

    Returns:
        tuple: ``(height, width)`` of the picture.
    """
    out_height, out_width = picture_size(height, width, style.min_size, style.max_size)
    legend = style.legend
    if legend is None:
        legend = min(out_height, out_width) >= _MIN_SIDE_FOR_TEXT
    return out_height + (legend_height(out_width, class_names) if legend else 0), out_width


def threshold_text(score_threshold: float) -> str:
    """How the legend says which predictions were drawn: ``"score >= 0.5"``."""
    return f"score >= {score_threshold:g}"


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



# ---------------------------------------------------------------- pictures


def _label_text(shape: Shape, class_names: Sequence[str]) -> str:
    text = class_names[shape.class_index]
    return text if shape.score is None else f"{text} {shape.score * 100:.0f}%"


def _draw(image_rgb: np.ndarray, shapes: List[Shape], metadata, style: DrawStyle, *,
          total: int, note: str, score_threshold: Optional[float], return_info: bool):
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image_rgb.shape}")
    for shape in shapes:
        if not 0 <= shape.class_index < len(metadata.thing_colors):
            raise ValueError(f"class index {shape.class_index} has no color in the metadata "
                             f"({len(metadata.thing_colors)} classes)")
    decided = picture_style(len(shapes), labels=style.labels, outlines=style.outlines,
                            label_limit=style.label_limit, alpha=style.alpha)
    height, width = image_rgb.shape[:2]
    out_height, out_width = picture_size(height, width, style.min_size, style.max_size)
    rows, cols = _index_map(height, out_height), _index_map(width, out_width)
    canvas = np.ascontiguousarray(_resize_image(image_rgb.astype(np.uint8, copy=False), rows,
                                                cols, style.resize))
    colors = _instance_colors(shapes, metadata.thing_colors)
    # Largest first, so small instances stay visible on top (as Detectron2 orders them).
    areas = [int(s.crop.sum()) if s.crop is not None else 0 for s in shapes]
    order = np.argsort(-np.asarray(areas, dtype=np.int64), kind="stable")
    line_width = _line_width(out_height, out_width)
    _composite_masks(canvas, _label_map(shapes, order, height, width, rows, cols), colors,
                     decided.alpha, line_width)
    sy, sx = out_height / height, out_width / width
    if style.boxes:
        _composite_boxes(canvas, [_picture_box(s, sy, sx) for s in shapes], colors, line_width)
    picture = canvas
    if decided.labels and shapes:
        texts = [_label_text(s, metadata.thing_classes) for s in shapes]
        extents = [_picture_extent(s, rows, cols, sy, sx) for s in shapes]
        picture = draw_labels(canvas, list(zip(texts, extents, colors)), metadata)
    lines: List[str] = []
    if picture_shape(height, width, metadata.thing_classes, style)[0] > out_height:
        lines = legend_lines([s.class_index for s in shapes], metadata.thing_classes, note)
        info = threshold_text(score_threshold) if score_threshold is not None else ""
        strip = legend_strip(out_width, metadata.thing_classes, lines, metadata.thing_colors,
                             info)
        picture = np.concatenate([picture, strip], axis=0)
    if not return_info:
        return picture
    return picture, PictureInfo(picture.shape[0], out_width, decided, len(shapes), total, lines,
                                picture.shape[0] - out_height, score_threshold)


def draw_ground_truth(
    image_rgb: np.ndarray,
    record: Dict,
    metadata,
    style: DrawStyle = _DEFAULT_STYLE,
    *,
    return_info: bool = False,
):
    """Draw a Detectron2 dataset dict's annotations over its image.

    Args:
        image_rgb: ``HxWx3 uint8`` RGB image of the record.
        record: dataset dict with ``height``, ``width`` and ``annotations`` (``category_id``
            0..K-1; ``segmentation`` as RLE or polygons; optional ``bbox``/``bbox_mode``).
        metadata: Detectron2 metadata with ``thing_classes`` and ``thing_colors``.
        style: how to draw (:class:`~.style.DrawStyle`; default: at the image's size, labels
            up to 50 instances, a legend strip when the picture is at least 160 px on each
            side). Its ``max_instances`` draws only the first annotations; the legend says
            when some were left out ("first 100 of 675 shown").
        return_info: also return what the picture shows.

    Returns:
        np.ndarray: ``HxWx3 uint8`` RGB picture: the image at :func:`picture_size` (the
        image's size by default), with the legend strip under it; with ``return_info``,
        ``(picture, PictureInfo)``.

    Raises:
        DatasetError: an annotation whose mask does not match the record's size.
        ValueError: the image is not ``HxWx3`` or not the record's size.
    """
    _check_size(image_rgb, record)
    shapes = ground_truth_shapes(record, style.max_instances)
    total = len(record.get("annotations", []))
    note = f"first {len(shapes)} of {total} shown" if total > len(shapes) else ""
    return _draw(image_rgb, shapes, metadata, style, total=total, note=note,
                 score_threshold=None, return_info=return_info)


def draw_predictions(
    image_rgb: np.ndarray,
    entries: Sequence[Dict],
    metadata,
    score_threshold: float = 0.5,
    style: DrawStyle = _DEFAULT_STYLE,
    *,
    bbox_format: str = "xywh",
    return_info: bool = False,
    where: str = "<predictions>",
    overlap_rule: Optional[OverlapRule] = None,
):
    """Draw COCO result entries (one image's predictions) over the image.

    Args:
        image_rgb: ``HxWx3 uint8`` RGB image.
        entries: dicts with ``score``, ``category_id`` (dataset id, mapped to the model's class
            by ``metadata.thing_dataset_id_to_contiguous_id``), ``segmentation`` (RLE of the
            image's size) and/or ``bbox``; ``image_id`` is not looked at.
        metadata: Detectron2 metadata with ``thing_classes`` and ``thing_colors``.
        score_threshold: entries scoring below this are left out; the legend says it
            (``"score >= 0.5"``).
        style: how to draw (see :func:`draw_ground_truth`); its ``max_instances`` draws the
            highest scores first ("top 300 of 675 shown"); ``boxes`` draws the boxes
            (dashed), e.g. to check them against the masks.
        bbox_format: ``"xywh"`` (COCO), ``"xyxy"``, or ``"auto"`` (see
            :func:`detect_bbox_format`).
        return_info: also return what the picture shows.
        where: named in errors (e.g. the results file).
        overlap_rule: None: every entry drawn with its whole mask; a rule: the cells, each
            drawn with its pixels in the entries' instance map (what the pathology metrics
            and exports count; see :func:`~.instances.prediction_shapes`).

    Returns:
        np.ndarray: ``HxWx3 uint8`` RGB picture (see :func:`draw_ground_truth`); with
        ``return_info``, ``(picture, PictureInfo)``.

    Raises:
        DatasetError: an entry with an unknown category or a mask of another size.
        ValueError: a bad option.
    """
    height, width = np.asarray(image_rgb).shape[:2]
    shapes, passing = prediction_shapes(entries, metadata, height, width, score_threshold,
                                         style.max_instances, bbox_format, where, overlap_rule)
    note = f"top {len(shapes)} of {passing} shown" if passing > len(shapes) else ""
    return _draw(image_rgb, shapes, metadata, style, total=passing, note=note,
                 score_threshold=score_threshold, return_info=return_info)


def _check_size(image_rgb: np.ndarray, record: Dict) -> None:
    shape = np.asarray(image_rgb).shape
    if tuple(shape[:2]) != (int(record["height"]), int(record["width"])):
        raise ValueError(f"{record.get('file_name', '<record>')}: image is "
                         f"{shape[0]}x{shape[1]} but the record says "
                         f"{record['height']}x{record['width']}")


def side_by_side(
    left: np.ndarray, right: np.ndarray, titles: Optional[Tuple[str, str]] = (
        "ground truth", "prediction")
) -> np.ndarray:
    """Put two pictures of one image next to each other.

    Args:
        left: ``HxWx3`` picture.
        right: ``HxWx3`` picture of the same size (drawn with the same style, so both halves
            have one scale and legend strips of one height).
        titles: captions at the bottom-left of each half, white with a dark outline (in the
            last row of a legend strip, which leaves them room); left out for pictures under
            160 px; None: no captions.

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
            put_title(picture, title, index * width, width)
    return picture
