"""One image's instances as one instance map: every pixel belongs to at most one instance.

The pathology metrics, the label TIFFs, the GeoJSON, the pictures and the run report all see
"the cells" of an image through :func:`paint_instance_map`, so they all see the same ones.

How the map is painted (the overlap rule, :class:`OverlapRule`; class-agnostic, since one
nucleus has one class whatever class each detection gave it):

1. The candidates are taken in descending score order (equal scores: the later one in the
   given order first). Without scores (the ground truth) the later one comes first: the map
   is that of painting the masks in the given order, the later winning.
2. A candidate with an empty mask gets no label.
3. ``max_mask_iou`` T (below 1): a candidate whose mask IoU with an instance already kept
   exceeds T is dropped (mask non-maximum suppression on the full masks).
4. The candidate takes the pixels that no kept instance holds. If that leaves it no pixel,
   or fewer than ``min_visible_fraction`` F of its own pixels, it is dropped entirely: its
   pixels stay free for the candidates after it.
5. The kept instances are labelled 1..n in that order (1 = the highest score).

``F = 0`` and ``T = 1`` (:data:`NO_RULE`) is the painting the project did before the rule:
the higher score wins a contested pixel and only an instance covered entirely vanishes. A
duplicate detection of a cell (two classes for one nucleus, say, since Detectron2's NMS runs
per class) then survives as a sliver around the higher-scored one; ``F = 0.5`` drops it.

Masks are handled as crops (``(bool crop, x0, y0)``, see :func:`mask_crops`), never at full
image size.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .rle import decode_crop, mask_boxes, to_bytes_rle

__all__ = [
    "Crop",
    "DEFAULT_RULE",
    "InstanceMap",
    "NO_RULE",
    "OverlapRule",
    "cell_entries",
    "mask_crops",
    "paint_instance_map",
]

# A mask as its tight box's content: (bool crop, image column x0, image row y0).
Crop = Tuple[np.ndarray, int, int]
Mask = Union[Dict[str, Any], np.ndarray]


@dataclass(frozen=True)
class OverlapRule:
    """Which overlapping instances an instance map keeps (see the module docstring).

    Attributes:
        min_visible_fraction: F in [0, 1]: an instance keeping fewer than this fraction of its
            own pixels after the higher-scored ones took theirs is dropped (0: only instances
            left with no pixel are).
        max_mask_iou: T in (0, 1]: an instance whose mask IoU with a higher-scored kept one
            exceeds this is dropped (1: never).
    """

    min_visible_fraction: float = 0.0
    max_mask_iou: float = 1.0

    def __post_init__(self):
        if not 0.0 <= float(self.min_visible_fraction) <= 1.0:
            raise ValueError(f"min_visible_fraction must lie in [0, 1], got "
                             f"{self.min_visible_fraction}")
        if not 0.0 < float(self.max_mask_iou) <= 1.0:
            raise ValueError(f"max_mask_iou must lie in (0, 1], got {self.max_mask_iou}")

    @classmethod
    def from_config(cls, cfg) -> "OverlapRule":
        """The rule of a config's ``TEST.INSTANCE_MAP`` (``MIN_VISIBLE_FRACTION``,
        ``MAX_MASK_IOU``).

        Args:
            cfg: a Detectron2 config, or a run's ``config.yaml`` read as a dict (a key it
                lacks, as older runs' do, takes :data:`DEFAULT_RULE`'s value).

        Raises:
            ValueError: a value out of range, naming the key.
        """
        node = cfg.get("TEST", {}).get("INSTANCE_MAP", {})
        try:
            return cls(float(node.get("MIN_VISIBLE_FRACTION",
                                      DEFAULT_RULE.min_visible_fraction)),
                       float(node.get("MAX_MASK_IOU", DEFAULT_RULE.max_mask_iou)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"TEST.INSTANCE_MAP: {e}") from None

    @classmethod
    def from_dict(cls, data: Dict) -> "OverlapRule":
        """The rule of :meth:`to_dict`'s dict (as stored in ``operating_point.json``)."""
        return cls(float(data["min_visible_fraction"]), float(data["max_mask_iou"]))

    def to_dict(self) -> Dict[str, float]:
        """``{"min_visible_fraction": F, "max_mask_iou": T}``."""
        return {"min_visible_fraction": float(self.min_visible_fraction),
                "max_mask_iou": float(self.max_mask_iou)}

    def describe(self) -> str:
        """A short phrase for tables and logs, e.g. ``"overlaps: drop < 50% visible"``."""
        parts = []
        if self.max_mask_iou < 1.0:
            parts.append(f"drop mask IoU > {self.max_mask_iou:g}")
        if self.min_visible_fraction > 0.0:
            parts.append(f"drop < {100 * self.min_visible_fraction:g}% visible")
        return "overlaps: " + (", ".join(parts) if parts else "higher score wins, none dropped")


# The painting without the rule: the higher score wins a contested pixel, nothing is dropped
# unless it is covered entirely.
NO_RULE = OverlapRule()
# The rule of the config's defaults (TEST.INSTANCE_MAP), also used where no config is given:
# F = 0.7 had the highest cross-validated PQ of the 16 rules of bench_cells.py --rule-grid on
# CoNSeP test/ for both models measured (benchmarks/ACCURACY.md), T did not add to it.
DEFAULT_RULE = OverlapRule(min_visible_fraction=0.7, max_mask_iou=1.0)


class InstanceMap(NamedTuple):
    """An image's painted instances.

    Attributes:
        instances: ``(H, W)`` ``int32``: 0 background, 1..n the kept instances in painting
            order (1 = the highest score).
        classes: ``(H, W)`` ``int32`` class of each pixel's instance (0 background), or None
            when no classes were given.
        order: ``int64`` array of n: ``order[k - 1]`` is the index (among the given masks)
            of instance ``k``.
    """

    instances: np.ndarray
    classes: Optional[np.ndarray]
    order: np.ndarray

    def kept(self) -> np.ndarray:
        """The indices of the kept masks, in increasing index order."""
        return np.sort(self.order)

    def visible_crop(self, label: int, crop: Crop) -> Crop:
        """The pixels instance ``label`` holds in the map, within its mask's box ``crop``."""
        mask, x0, y0 = crop
        h, w = mask.shape
        return self.instances[y0:y0 + h, x0:x0 + w] == label, x0, y0


def mask_crops(masks: Sequence[Mask], height: int, width: int) -> List[Optional[Crop]]:
    """Each mask as the crop of its tight box; None for an empty mask.

    RLEs are decoded inside their box only (:func:`seg_project.data.rle.decode_crop`).

    Args:
        masks: COCO RLE dicts ``{"size": [height, width], "counts": str | bytes | list}`` or
            full-size 2-D arrays (non-zero = inside).
        height: the image's height.
        width: the image's width.

    Returns:
        list: per mask ``(bool crop, x0, y0)`` or None.

    Raises:
        ValueError: a mask of another size, or an RLE whose counts are invalid (the message
            names the mask's index and the problem).
    """
    height, width = int(height), int(width)
    crops: List[Optional[Crop]] = [None] * len(masks)
    rows, rles = [], []
    for index, mask in enumerate(masks):
        if isinstance(mask, np.ndarray):
            if mask.shape != (height, width):
                raise ValueError(f"mask {index} has shape {mask.shape}, the image is "
                                 f"{height}x{width}")
            ys, xs = np.nonzero(mask)
            if ys.size:
                y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
                crops[index] = (mask[y0:y1, x0:x1] != 0, x0, y0)
            continue
        size = [int(v) for v in mask["size"]]
        if size != [height, width]:
            raise ValueError(f"mask {index} is of size {size[0]}x{size[1]}, the image is "
                             f"{height}x{width}")
        rows.append(index)
        rles.append(to_bytes_rle(mask))
    if not rles:
        return crops
    problems, boxes = mask_boxes(rles)
    for index, rle, problem, box in zip(rows, rles, problems, boxes):
        if problem is not None:
            raise ValueError(f"mask {index}: invalid RLE: {problem}")
        x0, y0, w, h = (int(v) for v in box)
        if w and h:
            crops[index] = (decode_crop(rle, (x0, y0, x0 + w, y0 + h)), x0, y0)
    return crops


def _painting_order(count: int, scores: Optional[Sequence[float]]) -> np.ndarray:
    """Descending score, equal scores the later first; no scores: the later first."""
    if scores is None:
        return np.arange(count)[::-1]
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size != count:
        raise ValueError(f"{scores.size} scores given for {count} masks")
    # The reverse of a stable ascending sort: ties come out later-first.
    return np.argsort(scores, kind="stable")[::-1]


def _iou_above(crop: Crop, area: int, box: Tuple[int, int, int, int], kept_crops: List[Crop],
               kept_boxes: np.ndarray, kept_areas: np.ndarray, limit: float) -> bool:
    """Whether the mask IoU of ``crop`` with any kept mask exceeds ``limit``."""
    x0, y0, x1, y1 = box
    count = len(kept_crops)
    others = kept_boxes[:count]
    near = np.flatnonzero((others[:, 0] < x1) & (others[:, 2] > x0)
                          & (others[:, 1] < y1) & (others[:, 3] > y0))
    mask = crop[0]
    for j in near.tolist():
        other, ox0, oy0 = kept_crops[j]
        ix0, iy0 = max(x0, ox0), max(y0, oy0)
        ix1, iy1 = min(x1, ox0 + other.shape[1]), min(y1, oy0 + other.shape[0])
        inter = np.count_nonzero(mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
                                 & other[iy0 - oy0:iy1 - oy0, ix0 - ox0:ix1 - ox0])
        if inter and inter > limit * (area + int(kept_areas[j]) - inter):
            return True
    return False


def paint_instance_map(crops: Sequence[Optional[Crop]], height: int, width: int,
                       scores: Optional[Sequence[float]] = None,
                       classes: Optional[Sequence[int]] = None,
                       rule: OverlapRule = NO_RULE) -> InstanceMap:
    """Paint masks into one instance map under the overlap rule (see the module docstring).

    Args:
        crops: the masks as crops inside the image (:func:`mask_crops`); None = empty.
        height: the image's height.
        width: the image's width.
        scores: one per mask: painted in descending score order. None: the later mask
            first (the ground truth: painting in the given order, the later winning).
        classes: one class number per mask, painted into :attr:`InstanceMap.classes` (use
            numbers above 0: 0 is the background); None: no class map.
        rule: which overlapping instances are dropped; default :data:`NO_RULE`.

    Returns:
        InstanceMap: the labels 1..n, the class map and which mask each label is.

    Raises:
        ValueError: a wrong number of scores or classes.
    """
    height, width = int(height), int(width)
    count = len(crops)
    order = _painting_order(count, scores)
    if classes is not None:
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        if classes.size != count:
            raise ValueError(f"{classes.size} classes given for {count} masks")
    instances = np.zeros((height, width), np.int32)
    class_map = np.zeros((height, width), np.int32) if classes is not None else None
    fraction, iou_limit = float(rule.min_visible_fraction), float(rule.max_mask_iou)
    use_iou = iou_limit < 1.0
    kept: List[int] = []
    kept_crops: List[Crop] = []
    kept_boxes = np.zeros((count, 4), np.int64)
    kept_areas = np.zeros(count, np.int64)
    for index in order.tolist():
        crop = crops[index]
        if crop is None:
            continue
        mask, x0, y0 = crop
        h, w = mask.shape
        area = int(np.count_nonzero(mask))
        if area == 0:
            continue
        box = (x0, y0, x0 + w, y0 + h)
        if use_iou and kept and _iou_above(crop, area, box, kept_crops, kept_boxes,
                                           kept_areas, iou_limit):
            continue
        region = instances[y0:y0 + h, x0:x0 + w]
        free = mask & (region == 0)
        visible = int(np.count_nonzero(free))
        if visible == 0 or visible < fraction * area:
            continue
        if use_iou:
            kept_boxes[len(kept)] = box
            kept_areas[len(kept)] = area
            kept_crops.append(crop)
        kept.append(index)
        region[free] = len(kept)
        if class_map is not None:
            class_map[y0:y0 + h, x0:x0 + w][free] = classes[index]
    return InstanceMap(instances, class_map, np.asarray(kept, np.int64))


def cell_entries(entries: Sequence[Dict], height: int, width: int, score_threshold: float,
                 rule: OverlapRule = NO_RULE) -> List[Dict]:
    """The result entries of one image that are cells: those scoring at least
    ``score_threshold`` that keep pixels in their instance map under ``rule``, in the given
    order (with their full masks, for what compares masks as given).

    Args:
        entries: COCO result entries with RLE ``segmentation`` of ``height`` x ``width``
            (entries without one are left out).
        height: the image's height.
        width: the image's width.
        score_threshold: the cells' least score.
        rule: the overlap rule.

    Raises:
        ValueError: a mask of another size or an invalid RLE.
    """
    passing = [e for e in entries
               if "segmentation" in e and float(e["score"]) >= score_threshold]
    painted = paint_instance_map(mask_crops([e["segmentation"] for e in passing], height, width),
                                 height, width, scores=[float(e["score"]) for e in passing],
                                 rule=rule)
    return [passing[i] for i in painted.kept().tolist()]
