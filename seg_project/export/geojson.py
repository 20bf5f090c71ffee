"""Predictions of one image as QuPath-compatible GeoJSON.

Format (what QuPath 0.4 / 0.5 writes and reads with *File > Import objects from file*)::

    {"type": "FeatureCollection",
     "features": [
        {"type": "Feature",
         "id": "<UUID>",
         "geometry": {"type": "Polygon", "coordinates": [[[x, y], ...], ...]},
         "properties": {"objectType": "detection",
                        "classification": {"name": "<class name>", "color": [r, g, b]},
                        "measurements": {"score": 0.93},
                        "isLocked": false}},
        ...]}

- One feature per instance of the entries' instance map
  (:func:`seg_project.data.instance_map.paint_instance_map`, the painting of the label TIFFs
  and the pathology metrics), in the order of the entries: features never overlap; an entry
  with an empty mask, covered entirely by higher-scored ones or dropped by the overlap rule
  has no feature, one partly covered keeps its visible part.
- ``objectType``: ``"detection"`` by default (QuPath's light objects for many cells: drawn
  fast, counted and measured, but not editable with the drawing tools), or ``"annotation"``
  (``object_type="annotation"``, ``tools/predict.py --object-type annotation``): editable
  objects, what curators correct by hand; QuPath slows down with many thousands of them.
- ``id``: a UUID string, as QuPath writes since 0.4; here a deterministic one,
  ``uuid5(<project namespace>, "<image name>/<entry index>")``, so the same predictions give
  the same file.
- ``measurements``: the QuPath >= 0.4 form, a JSON object mapping names to numbers
  (``{"score": 0.93}``). QuPath 0.3 and older wrote (and 0.4 / 0.5 still read) a list of
  ``{"name", "value"}`` objects; that form is not written.
- ``classification.color``: ``[r, g, b]`` ints 0..255 (QuPath's classification form).
- ``isLocked``: ``false`` (QuPath writes it only when true; reading ``false`` is the default).

Geometry conventions:

- Coordinates are image pixels, origin at the top-left *corner* of the image, x to the right,
  y down (QuPath's convention). Pixel ``(column c, row r)`` is the unit square
  ``[c, c + 1] x [r, r + 1]``; a polygon traces the outline of the pixel corners of its mask,
  so every vertex is an integer and every edge is horizontal or vertical. Rasterising a polygon
  back by "a pixel is inside when its centre ``(c + 0.5, r + 0.5)`` is inside" (what QuPath
  does; even-odd rule) gives the mask back exactly.
- The parts of a mask are its 4-connected components: a mask in several parts (including
  pixels touching only at a corner) becomes a ``MultiPolygon``, one polygon per part (they
  may touch at single points), a mask in one part a ``Polygon``.
- Each polygon is its outer ring followed by one inner ring per hole. A ring is closed (its
  last point repeats the first), has at least 4 points (a single pixel: 5), no repeated
  consecutive points and no collinear middle points. Orientation follows RFC 7946 in the
  x-right / y-up sense of the raw numbers (positive shoelace area for outer rings, negative
  for holes); QuPath ignores orientation. Rings of one polygon touch at most at single
  points, so the geometries are valid OGC / JTS geometries.

Outlines are traced with OpenCV's ``cv2.findContours`` (``RETR_CCOMP``, outer rings and their
holes) on the mask upsampled 2x: every traced sub-pixel ``p`` maps to the pixel corner
``p // 2`` (after a one sub-pixel padding), which turns OpenCV's pixel-centre chains into the
exact corner outline.
"""

import json
import math
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data.instance_map import NO_RULE, OverlapRule, paint_instance_map
from ..data.rle import decode_crop, mask_boxes, rle_to_text
from ..utils.atomic_files import write_text
from ..utils.errors import DatasetError

__all__ = [
    "GEOJSON_SUFFIX",
    "OBJECT_TYPES",
    "check_image_name",
    "checked_colors",
    "entry_category",
    "entry_crops",
    "entry_score",
    "feature_id",
    "geojson_path",
    "mask_to_geometry",
    "predictions_to_geojson",
    "write_geojson",
]

GEOJSON_SUFFIX = ".geojson"
# QuPath object types a feature can be: the default first.
OBJECT_TYPES = ("detection", "annotation")
# Namespace of the features' deterministic UUIDs.
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "seg_project/export/geojson")

Crop = Tuple[np.ndarray, int, int]


# ------------------------------------------------------------------------ entries


def check_image_name(image_name: str) -> str:
    """Return ``image_name`` if it can name one file or folder, else raise ``ValueError``."""
    if (not isinstance(image_name, str) or not image_name or image_name in (".", "..")
            or "/" in image_name or "\\" in image_name or "\0" in image_name):
        raise ValueError(f"image name {image_name!r} cannot name a file (it must be a non-empty "
                         "name without path separators)")
    return image_name


def entry_crops(entries: Sequence[Dict], where: str = "predictions",
                size: Optional[Tuple[int, int]] = None) -> List[Optional[Crop]]:
    """Decode the masks of prediction entries, each within its tight box.

    Args:
        entries: COCO result entries, each with a compressed RLE ``segmentation``
            (``{"size": [H, W], "counts": str or bytes}``).
        where: named in errors (e.g. the image name).
        size: ``(height, width)`` every mask must have; None: any.

    Returns:
        list: per entry ``(crop, x0, y0)`` (a ``bool`` crop and the image column / row of its
        top-left pixel), or None for an empty mask.

    Raises:
        DatasetError: an entry without an RLE segmentation, of another size than ``size``, or
            whose counts are not a valid RLE of its size.
    """
    rles = []
    for index, entry in enumerate(entries):
        segmentation = entry.get("segmentation") if isinstance(entry, dict) else None
        if not isinstance(segmentation, dict) or not {"size", "counts"} <= set(segmentation):
            raise DatasetError(where, f"entry {index} has no RLE segmentation "
                                      '({"size": [H, W], "counts": ...})')
        try:
            rle = rle_to_text(segmentation)
        except Exception as e:  # pycocotools raises several types for malformed counts
            raise DatasetError(where, f"entry {index}: unreadable segmentation: {e}") from e
        if size is not None and tuple(rle["size"]) != tuple(size):
            raise DatasetError(where, f"entry {index}: mask is {rle['size'][0]}x"
                                      f"{rle['size'][1]} but the image is {size[0]}x{size[1]}")
        rles.append(rle)
    if not rles:
        return []
    problems, boxes = mask_boxes(rles)
    crops: List[Optional[Crop]] = []
    for index, (rle, problem, box) in enumerate(zip(rles, problems, boxes)):
        if problem is not None:
            raise DatasetError(where, f"entry {index}: segmentation {problem}")
        x0, y0, w, h = (int(v) for v in box)
        if w == 0 or h == 0:
            crops.append(None)
            continue
        crops.append((decode_crop(rle, (x0, y0, x0 + w, y0 + h)), x0, y0))
    return crops


def entry_category(entry: Dict, index: int, num_classes: int, where: str) -> int:
    """The ``category_id`` (1..K) of an entry.

    Raises:
        DatasetError: missing, not an integer, or outside 1..``num_classes``.
    """
    category = entry.get("category_id")
    if isinstance(category, (bool, np.bool_)) or not isinstance(category, (int, np.integer)) \
            or not 1 <= category <= num_classes:
        raise DatasetError(where, f"entry {index}: category_id {category!r} is not a class "
                                  f"number 1..{num_classes}")
    return int(category)


def entry_score(entry: Dict, index: int, where: str) -> float:
    """The finite ``score`` of an entry.

    Raises:
        DatasetError: missing, not a number, NaN or infinite.
    """
    score = entry.get("score")
    try:
        value = float(score)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(score, (bool, str)) or not math.isfinite(value):
        raise DatasetError(where, f"entry {index}: score {score!r} is not a finite number")
    return value


# ------------------------------------------------------------------------ geometry


def _ring(points: np.ndarray, exterior: bool) -> List[List[int]]:
    """A closed ring from a traced cyclic chain of integer points: repeated and collinear
    points dropped, oriented (positive shoelace area for an exterior ring)."""
    while True:
        points = points[np.any(points != np.roll(points, 1, axis=0), axis=1)]
        before = points - np.roll(points, 1, axis=0)
        after = np.roll(points, -1, axis=0) - points
        turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
        if turn.all():
            break
        points = points[turn != 0]
    x, y = points[:, 0], points[:, 1]
    area2 = int(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
    if (area2 > 0) != exterior:
        points = points[::-1]
    ring = points.tolist()
    ring.append(ring[0])
    return ring


def _part_rings(part: np.ndarray, x0: int, y0: int) -> List[List[List[int]]]:
    """Outer ring and hole rings of one 4-connected part (a ``bool`` crop at ``(x0, y0)``)."""
    h, w = part.shape
    upsampled = np.zeros((2 * h + 2, 2 * w + 2), np.uint8)
    upsampled[1:-1, 1:-1] = part.repeat(2, axis=0).repeat(2, axis=1)
    contours, hierarchy = cv2.findContours(upsampled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    parents = hierarchy.reshape(-1, 4)[:, 3]
    outers = np.flatnonzero(parents < 0)
    if outers.size != 1:  # a 4-connected part has one outer border
        raise AssertionError(f"traced {outers.size} outer borders of one connected part")
    offset = np.array([x0, y0], np.int64)
    rings = []
    for index in [int(outers[0])] + np.flatnonzero(parents == outers[0]).tolist():
        # Padded sub-pixel p is sub-pixel p - 1 of the part; the pixel corner nearest to the
        # centre of that quarter pixel is (p - 1 + 1) // 2.
        chain = contours[index].reshape(-1, 2).astype(np.int64) // 2 + offset
        rings.append(_ring(chain, exterior=index == outers[0]))
    return rings


def mask_to_geometry(mask: np.ndarray, x0: int = 0, y0: int = 0) -> Optional[Dict]:
    """The GeoJSON geometry of a binary mask (see the module docstring for the conventions).

    Args:
        mask: 2-D array, non-zero = inside (a crop of the image, or the whole image).
        x0: image column of the mask's left column.
        y0: image row of the mask's top row.

    Returns:
        dict: ``{"type": "Polygon", "coordinates": [outer, *holes]}`` for a mask in one
        (4-connected) part, ``{"type": "MultiPolygon", "coordinates": [[outer, *holes], ...]}``
        for several, with integer ``[x, y]`` pixel-corner coordinates; None for an empty mask.

    Raises:
        ValueError: ``mask`` is not 2-D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    binary = (mask != 0).astype(np.uint8)
    if not binary.any():
        return None
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=4)
    polygons = []
    for label in range(1, count):
        left, top, width, height = (int(v) for v in stats[label, :4])
        part = labels[top:top + height, left:left + width] == label
        polygons.append(_part_rings(part, int(x0) + left, int(y0) + top))
    if len(polygons) == 1:
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


# ------------------------------------------------------------------------ features


def feature_id(image_name: str, index: int) -> str:
    """The deterministic UUID string of entry ``index`` of image ``image_name``."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{image_name}/{index}"))


def checked_colors(colors: Optional[Sequence], num_classes: int) -> List[List[int]]:
    """The first ``num_classes`` class colors as ``[r, g, b]`` ints 0..255.

    Args:
        colors: at least ``num_classes`` colors, or None:
            :func:`seg_project.data.catalog.distinct_colors` (which imports Detectron2).
        num_classes: K.

    Returns:
        list: K ``[r, g, b]`` lists.

    Raises:
        ValueError: fewer colors than classes, or a color that is not three ints 0..255.
    """
    if colors is None:
        from ..data.catalog import distinct_colors  # imports Detectron2: only when needed

        return distinct_colors(num_classes)
    colors = [list(color) for color in colors]
    if len(colors) < num_classes:
        raise ValueError(f"{len(colors)} colors given for {num_classes} classes")
    checked = []
    for color in colors[:num_classes]:
        if len(color) != 3 or not all(0 <= int(c) <= 255 and int(c) == c for c in color):
            raise ValueError(f"a class color must be three ints 0..255, got {color!r}")
        checked.append([int(c) for c in color])
    return checked


def _visible_crops(entries: Sequence[Dict], crops: List[Optional[Crop]], where: str,
                   rule: OverlapRule) -> List[Optional[Crop]]:
    """Each entry's pixels in the entries' instance map (None: it has none)."""
    sizes = {tuple(int(v) for v in e["segmentation"]["size"]) for e in entries}
    if len(sizes) > 1:
        raise DatasetError(where, f"the entries' masks are of several sizes {sorted(sizes)}: "
                                  "one image's predictions share one size")
    height, width = sizes.pop()
    scores = [entry_score(e, i, where) for i, e in enumerate(entries)]
    painted = paint_instance_map(crops, height, width, scores=scores, rule=rule)
    visible: List[Optional[Crop]] = [None] * len(entries)
    for label, index in enumerate(painted.order.tolist(), start=1):
        visible[index] = painted.visible_crop(label, crops[index])
    return visible


def predictions_to_geojson(entries: Sequence[Dict], class_names: Sequence[str],
                           colors: Optional[Sequence[Sequence[int]]] = None,
                           image_name: Optional[str] = None,
                           object_type: str = "detection",
                           rule: OverlapRule = NO_RULE) -> Dict:
    """The QuPath GeoJSON ``FeatureCollection`` of one image's predictions.

    The features are the instances of the entries' instance map
    (:func:`seg_project.data.instance_map.paint_instance_map`), as the label TIFFs: no pixel
    belongs to two features; an entry that keeps no pixel (covered by higher-scored ones, or
    dropped by ``rule``) has no feature, and one that keeps part of its mask has that part.

    Args:
        entries: the image's COCO result entries (``category_id`` 1..K, ``score``, compressed
            RLE ``segmentation``), used as given: thresholds are the caller's business.
        class_names: the K class names; ``category_id`` N is ``class_names[N - 1]``.
        colors: K ``[r, g, b]`` class colours (ints 0..255); default
            :func:`seg_project.data.catalog.distinct_colors` (which imports Detectron2).
        image_name: seeds the features' deterministic UUIDs (e.g. the image file's stem);
            default the entries' ``image_id``.
        object_type: the features' QuPath ``objectType``, one of :data:`OBJECT_TYPES`:
            ``"detection"`` (default) or ``"annotation"`` (editable in QuPath).
        rule: the overlap rule (default: none, the higher score wins contested pixels).

    Returns:
        dict: the ``FeatureCollection`` (JSON-ready), one ``Feature`` per entry that keeps
        pixels in the instance map, in entry order; ``{"type": "FeatureCollection",
        "features": []}`` for no entries.

    Raises:
        DatasetError: an entry with an invalid segmentation, category or score.
        ValueError: fewer colors than classes, a color that is not three ints 0..255, or an
            unknown ``object_type``.
    """
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object type must be one of {', '.join(OBJECT_TYPES)}, got "
                         f"{object_type!r}")
    class_colors = checked_colors(colors, len(class_names))
    if image_name is None:
        image_name = str(entries[0].get("image_id", "")) if entries else ""
    where = image_name or "predictions"
    features = []
    crops = entry_crops(entries, where)
    if entries:
        crops = _visible_crops(entries, crops, where, rule)
    for index, (entry, crop) in enumerate(zip(entries, crops)):
        category = entry_category(entry, index, len(class_names), where)
        score = entry_score(entry, index, where)
        if crop is None:
            continue
        features.append({
            "type": "Feature",
            "id": feature_id(image_name, index),
            "geometry": mask_to_geometry(*crop),
            "properties": {
                "objectType": object_type,
                "classification": {"name": str(class_names[category - 1]),
                                   "color": class_colors[category - 1]},
                "measurements": {"score": score},
                "isLocked": False,
            },
        })
    return {"type": "FeatureCollection", "features": features}


def geojson_path(out_dir, image_name: str) -> Path:
    """``<out_dir>/<image_name>.geojson``, the file :func:`write_geojson` is given by
    ``predict.py`` (for checking outputs before inference).

    Raises:
        ValueError: an image name that cannot name a file.
    """
    return Path(out_dir) / f"{check_image_name(image_name)}{GEOJSON_SUFFIX}"


def write_geojson(path, entries: Sequence[Dict], class_names: Sequence[str],
                  colors: Optional[Sequence[Sequence[int]]] = None,
                  image_name: Optional[str] = None, object_type: str = "detection",
                  rule: OverlapRule = NO_RULE) -> Path:
    """Write one image's predictions as a QuPath GeoJSON file, atomically.

    Args:
        path: the file to write (its folder is created if needed); an existing file is
            replaced (check beforehand, e.g. with ``utils.paths.check_output_file``).
        entries: the image's COCO result entries, see :func:`predictions_to_geojson`.
        class_names: the K class names.
        colors: K ``[r, g, b]`` class colours; default as :func:`predictions_to_geojson`.
        image_name: seeds the features' UUIDs; default the file's stem.
        object_type: ``"detection"`` (default) or ``"annotation"``, see
            :func:`predictions_to_geojson`.
        rule: the overlap rule (default: none).

    Returns:
        Path: ``path``.

    Raises:
        DatasetError: an entry with an invalid segmentation, category or score.
    """
    path = Path(path)
    collection = predictions_to_geojson(entries, class_names, colors,
                                        image_name=path.stem if image_name is None
                                        else image_name, object_type=object_type, rule=rule)
    return write_text(path, json.dumps(collection, separators=(",", ":")) + "\n")
