"""Pictures of instances over their image, drawn with Detectron2's ``Visualizer``.

Instances are drawn in their class's color (``metadata.thing_colors``, as in
``ColorMode.SEGMENTATION``), each a little lighter or darker than its neighbours so touching
cells stay apart: a half-transparent fill with a solid outline. A legend names the classes and
counts what was drawn; per-instance labels ("class" or "class 87%") are drawn only when there are
few instances (a picture of 700 nuclei with 700 labels shows nothing).

Speed: each mask is traced within its crop (:mod:`.instances`); the polygons are then drawn
onto the ``Visualizer``'s axes as one collection in ``draw_polygon``'s style (adding a
matplotlib patch per polygon costs more than everything else together).
"""

import colorsys
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .instances import Shape, ground_truth_shapes, prediction_shapes

__all__ = ["AUTO_LABEL_LIMIT", "DEFAULT_ALPHA", "draw_ground_truth", "draw_predictions",
           "side_by_side"]

# Above this many instances, per-instance labels are left out unless asked for.
AUTO_LABEL_LIMIT = 100
# Mask fill opacity: the tissue under a cell stays visible; the outline is drawn solid.
DEFAULT_ALPHA = 0.45
# The legend and titles are left out of pictures smaller than this (in pixels, either side).
_MIN_SIDE_FOR_TEXT = 160
_SEPARATOR_COLOR = (255, 255, 255)


def _polygons(crop: np.ndarray, x0: int, y0: int) -> List[np.ndarray]:
    """Outer outlines of a mask crop as ``Nx2`` image coordinates (pixel centers, as
    Detectron2's ``GenericMask``); specks too small to outline give no polygon."""
    padded = np.pad(crop.astype(np.uint8), 1)
    contours = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
    offset = np.array([x0 - 1 + 0.5, y0 - 1 + 0.5])
    return [c.reshape(-1, 2) + offset for c in contours if len(c) >= 3]


def _instance_colors(shapes: Sequence[Shape], thing_colors) -> List[Tuple[float, ...]]:
    """Each instance's class color, made a little lighter or darker (deterministically) so
    touching instances of one class can be told apart."""
    rng = np.random.default_rng(0)
    factors = rng.uniform(-0.15, 0.15, size=len(shapes))
    colors = []
    for shape, factor in zip(shapes, factors):
        r, g, b = (c / 255.0 for c in thing_colors[shape.class_index])
        hue, lightness, saturation = colorsys.rgb_to_hls(r, g, b)
        lightness = min(max(lightness * (1 + factor), 0.0), 1.0)
        colors.append(colorsys.hls_to_rgb(hue, lightness, saturation))
    return colors


def _font_size(height: int, width: int) -> float:
    """Detectron2's default label size for an image (points), as ``Visualizer`` computes it."""
    return max(np.sqrt(height * width) // 90, 10)


def _label_text(shape: Shape, class_names: Sequence[str]) -> str:
    text = class_names[shape.class_index]
    return text if shape.score is None else f"{text} {shape.score * 100:.0f}%"


def _draw_label(visualizer, shape: Shape, text: str, color, height: int) -> None:
    """Put a label by the instance (below it, or beside it at the image's bottom edge)."""
    if shape.crop is not None:
        h, w = shape.crop.shape
        x0, y0, x1, y1 = shape.x0, shape.y0, shape.x0 + w, shape.y0 + h
    elif shape.box is not None:
        x0, y0, x1, y1 = shape.box
    else:
        return
    position = (x1, y0) if y1 >= height - 5 else (x0, y1)
    visualizer.draw_text(text, position, color=color, horizontal_alignment="left",
                         font_size=0.6 * _font_size(height, visualizer.output.width))


def _draw_legend(visualizer, shapes: Sequence[Shape], metadata, note: str = "") -> None:
    """Class names in their colors, with how many instances of each were drawn, and a
    ``note`` line below them (e.g. that a cap left instances out)."""
    names, colors = metadata.thing_classes, metadata.thing_colors
    counts = np.bincount([s.class_index for s in shapes], minlength=len(names))
    output = visualizer.output
    font = 0.9 * _font_size(output.height, output.width)
    line = font * output.dpi / 72 * 1.7
    for row, (name, count) in enumerate(zip(names, counts)):
        color = tuple(c / 255.0 for c in colors[row])
        visualizer.draw_text(f"{name}: {count}", (4, 4 + row * line), color=color,
                             horizontal_alignment="left", font_size=font)
    if note:
        visualizer.draw_text(note, (4, 4 + len(names) * line), color=(1.0, 1.0, 1.0),
                             horizontal_alignment="left", font_size=font)


def _add_masks(visualizer, shapes: Sequence[Shape], colors, alpha: float) -> None:
    """Draw the masks as ``Visualizer.draw_polygon`` does (fill of ``alpha``, solid outline,
    its line width), but as one matplotlib collection: a patch per polygon costs ~2 ms to add,
    seconds for a crowded image."""
    from matplotlib.collections import PolyCollection

    polygons, faces, edges = [], [], []
    for shape, color in zip(shapes, colors):
        if shape.crop is None:
            continue
        for polygon in _polygons(shape.crop, shape.x0, shape.y0):
            polygons.append(polygon)
            faces.append((*color, alpha))
            edges.append((*color, 1.0))
    if polygons:
        linewidth = max(_font_size(visualizer.output.height, visualizer.output.width) // 15, 1)
        visualizer.output.ax.add_collection(PolyCollection(
            polygons, facecolors=faces, edgecolors=edges, linewidths=linewidth),
            autolim=False)


def _add_boxes(visualizer, shapes: Sequence[Shape], colors) -> None:
    """Thin dashed boxes (Detectron2's are several pixels wide, too heavy for small cells)."""
    from matplotlib.collections import PolyCollection

    outlines, edges = [], []
    for shape, color in zip(shapes, colors):
        if shape.box is not None:
            x0, y0, x1, y1 = shape.box
            outlines.append([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
            edges.append((*color, 1.0))
    if outlines:
        visualizer.output.ax.add_collection(PolyCollection(
            outlines, facecolors="none", edgecolors=edges, linewidths=0.8, linestyles="--"),
            autolim=False)


def _draw(
    image_rgb: np.ndarray, shapes: List[Shape], metadata, *, labels: Optional[bool],
    boxes: bool, alpha: float, legend: Optional[bool], note: str = "",
) -> np.ndarray:
    from detectron2.utils.visualizer import ColorMode, Visualizer

    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image_rgb.shape}")
    height, width = image_rgb.shape[:2]
    for shape in shapes:
        if not 0 <= shape.class_index < len(metadata.thing_colors):
            raise ValueError(f"class index {shape.class_index} has no color in the metadata "
                             f"({len(metadata.thing_colors)} classes)")
    visualizer = Visualizer(image_rgb, metadata, instance_mode=ColorMode.SEGMENTATION)
    colors = _instance_colors(shapes, metadata.thing_colors)
    # Largest first, so small instances stay visible on top (as Detectron2 orders them).
    areas = [s.crop.sum() if s.crop is not None else 0 for s in shapes]
    order = np.argsort(-np.asarray(areas, dtype=np.int64), kind="stable")
    _add_masks(visualizer, [shapes[i] for i in order], [colors[i] for i in order], alpha)
    if boxes:
        _add_boxes(visualizer, shapes, colors)
    if labels is None:
        labels = len(shapes) <= AUTO_LABEL_LIMIT
    if labels:
        for shape, color in zip(shapes, colors):
            _draw_label(visualizer, shape, _label_text(shape, metadata.thing_classes), color,
                        height)
    if legend is None:
        legend = min(height, width) >= _MIN_SIDE_FOR_TEXT
    if legend:
        _draw_legend(visualizer, shapes, metadata, note)
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
    boxes: bool = False,
    alpha: float = DEFAULT_ALPHA,
    legend: Optional[bool] = None,
) -> np.ndarray:
    """Draw a Detectron2 dataset dict's annotations over its image.

    Args:
        image_rgb: ``HxWx3 uint8`` RGB image of the record.
        record: dataset dict with ``height``, ``width`` and ``annotations`` (``category_id``
            0..K-1; ``segmentation`` as RLE or polygons; optional ``bbox``/``bbox_mode``).
        metadata: Detectron2 metadata with ``thing_classes`` and ``thing_colors``.
        max_instances: draw only the first this many annotations (None: all).
        labels: class-name labels by each instance; None: only when there are at most
            ``AUTO_LABEL_LIMIT`` (100) instances.
        boxes: also draw the annotation boxes (dashed).
        alpha: fill opacity of the masks.
        legend: a class legend with counts in the top-left corner; None: when the image is at
            least 160 px on each side.

    Returns:
        np.ndarray: ``HxWx3 uint8`` RGB picture, the size of the image.

    Raises:
        DatasetError: an annotation whose mask does not match the record's size.
        ValueError: the image is not ``HxWx3`` or not the record's size.
    """
    _check_size(image_rgb, record)
    shapes = ground_truth_shapes(record, max_instances)
    return _draw(image_rgb, shapes, metadata, labels=labels, boxes=boxes, alpha=alpha,
                 legend=legend)


def draw_predictions(
    image_rgb: np.ndarray,
    entries: Sequence[Dict],
    metadata,
    score_threshold: float = 0.5,
    max_instances: Optional[int] = 300,
    *,
    bbox_format: str = "xywh",
    labels: Optional[bool] = None,
    boxes: bool = False,
    alpha: float = DEFAULT_ALPHA,
    legend: Optional[bool] = None,
    where: str = "<predictions>",
) -> np.ndarray:
    """Draw COCO result entries (one image's predictions) over the image.

    Args:
        image_rgb: ``HxWx3 uint8`` RGB image.
        entries: dicts with ``score``, ``category_id`` (dataset id, mapped to the model's class
            by ``metadata.thing_dataset_id_to_contiguous_id``), ``segmentation`` (RLE of the
            image's size) and/or ``bbox``; ``image_id`` is not looked at.
        metadata: Detectron2 metadata with ``thing_classes`` and ``thing_colors``.
        score_threshold: entries scoring below this are left out.
        max_instances: draw at most this many, the highest scores first (None: no cap).
        bbox_format: ``"xywh"`` (COCO), ``"xyxy"``, or ``"auto"`` (see
            :func:`detect_bbox_format`).
        labels: "class score%" labels; None: only with at most 100 instances drawn.
        boxes: also draw the boxes (dashed), e.g. to check them against the masks.
        alpha: fill opacity of the masks.
        legend: see :func:`draw_ground_truth`; when the cap left predictions out, the legend
            says so ("top 300 of 675 shown").
        where: named in errors (e.g. the results file).

    Returns:
        np.ndarray: ``HxWx3 uint8`` RGB picture, the size of the image.

    Raises:
        DatasetError: an entry with an unknown category or a mask of another size.
    """
    height, width = np.asarray(image_rgb).shape[:2]
    shapes, passing = prediction_shapes(entries, metadata, height, width, score_threshold,
                                         max_instances, bbox_format, where)
    note = f"top {len(shapes)} of {passing} shown" if passing > len(shapes) else ""
    return _draw(image_rgb, shapes, metadata, labels=labels, boxes=boxes, alpha=alpha,
                 legend=legend, note=note)


def _check_size(image_rgb: np.ndarray, record: Dict) -> None:
    shape = np.asarray(image_rgb).shape
    if tuple(shape[:2]) != (int(record["height"]), int(record["width"])):
        raise ValueError(f"{record.get('file_name', '<record>')}: image is "
                         f"{shape[0]}x{shape[1]} but the record says "
                         f"{record['height']}x{record['width']}")


def _put_title(picture: np.ndarray, text: str, x: int) -> None:
    """Small white text with a dark outline at the bottom-left of a panel, in place."""
    height = picture.shape[0]
    origin = (x + 6, height - 8)
    for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(picture, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, thickness,
                    cv2.LINE_AA)


def side_by_side(
    left: np.ndarray, right: np.ndarray, titles: Optional[Tuple[str, str]] = (
        "ground truth", "prediction")
) -> np.ndarray:
    """Put two pictures of one image next to each other.

    Args:
        left: ``HxWx3`` picture.
        right: ``HxWx3`` picture of the same size.
        titles: small captions at the bottom-left of each half (left out for pictures under
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
            _put_title(picture, title, index * width)
    return picture
