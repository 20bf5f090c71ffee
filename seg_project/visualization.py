"""Pictures of ground truth and predictions, drawn with Detectron2's ``Visualizer``.

Instances are drawn in their class's color (``metadata.thing_colors``, as in
``ColorMode.SEGMENTATION``), each a little lighter or darker than its neighbours so touching
cells stay apart: a half-transparent fill with a solid outline. A legend names the classes and
counts what was drawn; per-instance labels ("class" or "class 87%") are drawn only when there are
few instances (a picture of 700 nuclei with 700 labels shows nothing).

Predictions use the project's interchange format, the COCO result entry::

    {"image_id": int, "bbox": [x, y, w, h], "score": float, "category_id": 1..K,
     "segmentation": {"size": [H, W], "counts": str}}

(``bbox`` may also be ``[x1, y1, x2, y2]``, as in the course's example submission; see
:func:`detect_bbox_format`). Ground truth is a Detectron2 dataset dict.

Speed: Detectron2 decodes every mask at full image size and traces it there (about 2 ms per
instance on a 1000x1000 image, seconds for a crowded image). Here each mask is decoded only
within its bounding box (:func:`seg_project.data.rle.decode_crop`) and traced there; the
polygons are then drawn onto the ``Visualizer``'s axes as one collection in ``draw_polygon``'s
style (adding a matplotlib patch per polygon costs more than everything else together).
"""

import argparse
import colorsys
import json
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util

from .data.image_io import IMAGE_EXTENSIONS, DatasetError, read_image, read_image_size
from .data.rle import decode_crop

__all__ = [
    "add_picture_arguments",
    "BBOX_FORMATS",
    "class_names_for",
    "detect_bbox_format",
    "draw_ground_truth",
    "draw_predictions",
    "image_name",
    "load_annotated_source",
    "load_results",
    "metadata_for_classes",
    "picture_options",
    "render_dataset",
    "render_predictions",
    "save_png",
    "select_records",
    "side_by_side",
    "visualize_dataset",
    "visualize_model",
    "visualize_results",
]

logger = logging.getLogger(__name__)

BBOX_FORMATS = ("auto", "xywh", "xyxy")
# Above this many instances, per-instance labels are left out unless asked for.
AUTO_LABEL_LIMIT = 100
# Mask fill opacity: the tissue under a cell stays visible; the outline is drawn solid.
DEFAULT_ALPHA = 0.45
# The legend and titles are left out of pictures smaller than this (in pixels, either side).
_MIN_SIDE_FOR_TEXT = 160
_SEPARATOR_COLOR = (255, 255, 255)


class _Shape(NamedTuple):
    """One instance to draw: a bool mask crop at (x0, y0) (or None), its contiguous class,
    its score (None for ground truth) and its box (x0, y0, x1, y1) (or None)."""

    crop: Optional[np.ndarray]
    x0: int
    y0: int
    class_index: int
    score: Optional[float]
    box: Optional[Tuple[float, float, float, float]]


# ---------------------------------------------------------------- masks and boxes


def _as_rle(segmentation, height: int, width: int, where: str) -> Dict:
    """A compressed RLE (``counts`` bytes) of ``height`` x ``width`` from an RLE dict (counts
    str, bytes or list) or a list of polygons."""
    if isinstance(segmentation, list):  # polygons [[x, y, x, y, ...], ...]
        try:
            return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
        except Exception as e:
            raise DatasetError(where, f"segmentation polygons are invalid: {e}") from e
    if not isinstance(segmentation, dict) or not {"size", "counts"} <= set(segmentation):
        raise DatasetError(where, "segmentation must be an RLE {'size': [H, W], 'counts': ...} "
                                  "or a list of polygons")
    size = [int(v) for v in segmentation["size"]]
    if size != [height, width]:
        raise DatasetError(where, f"segmentation size {size} does not match the image "
                                  f"({height}x{width})")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_util.frPyObjects(segmentation, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise DatasetError(where, f"segmentation counts must be a string or a list, got "
                                  f"{type(counts).__name__}")
    return {"size": size, "counts": counts}


def _decode_crops(
    rles: Sequence[Optional[Dict]],
) -> List[Tuple[Optional[np.ndarray], int, int]]:
    """Decode each compressed RLE within its bounding box only (``rle.decode_crop``).

    Returns:
        list of ``(crop, x0, y0)``: a ``bool`` crop and the image column / row of its top-left
        pixel; ``(None, 0, 0)`` for an empty mask or a None in ``rles``.

    Raises:
        ValueError: corrupt counts (unreadable, or runs reaching outside the image).
    """
    present = [rle for rle in rles if rle is not None]
    boxes = iter(mask_util.toBbox(present) if present else [])
    crops = []
    for rle in rles:
        if rle is None:
            crops.append((None, 0, 0))
            continue
        x0, y0, w, h = (int(v) for v in next(boxes))
        if w <= 0 or h <= 0:
            crops.append((None, 0, 0))
            continue
        height, width = (int(v) for v in rle["size"])
        if x0 + w > width or y0 + h > height:
            raise ValueError(f"RLE counts are corrupt: they reach outside the {height}x{width} "
                             "image")
        try:
            crops.append((decode_crop(rle, (x0, y0, x0 + w, y0 + h)), x0, y0))
        except ValueError as e:
            raise ValueError(f"RLE counts are corrupt (cannot be read: {e})") from e
    return crops


def _checked_crops(rles: Sequence[Optional[Dict]], where: str):
    """:func:`_decode_crops`, with corrupt masks reported as a :class:`DatasetError`."""
    try:
        return _decode_crops(rles)
    except ValueError as e:
        raise DatasetError(where, str(e)) from e


def _polygons(crop: np.ndarray, x0: int, y0: int) -> List[np.ndarray]:
    """Outer outlines of a mask crop as ``Nx2`` image coordinates (pixel centers, as
    Detectron2's ``GenericMask``); specks too small to outline give no polygon."""
    padded = np.pad(crop.astype(np.uint8), 1)
    contours = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
    offset = np.array([x0 - 1 + 0.5, y0 - 1 + 0.5])
    return [c.reshape(-1, 2) + offset for c in contours if len(c) >= 3]


def _xyxy(box: Sequence[float], bbox_format: str) -> Tuple[float, float, float, float]:
    x0, y0, a, b = (float(v) for v in box)
    return (x0, y0, x0 + a, y0 + b) if bbox_format == "xywh" else (x0, y0, a, b)


def detect_bbox_format(entries: Sequence[Dict]) -> str:
    """Tell whether the entries' ``bbox`` is ``[x, y, w, h]`` (COCO) or ``[x1, y1, x2, y2]``.

    The boxes are compared with the bounding boxes of the entries' masks; without masks, boxes
    whose third or fourth value is below the first or second can only be XYWH. When nothing
    tells them apart, XYWH (the COCO format) is assumed and a warning is logged.

    Returns:
        str: ``"xywh"`` or ``"xyxy"``.
    """
    boxes, rles = [], []
    for entry in entries:
        segmentation, box = entry.get("segmentation"), entry.get("bbox")
        if box is None or len(box) != 4:
            continue
        boxes.append([float(v) for v in box])
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):
            height, width = (int(v) for v in segmentation["size"])
            rles.append(_as_rle(segmentation, height, width, "<entry>"))
        else:
            rles.append(None)
    with_mask = [i for i, rle in enumerate(rles) if rle is not None]
    if with_mask:
        mask_box = mask_util.toBbox([rles[i] for i in with_mask]).reshape(-1, 4)
        box = np.array([boxes[i] for i in with_mask], dtype=np.float64)
        nonempty = mask_box[:, 2] > 0
        box, mask_box = box[nonempty], mask_box[nonempty]
        if len(box):
            as_wh = np.abs(box[:, 2:] - mask_box[:, 2:]).sum()
            as_corner = np.abs(box[:, 2:] - (mask_box[:, :2] + mask_box[:, 2:])).sum()
            return "xyxy" if as_corner < as_wh else "xywh"
    box = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    if (box[:, 2] < box[:, 0]).any() or (box[:, 3] < box[:, 1]).any():
        return "xywh"
    if len(box):
        logger.warning("bbox format: no masks to compare the boxes with; assuming COCO's "
                       "[x, y, w, h] (pass bbox_format='xyxy' for [x1, y1, x2, y2])")
    return "xywh"


# ---------------------------------------------------------------- instances to draw


def _contiguous_ids(metadata) -> Dict[int, int]:
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
    if mapping:
        return {int(k): int(v) for k, v in mapping.items()}
    return {i + 1: i for i in range(len(metadata.thing_classes))}


def _ground_truth_shapes(record: Dict, max_instances: Optional[int]) -> List[_Shape]:
    from detectron2.structures import BoxMode

    height, width = int(record["height"]), int(record["width"])
    annotations = list(record.get("annotations", []))[:max_instances]
    where = str(record.get("file_name", "<record>"))
    rles = [_as_rle(a["segmentation"], height, width, where) if "segmentation" in a else None
            for a in annotations]
    shapes = []
    for ann, (crop, x0, y0) in zip(annotations, _checked_crops(rles, where)):
        box = None
        if "bbox" in ann:
            box = tuple(BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYWH_ABS),
                                        BoxMode.XYXY_ABS))
        shapes.append(_Shape(crop, x0, y0, int(ann["category_id"]), None, box))
    return shapes


def _prediction_shapes(
    entries: Sequence[Dict], metadata, height: int, width: int, score_threshold: float,
    max_instances: Optional[int], bbox_format: str, where: str,
) -> Tuple[List[_Shape], int]:
    """The entries to draw, and how many passed the threshold (the cap may drop some)."""
    if bbox_format not in BBOX_FORMATS:
        raise ValueError(f"bbox_format must be one of {BBOX_FORMATS}, got {bbox_format!r}")
    if bbox_format == "auto":
        bbox_format = detect_bbox_format(entries)
    for index, entry in enumerate(entries):
        problem = _entry_problem(entry, need_image_id=False)
        if problem:
            raise DatasetError(where, f"prediction {index}: {problem}")
    to_contiguous = _contiguous_ids(metadata)
    passing = sorted((e for e in entries if float(e["score"]) >= score_threshold),
                     key=lambda e: -float(e["score"]))
    kept = passing[:max_instances]
    rles = []
    for entry in kept:
        if entry["category_id"] not in to_contiguous:
            raise DatasetError(where, f"category_id {entry['category_id']} is not one of the "
                                      f"dataset's ids {sorted(to_contiguous)}")
        segmentation = entry.get("segmentation")
        rles.append(None if segmentation is None
                    else _as_rle(segmentation, height, width, where))
    shapes = []
    for entry, (crop, x0, y0) in zip(kept, _checked_crops(rles, where)):
        box = _xyxy(entry["bbox"], bbox_format) if entry.get("bbox") is not None else None
        shapes.append(_Shape(crop, x0, y0, to_contiguous[entry["category_id"]],
                             float(entry["score"]), box))
    return shapes, len(passing)


# ---------------------------------------------------------------- drawing


def _instance_colors(shapes: Sequence[_Shape], thing_colors) -> List[Tuple[float, ...]]:
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


def _label_text(shape: _Shape, class_names: Sequence[str]) -> str:
    text = class_names[shape.class_index]
    return text if shape.score is None else f"{text} {shape.score * 100:.0f}%"


def _draw_label(visualizer, shape: _Shape, text: str, color, height: int) -> None:
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


def _draw_legend(visualizer, shapes: Sequence[_Shape], metadata, note: str = "") -> None:
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


def _add_masks(visualizer, shapes: Sequence[_Shape], colors, alpha: float) -> None:
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


def _add_boxes(visualizer, shapes: Sequence[_Shape], colors) -> None:
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
    image_rgb: np.ndarray, shapes: List[_Shape], metadata, *, labels: Optional[bool],
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
    shapes = _ground_truth_shapes(record, max_instances)
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
    shapes, passing = _prediction_shapes(entries, metadata, height, width, score_threshold,
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


def save_png(path, image: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an RGB picture as PNG, atomically (a temporary file, then a rename).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: the picture cannot be encoded or written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True / --overwrite to "
                              "replace it)")
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise OSError(f"{path}: cannot encode a picture of shape {image.shape} as PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data.tobytes())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return path


# ---------------------------------------------------------------- data sources


def class_names_for(num_classes: int) -> List[str]:
    """The default class names ``class1`` .. ``classK``."""
    return [f"class{i}" for i in range(1, num_classes + 1)]


def metadata_for_classes(class_names: Sequence[str]):
    """Detectron2 metadata (not registered anywhere) for course-layout classes: names, the
    catalog's colors, and dataset ids 1..K -> 0..K-1."""
    from detectron2.data.catalog import Metadata

    from .data.catalog import distinct_colors

    names = list(class_names)
    return Metadata(name="seg_project_visualization").set(
        thing_classes=names,
        thing_colors=distinct_colors(len(names)),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(names))},
    )


def _resolve_class_names(class_names: Optional[Sequence[str]],
                         num_classes: Optional[int]) -> List[str]:
    if class_names:
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"{len(class_names)} class names given but num_classes is "
                             f"{num_classes}")
        return list(class_names)
    return class_names_for(num_classes or 4)


def load_annotated_source(
    source,
    split: str = "train",
    class_names: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
) -> Tuple[List[Dict], object]:
    """Dataset dicts and metadata from a registered dataset name or a course-layout folder.

    Args:
        source: a name in Detectron2's ``DatasetCatalog`` (e.g. ``cells_val``), or a dataset
            root (``source/split`` is read), or a split folder of ``<name>/image.tif`` folders.
        split: the split folder of a root.
        class_names: names of classes 1..K (folders only; default ``class1`` .. ``classK``).
        num_classes: K (folders only; default ``len(class_names)`` or 4).

    Returns:
        (records, metadata)

    Raises:
        DatasetError: the source is neither a registered dataset nor a folder, or bad data.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from .data.reader import IMAGE_FILE, load_annotated_split

    if str(source) in DatasetCatalog.list():
        return DatasetCatalog.get(str(source)), MetadataCatalog.get(str(source))
    root = Path(source)
    if not root.is_dir():
        raise DatasetError(root, "is neither a registered dataset (e.g. "
                                 f"{', '.join(sorted(DatasetCatalog.list())[:4])}) nor a folder")
    split_dir = root / split
    if not split_dir.is_dir():
        if not any((p / IMAGE_FILE).is_file() for p in root.iterdir() if p.is_dir()):
            raise DatasetError(split_dir, f"not found, and {root} holds no <name>/{IMAGE_FILE} "
                                          "folders itself")
        split_dir = root
    names = _resolve_class_names(class_names, num_classes)
    return load_annotated_split(split_dir, len(names)), metadata_for_classes(names)


def load_results(path) -> List[Dict]:
    """Read and check a COCO results JSON (a list of result entries).

    Each entry needs an int ``image_id`` and ``category_id``, a number ``score``, and a
    ``segmentation`` RLE ``{"size": [H, W], "counts": str}`` and/or a four-number ``bbox``.

    Raises:
        DatasetError: naming the file and the first bad entry.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "results file not found")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"not valid JSON: {e}") from e
    if not isinstance(entries, list):
        raise DatasetError(path, "must be a JSON list of result entries")
    for index, entry in enumerate(entries):
        problem = _entry_problem(entry)
        if problem:
            raise DatasetError(path, f"entry {index}: {problem}: {str(entry)[:200]}")
    return entries


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _entry_problem(entry, need_image_id: bool = True) -> Optional[str]:
    """What is wrong with a result entry, or None."""
    if not isinstance(entry, dict):
        return "is not an object"
    for key in ("image_id", "category_id") if need_image_id else ("category_id",):
        if not isinstance(entry.get(key), int) or isinstance(entry.get(key), bool):
            return f"{key} must be an integer"
    if not _is_number(entry.get("score")):
        return "score must be a number"
    box, segmentation = entry.get("bbox"), entry.get("segmentation")
    if box is not None and (not isinstance(box, list) or len(box) != 4
                            or not all(_is_number(v) for v in box)):
        return "bbox must be four numbers"
    if segmentation is not None and not (
        isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, list))
        and isinstance(segmentation.get("size"), list) and len(segmentation["size"]) == 2
    ):
        return 'segmentation must be {"size": [H, W], "counts": ...}'
    if box is None and segmentation is None:
        return "has neither segmentation nor bbox"
    return None


def image_name(file_name) -> str:
    """The name of an image's picture: its folder's name for ``<name>/image.tif`` (course
    layout), else the file name without extension."""
    from .data.reader import IMAGE_FILE

    path = Path(file_name)
    return path.parent.name if path.name == IMAGE_FILE else path.stem


def select_records(
    records: Sequence[Dict],
    sample: Optional[int] = None,
    seed: int = 0,
    names: Optional[Sequence[str]] = None,
) -> List[Dict]:
    """Pick records by image name (see :func:`image_name`) and/or a deterministic sample.

    Args:
        records: dataset dicts with ``file_name``.
        sample: keep this many, chosen at random with ``seed`` (None or >= len: all).
        seed: the sample's seed; the same records, sample and seed give the same picks.
        names: keep only these images (checked to exist), before sampling.

    Returns:
        list[dict]: the picked records, in their original order.

    Raises:
        ValueError: a name that matches no image, or a sample size below 1.
    """
    chosen = list(records)
    if names:
        by_name = {image_name(r["file_name"]): r for r in chosen}
        missing = [n for n in names if n not in by_name]
        if missing:
            known = sorted(by_name)
            raise ValueError(f"no image named {', '.join(missing[:10])} (known: "
                             f"{', '.join(known[:10])}{', ...' if len(known) > 10 else ''})")
        wanted = set(names)
        chosen = [r for r in chosen if image_name(r["file_name"]) in wanted]
    if sample is not None:
        if sample < 1:
            raise ValueError(f"sample must be at least 1, got {sample}")
        if sample < len(chosen):
            picks = sorted(random.Random(seed).sample(range(len(chosen)), sample))
            chosen = [chosen[i] for i in picks]
    return chosen


def _targets(records: Sequence[Dict], out_dir: Path, overwrite: bool) -> List[Path]:
    """One ``<image name>.png`` per record; refuses clashing names and, unless
    ``overwrite``, existing files (checked before anything is drawn)."""
    seen: Dict[str, str] = {}
    for record in records:
        name = image_name(record["file_name"])
        if name in seen:
            raise ValueError(f"two images would both be drawn to {name}.png: {seen[name]} and "
                             f"{record['file_name']}")
        seen[name] = record["file_name"]
    targets = [out_dir / f"{name}.png" for name in seen]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir}: {len(existing)} picture(s) already exist (e.g. "
                              f"{existing[0].name}); pass --overwrite to replace them")
    return targets


def render_dataset(
    records: Sequence[Dict],
    metadata,
    out_dir,
    *,
    overwrite: bool = False,
    progress: bool = True,
    **draw_options,
) -> List[Path]:
    """Draw each record's ground truth over its image into ``out_dir/<image name>.png``.

    Args:
        records: dataset dicts (see :func:`draw_ground_truth`).
        metadata: their Detectron2 metadata.
        out_dir: output folder (created if needed).
        overwrite: replace existing pictures (otherwise refuse before drawing anything).
        progress: show a progress bar.
        **draw_options: passed to :func:`draw_ground_truth`.

    Returns:
        list[Path]: the pictures written.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    targets = _targets(records, out_dir, overwrite)
    for record, target in tqdm(list(zip(records, targets)), desc="drawing", unit="image",
                               disable=not progress):
        picture = draw_ground_truth(read_image(record["file_name"]), record, metadata,
                                    **draw_options)
        save_png(target, picture, overwrite=overwrite)
    return targets


def render_predictions(
    pairs: Iterable[Tuple[Dict, Sequence[Dict]]],
    metadata,
    out_dir,
    *,
    with_ground_truth: bool = False,
    count: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
    where: str = "<predictions>",
    **draw_options,
) -> List[Path]:
    """Draw predictions, optionally next to the ground truth, one picture per image.

    Args:
        pairs: ``(record, entries)`` per image: a dataset dict (with ``annotations`` when
            ``with_ground_truth``) and its COCO result entries; may be a lazy generator.
        metadata: Detectron2 metadata of the classes.
        out_dir: output folder; pictures are ``<image name>.png``.
        with_ground_truth: draw ground truth (left) and predictions (right), double width.
        count: the number of pairs, for the progress bar.
        overwrite: replace existing pictures.
        progress: show a progress bar.
        where: named in errors about entries (e.g. the results file).
        **draw_options: passed to :func:`draw_predictions` (``score_threshold``,
            ``max_instances``, ``bbox_format``, ``labels``, ``boxes``, ...).

    Returns:
        list[Path]: the pictures written.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    written = []
    gt_options = {k: v for k, v in draw_options.items() if k in ("labels", "alpha", "legend")}
    for record, entries in tqdm(pairs, total=count, desc="drawing", unit="image",
                                disable=not progress):
        target = _targets([record], out_dir, overwrite)[0]
        if target in written:
            raise ValueError(f"two images would both be drawn to {target}")
        image = read_image(record["file_name"])
        picture = draw_predictions(image, entries, metadata, where=where, **draw_options)
        if with_ground_truth:
            truth = draw_ground_truth(image, record, metadata, **gt_options)
            picture = side_by_side(truth, picture)
        written.append(save_png(target, picture, overwrite=overwrite))
    return written


# ---------------------------------------------------------------- whole jobs (the tools)


def add_picture_arguments(parser) -> None:
    """Add the options both drawing tools share (``--out``, sampling, drawing style)."""
    parser.add_argument("--out", required=True, help="folder for the pictures "
                        "(<image name>.png)")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="draw N images picked at random (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    parser.add_argument("--names", nargs="+", default=None, metavar="NAME",
                        help="draw only these images (folder names in the course layout, "
                             "else file names without extension)")
    parser.add_argument("--split", default="train",
                        help="split folder of a dataset root (default train)")
    parser.add_argument("--class-names", default=None, metavar="A,B,...",
                        help="comma-separated names of classes 1..K (default class1..classK)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="K",
                        help="number of classes of a folder dataset (default 4)")
    parser.add_argument("--config-file", default=None, metavar="CFG",
                        help="seg_project config: registers its datasets (cells_train, "
                             "cells_val, ...) and gives the class names")
    parser.add_argument("--labels", action=argparse.BooleanOptionalAction, default=None,
                        help=f"label every instance (default: only up to {AUTO_LABEL_LIMIT} "
                             "instances)")
    parser.add_argument("--boxes", action="store_true", help="also draw boxes (dashed)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help=f"mask fill opacity (default {DEFAULT_ALPHA})")
    parser.add_argument("--max-instances", type=int, default=None, metavar="N",
                        help="draw at most N instances per image, highest scores first "
                             "(default: %(default)s; None: all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace pictures that already exist in --out")


def picture_options(args) -> Dict:
    """The keyword arguments of :func:`visualize_dataset` / :func:`visualize_results` /
    :func:`visualize_model` that :func:`add_picture_arguments` options give."""
    options = dict(
        out_dir=args.out, sample=args.sample, seed=args.seed, names=args.names,
        split=args.split, config_file=args.config_file, labels=args.labels, boxes=args.boxes,
        alpha=args.alpha, overwrite=args.overwrite,
        class_names=[n.strip() for n in args.class_names.split(",")] if args.class_names
        else None,
    )
    if args.max_instances is not None:
        options["max_instances"] = args.max_instances
    if args.num_classes is not None:
        options["num_classes"] = args.num_classes
    return options


def visualize_dataset(
    source,
    out_dir,
    *,
    split: str = "train",
    config_file=None,
    class_names: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
    sample: Optional[int] = None,
    seed: int = 0,
    names: Optional[Sequence[str]] = None,
    overwrite: bool = False,
    progress: bool = True,
    **draw_options,
) -> List[Path]:
    """Draw a dataset's ground truth, one picture per image (``tools/visualize_data.py``).

    Args:
        source: a registered dataset name or a course-layout folder (see
            :func:`load_annotated_source`).
        out_dir: output folder; pictures are ``<image name>.png``.
        split: the split folder of a dataset root.
        config_file: a seg_project config whose datasets are registered first (and whose
            class names are used for folders).
        class_names, num_classes: the classes of a folder dataset.
        sample, seed, names: which images (see :func:`select_records`).
        overwrite, progress: see :func:`render_dataset`.
        **draw_options: see :func:`draw_ground_truth`.

    Returns:
        list[Path]: the pictures written.
    """
    if config_file:
        cfg = _load_config(config_file)
        class_names = class_names or list(cfg.DATASETS.CELLS.CLASS_NAMES)
    records, metadata = load_annotated_source(source, split, class_names, num_classes)
    chosen = select_records(records, sample, seed, names)
    return render_dataset(chosen, metadata, out_dir, overwrite=overwrite, progress=progress,
                          **draw_options)


def _load_config(config_file):
    """A seg_project config from a YAML file, with its datasets registered."""
    from .config import get_seg_project_cfg, register_datasets_from_config

    cfg = get_seg_project_cfg()
    cfg.merge_from_file(str(config_file))
    register_datasets_from_config(cfg)
    return cfg


def _image_records(images, id_map=None) -> List[Dict]:
    """Records (no annotations) of an image folder (ids from ``id_map``, else 1..n in sorted
    file-name order) or of a list of image files (ids 1..n in the given order)."""
    from .data.reader import load_test_images

    paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    if len(paths) == 1 and Path(paths[0]).is_dir():
        records = load_test_images(paths[0], id_map)
        if id_map is None:
            logger.warning(f"No id map: image ids are 1..{len(records)} in sorted file-name "
                           f"order of {paths[0]} ({Path(records[0]['file_name']).name} is 1); "
                           "pass --id-map test_image_name_to_ids.json if the results use its "
                           "ids")
        return records
    if id_map is not None:
        raise ValueError("--id-map needs --images to be one folder")
    records = []
    for index, image in enumerate(paths, start=1):
        path = Path(image)
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(path, f"not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        height, width = read_image_size(path)
        records.append({"file_name": str(path), "image_id": index, "height": height,
                        "width": width})
    return records


def _prediction_records(
    images, id_map, dataset, gt_root, split, class_names, num_classes
) -> Tuple[List[Dict], object, bool]:
    """(records, metadata, with_ground_truth) of ``images`` or of a dataset with ground
    truth (``dataset``: a registered name, ``gt_root``: a course-layout folder)."""
    if (images is None) == (dataset is None and gt_root is None):
        raise ValueError("give either images (--images) or a dataset with ground truth "
                         "(--dataset / --gt-root), not both or neither")
    if images is not None:
        metadata = metadata_for_classes(_resolve_class_names(class_names, num_classes))
        return _image_records(images, id_map), metadata, False
    records, metadata = load_annotated_source(dataset or gt_root, split, class_names,
                                              num_classes)
    # A dataset without masks (e.g. cells_test) still gives images and ids.
    return records, metadata, all("annotations" in r for r in records)


def _check_ids(entries: Sequence[Dict], records: Sequence[Dict], results_file) -> None:
    known = {r["image_id"] for r in records}
    unknown = sorted({e["image_id"] for e in entries} - known)
    if unknown:
        raise DatasetError(results_file, f"image_id(s) {', '.join(map(str, unknown[:10]))} "
                                         f"match none of the {len(records)} images (ids "
                                         f"{min(known)}..{max(known)}); wrong --id-map or "
                                         "dataset?")


def visualize_results(
    results_file,
    out_dir,
    *,
    images=None,
    id_map=None,
    dataset: Optional[str] = None,
    gt_root=None,
    split: str = "train",
    config_file=None,
    class_names: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
    sample: Optional[int] = None,
    seed: int = 0,
    names: Optional[Sequence[str]] = None,
    overwrite: bool = False,
    progress: bool = True,
    **draw_options,
) -> List[Path]:
    """Draw a COCO results JSON over its images (``tools/visualize.py --results``).

    Images come either from ``images`` (a folder; ids from ``id_map``, the course's
    ``test_image_name_to_ids.json``, or else 1..n in sorted file-name order) or from a
    dataset (``dataset``: a registered name; ``gt_root``: a course-layout folder) whose
    ``image_id`` s the results use; its ground truth is then drawn alongside (double width).

    Args:
        results_file: the results JSON.
        out_dir: output folder.
        images, id_map, dataset, gt_root, split: where the images come from (see above).
        config_file: a seg_project config whose datasets are registered first and whose
            class names are used.
        class_names, num_classes: the classes when no registered dataset gives them
            (default: ``classN`` for N up to the highest ``category_id``, at least 4).
        sample, seed, names: which images to draw (see :func:`select_records`).
        overwrite, progress: see :func:`render_predictions`.
        **draw_options: see :func:`draw_predictions`; ``bbox_format`` defaults to ``"auto"``,
            resolved once for the whole file.

    Returns:
        list[Path]: the pictures written.

    Raises:
        DatasetError: bad results file, images, mapping, or ids that match no image.
        ValueError: both or neither of ``images`` and a dataset.
    """
    entries = load_results(results_file)
    if not entries:
        logger.warning(f"{results_file}: holds no predictions; drawing the plain images")
    if config_file:
        class_names = class_names or list(_load_config(config_file).DATASETS.CELLS.CLASS_NAMES)
    if class_names is None and num_classes is None:
        num_classes = max([4] + [e["category_id"] for e in entries])
    records, metadata, with_gt = _prediction_records(images, id_map, dataset, gt_root, split,
                                                     class_names, num_classes)
    _check_ids(entries, records, results_file)
    if draw_options.get("bbox_format", "auto") == "auto":
        draw_options["bbox_format"] = detect_bbox_format(entries)
        logger.info(f"{results_file}: boxes read as {draw_options['bbox_format']}")
    by_image: Dict[int, List[Dict]] = {}
    for entry in entries:
        by_image.setdefault(entry["image_id"], []).append(entry)
    chosen = select_records(records, sample, seed, names)
    _targets(chosen, Path(out_dir), overwrite)
    pairs = ((r, by_image.get(r["image_id"], [])) for r in chosen)
    return render_predictions(pairs, metadata, out_dir, with_ground_truth=with_gt,
                              count=len(chosen), overwrite=overwrite, progress=progress,
                              where=str(results_file), **draw_options)


def _predict_files(cfg, weights, device, paths):
    """The model: yields ``(path, entries)`` per image (``seg_project.inference``)."""
    try:
        from .inference import Predictor
    except ImportError as e:
        raise RuntimeError(f"drawing a model's predictions needs seg_project.inference: {e}") \
            from e
    predictor = Predictor(cfg, weights=weights, device=device)
    yield from predictor.predict_files(paths)


def visualize_model(
    weights,
    out_dir,
    *,
    config_file,
    images=None,
    dataset: Optional[str] = None,
    gt_root=None,
    split: str = "train",
    device: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
    sample: Optional[int] = None,
    seed: int = 0,
    names: Optional[Sequence[str]] = None,
    overwrite: bool = False,
    progress: bool = True,
    **draw_options,
) -> List[Path]:
    """Run a trained model on images and draw its predictions (``tools/visualize.py
    --config-file --weights``); with a dataset the ground truth is drawn alongside.

    Args:
        weights: the checkpoint (.pth).
        out_dir: output folder.
        config_file: the model's seg_project config (YAML); its datasets are registered, so
            ``dataset="cells_val"`` means the config's validation split.
        images: a folder or a list of image files (instead of a dataset).
        dataset, gt_root, split: a dataset with ground truth (see :func:`visualize_results`).
        device: "cpu", "cuda", ... (default: the config's ``MODEL.DEVICE``, cpu without a GPU).
        class_names, num_classes: default: the config's ``DATASETS.CELLS.CLASS_NAMES``.
        sample, seed, names, overwrite, progress, **draw_options: see
            :func:`visualize_results` (``bbox_format`` defaults to ``"xywh"``).

    Returns:
        list[Path]: the pictures written.
    """
    if not config_file:
        raise ValueError("drawing a model's predictions needs its config file (--config-file)")
    cfg = _load_config(config_file)
    class_names = class_names or list(cfg.DATASETS.CELLS.CLASS_NAMES)
    records, metadata, with_gt = _prediction_records(images, None, dataset, gt_root, split,
                                                     class_names, num_classes)
    chosen = select_records(records, sample, seed, names)
    _targets(chosen, Path(out_dir), overwrite)
    by_path = {str(Path(r["file_name"]).resolve()): r for r in chosen}
    predictions = _predict_files(cfg, str(weights), device, [r["file_name"] for r in chosen])
    pairs = ((by_path[str(Path(path).resolve())], entries) for path, entries in predictions)
    draw_options.setdefault("bbox_format", "xywh")
    return render_predictions(pairs, metadata, out_dir, with_ground_truth=with_gt,
                              count=len(chosen), overwrite=overwrite, progress=progress,
                              where=str(weights), **draw_options)
