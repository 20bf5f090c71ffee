"""Instance-segmentation metrics of the pathology literature: Dice, AJI, AJI+, DQ/SQ/PQ, mPQ, F1.

Everything is computed on **instance maps**: one ``int32`` image per side in which every pixel
holds the label of the one instance covering it (0 = background). Overlapping masks are
resolved while painting (:func:`paint_instances`):

- predictions with ``score >= score_threshold`` (default :data:`DEFAULT_SCORE_THRESHOLD`,
  0.5) are painted in ascending score order, so a higher score wins a contested pixel (equal
  scores: the later one in the given order wins);
- the ground truth is painted in its given order, the later instance winning;
- an instance left with no pixel after painting no longer exists (it is neither a ground
  truth to find nor a prediction to count).

Per image (:func:`image_metrics`), from the table of overlapping (ground truth, prediction)
pairs with their intersections and the instances' areas (``IoU = |G ∩ P| / |G ∪ P|``):

- **Dice** (binary): ``2 |G ∩ P| / (|G| + |P|)`` of the foreground of the two maps.
- **AJI** (Aggregated Jaccard Index, Kumar et al. 2017): every ground-truth instance is paired
  with the prediction of highest IoU among those overlapping it (ties: the lowest prediction
  label); a prediction may serve several ground truths. ``AJI = Σ |G ∩ P_paired| /
  (Σ |G ∪ P_paired| + Σ |G_unpaired| + Σ |P_never_paired|)``: a ground truth overlapping no
  prediction adds its area to the union, and so does every prediction paired with no ground
  truth.
- **AJI+** (Graham et al. 2019): the same ratio, with a one-to-one pairing that maximises the
  total IoU (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``, on the instances
  that overlap anything), keeping pairs with IoU > 0; ground truths and predictions left
  unpaired add their areas to the union. A prediction is never counted twice.
- **DQ / SQ / PQ** (panoptic quality, Kirillov et al. 2019): TP are the pairs with IoU > 0.5
  (strictly; such a pairing is unique because each pixel belongs to one instance per map),
  FP the other predictions, FN the other ground truths. ``DQ = TP / (TP + FP/2 + FN/2)``,
  ``SQ`` = mean IoU of the TP pairs (0 without TP), ``PQ = DQ x SQ``.

Per split (:class:`PathologyAccumulator`): the per-image metrics above are averaged over
images (``PQ``, ``SQ``, ``DQ``, ``AJI``, ``AJI+``, ``Dice``), while detection and per-class
figures pool their counts over all images before dividing:

- **F1** (class-agnostic, IoU > 0.5): ``2 TP / (2 TP + FP + FN)`` with TP/FP/FN summed over
  images.
- **PQ per class** ``c``: the ground truths of class ``c`` are matched with the predictions of
  class ``c`` (in the painted maps, i.e. after overlaps were resolved) at IoU > 0.5;
  ``PQ_c = Σ IoU_c / (TP_c + FP_c/2 + FN_c/2)`` with all four summed over images; ``F1_c``
  likewise. A TP pair of the class-agnostic metrics whose two classes differ is an FN of the
  ground truth's class and an FP of the prediction's class.
- **mPQ**: the mean of ``PQ_c`` over the classes with any ground truth or prediction in the
  split.

Degenerate cases (documented choices):

- An image with neither ground-truth nor predicted instances (after painting) is perfect:
  Dice, AJI, AJI+, DQ, SQ and PQ are all 1.0, and it counts in the per-image means like any
  other image (its TP/FP/FN are 0, so it changes no pooled figure).
- Otherwise every ratio has a positive denominator: an image with ground truth but no
  prediction, or predictions but no ground truth, scores 0.0 on all six metrics.
- Pooled figures with nothing to pool are NaN: ``PQ-<class>`` and ``F1-<class>`` of a class with
  neither ground truth nor prediction in the split (left out of mPQ); ``F1`` when the split
  has no instance at all; ``mPQ`` when no class has any; every mean of an empty accumulator.

All values are fractions in ``[0, 1]``, as in the literature (not percentages).

Speed: pair tables come from one ``np.bincount`` (or ``np.unique``) over the combined labels
of the pixels where both maps are foreground, never from a loop over instance pairs; masks are
painted from their RLE with :func:`seg_project.data.rle.decode_crop`, inside each instance's
box only.
"""

import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util
from scipy.optimize import linear_sum_assignment
from tabulate import tabulate

from ..data.rle import decode_crop, to_bytes_rle

__all__ = [
    "DEFAULT_SCORE_THRESHOLD",
    "IOU_MATCH_THRESHOLD",
    "PathologyAccumulator",
    "format_table",
    "image_metrics",
    "paint_instances",
]

DEFAULT_SCORE_THRESHOLD = 0.5
# A (ground truth, prediction) pair is a detection match when its IoU is strictly above this.
IOU_MATCH_THRESHOLD = 0.5
# Per-image metrics averaged over images, in the order of the summary and the table.
_MEAN_KEYS = (("PQ", "pq"), ("SQ", "sq"), ("DQ", "dq"), ("AJI", "aji"), ("AJI+", "aji_plus"),
              ("Dice", "dice"))
# Labels up to this many times the pixel count are counted with bincount; larger, sparse
# labels go through np.unique (a sort) instead.
_BINCOUNT_FACTOR = 4

Mask = Union[Dict[str, Any], np.ndarray]


# ------------------------------------------------------------------------------- painting


def paint_instances(rles: Sequence[Mask], height: int, width: int,
                    scores: Optional[Sequence[float]] = None) -> np.ndarray:
    """Paint instance masks into one label map, resolving overlaps.

    Each RLE is decoded only inside its bounding box (:func:`pycocotools.mask.toBbox`, then
    :func:`seg_project.data.rle.decode_crop`), never to a full-size mask.

    Args:
        rles: the masks: COCO RLE dicts ``{"size": [height, width], "counts": str | bytes}``
            (a list of runs is accepted too) or full-size 2-D boolean arrays.
        height: image height.
        width: image width.
        scores: one score per mask. Given: masks are painted in ascending score order, so the
            higher score wins a contested pixel (equal scores: the later mask wins). ``None``:
            painted in the given order, the later mask winning.

    Returns:
        np.ndarray: ``(height, width)`` ``int32`` map; mask ``i`` (its index in ``rles``) has
        label ``i + 1``, 0 is background. A mask covered entirely by others has no pixel left.

    Raises:
        ValueError: a mask of another size than ``height x width``, a wrong number of scores,
            or an invalid RLE (the message names the problem).
    """
    height, width = int(height), int(width)
    labels = np.zeros((height, width), dtype=np.int32)
    n = len(rles)
    if scores is None:
        order = np.arange(n)
    else:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.size != n:
            raise ValueError(f"{scores.size} scores given for {n} masks")
        order = np.argsort(scores, kind="stable")  # stable: equal scores keep the given order
    if n == 0:
        return labels
    boxes = np.zeros((n, 4), dtype=np.int64)  # x0, y0, x1, y1 of the RLEs
    rle_rows = [i for i, m in enumerate(rles) if not isinstance(m, np.ndarray)]
    if rle_rows:
        encoded = []
        for i in rle_rows:
            size = [int(v) for v in rles[i]["size"]]
            if size != [height, width]:
                raise ValueError(f"mask {i} is of size {size[0]}x{size[1]}, the image is "
                                 f"{height}x{width}")
            encoded.append(to_bytes_rle(rles[i]))
        xywh = np.rint(mask_util.toBbox(encoded)).astype(np.int64).reshape(-1, 4)
        x0 = np.clip(xywh[:, 0], 0, width)
        y0 = np.clip(xywh[:, 1], 0, height)
        x1 = np.clip(xywh[:, 0] + xywh[:, 2], x0, width)
        y1 = np.clip(xywh[:, 1] + xywh[:, 3], y0, height)
        boxes[rle_rows] = np.stack([x0, y0, x1, y1], axis=1)
    for i in order.tolist():
        mask = rles[i]
        if isinstance(mask, np.ndarray):
            if mask.shape != (height, width):
                raise ValueError(f"mask {i} has shape {mask.shape}, the image is "
                                 f"{height}x{width}")
            labels[mask.astype(bool, copy=False)] = i + 1
            continue
        x0, y0, x1, y1 = boxes[i].tolist()
        # An empty box (an empty mask) is still decoded: decode_crop checks the counts.
        crop = decode_crop(mask, (x0, y0, x1, y1))
        labels[y0:y1, x0:x1][crop] = i + 1
    return labels


# ------------------------------------------------------------------------------ pair table


class _PairTable(NamedTuple):
    """The instances of two label maps and their overlaps.

    ``gt_ids`` / ``pred_ids``: the labels present (sorted); ``gt_areas`` / ``pred_areas``
    their pixel counts; ``pair_gt`` / ``pair_pred``: indices into those arrays of every
    overlapping pair, with ``pair_inter`` its intersection and ``pair_iou`` its IoU.
    """

    gt_ids: np.ndarray
    gt_areas: np.ndarray
    pred_ids: np.ndarray
    pred_areas: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    pair_inter: np.ndarray
    pair_iou: np.ndarray


def _label_counts(labels: np.ndarray) -> tuple:
    """The non-zero labels present in a flat map and their pixel counts."""
    if labels.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = int(labels.max())
    if top <= _BINCOUNT_FACTOR * labels.size + 1024:
        counts = np.bincount(labels, minlength=top + 1)
        counts[0] = 0
        ids = np.flatnonzero(counts)
        return ids, counts[ids]
    ids, counts = np.unique(labels, return_counts=True)
    keep = ids != 0
    return ids[keep].astype(np.int64), counts[keep]


def _as_label_map(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a 2-D label map, got shape {labels.shape}")
    if labels.dtype == bool:
        return labels.astype(np.int64).ravel()
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {labels.dtype}")
    flat = labels.ravel()
    if flat.size and int(flat.min()) < 0:
        raise ValueError(f"{name} holds negative labels")
    return flat.astype(np.int64, copy=False)


def _pair_table(gt_map: np.ndarray, pred_map: np.ndarray) -> _PairTable:
    """Instances, areas and overlaps of two label maps, all from counting over pixels."""
    gt_flat = _as_label_map(gt_map, "gt_map")
    pred_flat = _as_label_map(pred_map, "pred_map")
    if np.shape(gt_map) != np.shape(pred_map):
        raise ValueError(f"gt_map {np.shape(gt_map)} and pred_map {np.shape(pred_map)} differ "
                         "in shape")
    gt_ids, gt_areas = _label_counts(gt_flat)
    pred_ids, pred_areas = _label_counts(pred_flat)
    both = (gt_flat > 0) & (pred_flat > 0)
    pair_gt_label = pair_pred_label = pair_inter = np.zeros(0, np.int64)
    if gt_ids.size and pred_ids.size and both.any():
        stride = int(pred_ids[-1]) + 1
        keys = gt_flat[both] * stride + pred_flat[both]  # < 2**62 for int32 labels
        num_keys = (int(gt_ids[-1]) + 1) * stride
        if num_keys <= _BINCOUNT_FACTOR * gt_flat.size + 1024:
            counts = np.bincount(keys, minlength=num_keys)
            keys = np.flatnonzero(counts)
            pair_inter = counts[keys]
        else:
            keys, pair_inter = np.unique(keys, return_counts=True)
        pair_gt_label, pair_pred_label = np.divmod(keys, stride)
    pair_gt = np.searchsorted(gt_ids, pair_gt_label)
    pair_pred = np.searchsorted(pred_ids, pair_pred_label)
    union = gt_areas[pair_gt] + pred_areas[pair_pred] - pair_inter
    pair_iou = pair_inter / np.maximum(union, 1)
    return _PairTable(gt_ids, gt_areas, pred_ids, pred_areas, pair_gt, pair_pred,
                      pair_inter.astype(np.int64), pair_iou)


# --------------------------------------------------------------------------- per image


def _aji_ratio(table: _PairTable, pairs: np.ndarray) -> float:
    """Aggregated Jaccard ratio of a pairing: ``pairs`` indexes the table's pairs, each
    ground truth at most once (a prediction may appear several times)."""
    pair_gt, pair_pred = table.pair_gt[pairs], table.pair_pred[pairs]
    inter = table.pair_inter[pairs]
    union = table.gt_areas[pair_gt] + table.pred_areas[pair_pred] - inter
    gt_paired = np.zeros(table.gt_ids.size, bool)
    gt_paired[pair_gt] = True
    pred_paired = np.zeros(table.pred_ids.size, bool)
    pred_paired[pair_pred] = True
    total_union = (int(union.sum()) + int(table.gt_areas[~gt_paired].sum())
                   + int(table.pred_areas[~pred_paired].sum()))
    return int(inter.sum()) / total_union


def _aji_pairs(table: _PairTable) -> np.ndarray:
    """For every ground truth with an overlap, its pair of highest IoU (ties: the lowest
    prediction label)."""
    if table.pair_iou.size == 0:
        return np.zeros(0, np.int64)
    # Sorted by ground truth, then IoU descending, then prediction ascending: the first pair
    # of each ground truth is its best.
    order = np.lexsort((table.pair_pred, -table.pair_iou, table.pair_gt))
    gt_sorted = table.pair_gt[order]
    first = np.ones(order.size, bool)
    first[1:] = gt_sorted[1:] != gt_sorted[:-1]
    return order[first]


def _aji_plus_pairs(table: _PairTable) -> np.ndarray:
    """One-to-one pairs of maximal total IoU (Hungarian), among the overlapping instances."""
    if table.pair_iou.size == 0:
        return np.zeros(0, np.int64)
    rows, pair_row = np.unique(table.pair_gt, return_inverse=True)
    cols, pair_col = np.unique(table.pair_pred, return_inverse=True)
    pair_row, pair_col = pair_row.reshape(-1), pair_col.reshape(-1)
    pair_index = np.full((rows.size, cols.size), -1, dtype=np.int64)
    pair_index[pair_row, pair_col] = np.arange(table.pair_iou.size)
    iou = np.zeros((rows.size, cols.size), dtype=np.float64)
    iou[pair_row, pair_col] = table.pair_iou
    chosen_rows, chosen_cols = linear_sum_assignment(iou, maximize=True)
    chosen = pair_index[chosen_rows, chosen_cols]
    return chosen[chosen >= 0]  # only overlapping pairs (IoU > 0) are kept


def _image_metrics(table: _PairTable) -> Dict[str, float]:
    num_gt, num_pred = table.gt_ids.size, table.pred_ids.size
    matched = table.pair_iou > IOU_MATCH_THRESHOLD
    tp = int(matched.sum())
    fp, fn = num_pred - tp, num_gt - tp
    iou_sum = float(table.pair_iou[matched].sum())
    if num_gt == 0 and num_pred == 0:
        dice = aji = aji_plus = dq = sq = pq = 1.0
    else:
        foreground = int(table.gt_areas.sum()) + int(table.pred_areas.sum())
        dice = 2.0 * int(table.pair_inter.sum()) / foreground
        aji = _aji_ratio(table, _aji_pairs(table))
        aji_plus = _aji_ratio(table, _aji_plus_pairs(table))
        dq = tp / (tp + 0.5 * fp + 0.5 * fn)
        sq = iou_sum / tp if tp else 0.0
        pq = dq * sq
    return {"dice": dice, "aji": aji, "aji_plus": aji_plus, "dq": dq, "sq": sq, "pq": pq,
            "tp": tp, "fp": fp, "fn": fn, "iou_sum": iou_sum}


def image_metrics(gt_map: np.ndarray, pred_map: np.ndarray) -> Dict[str, float]:
    """Class-agnostic metrics of one image's painted instance maps.

    Args:
        gt_map: 2-D integer map of ground-truth instances (0 = background; any non-negative
            labels, not necessarily contiguous), e.g. from :func:`paint_instances`.
        pred_map: the predictions' map, same shape.

    Returns:
        dict: ``dice``, ``aji``, ``aji_plus``, ``dq``, ``sq``, ``pq`` (fractions in [0, 1]),
        ``tp``, ``fp``, ``fn`` (instance counts at IoU > 0.5) and ``iou_sum`` (the IoUs of the
        TP pairs added up). An image with no instance on either side scores 1.0 everywhere
        (see the module docstring).

    Raises:
        ValueError: maps that are not 2-D, differ in shape, are not integer or hold negative
            labels.
    """
    return _image_metrics(_pair_table(gt_map, pred_map))


# ------------------------------------------------------------------------------ per split


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator > 0 else math.nan


class PathologyAccumulator:
    """Collects per-image metrics and per-class counts over a split, then summarises them.

    Picklable: accumulators of several processes can be gathered and combined with
    :meth:`merge` (or through :meth:`state` / :meth:`from_states`).

    Attributes:
        class_names: the K class names; classes are numbered 0..K-1.
        score_threshold: predictions scoring below it are ignored.
        per_image: one dict per added image, in add order: :func:`image_metrics`'s keys plus
            ``image_id``, ``num_gt`` (ground-truth instances given) and ``num_pred``
            (predictions at or above the threshold, before painting).
    """

    def __init__(self, class_names: Sequence[str],
                 score_threshold: float = DEFAULT_SCORE_THRESHOLD):
        """
        Args:
            class_names: the K class names (class ``k`` is ``class_names[k]``).
            score_threshold: predictions with ``score >= score_threshold`` are evaluated.
        """
        self.class_names: List[str] = [str(name) for name in class_names]
        self.score_threshold = float(score_threshold)
        self.per_image: List[Dict[str, Any]] = []
        num_classes = len(self.class_names)
        self._tp = np.zeros(num_classes, np.int64)
        self._fp = np.zeros(num_classes, np.int64)
        self._fn = np.zeros(num_classes, np.int64)
        self._iou_sum = np.zeros(num_classes, np.float64)

    def _classes(self, classes: Sequence[int], count: int, what: str) -> np.ndarray:
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        if classes.size != count:
            raise ValueError(f"{classes.size} {what} classes given for {count} instances")
        if classes.size and (classes.min() < 0 or classes.max() >= len(self.class_names)):
            raise ValueError(f"{what} classes must be in 0..{len(self.class_names) - 1}, got "
                             f"{int(classes.min())}..{int(classes.max())}")
        return classes

    def add_image(self, image_id: Any, height: int, width: int, gt_rles: Sequence[Mask],
                  gt_classes: Sequence[int], pred_rles: Sequence[Mask],
                  pred_classes: Sequence[int], pred_scores: Sequence[float]) -> Dict[str, Any]:
        """Evaluate one image and add it to the split.

        Args:
            image_id: the image's id (kept in :attr:`per_image`).
            height: image height.
            width: image width.
            gt_rles: ground-truth masks (COCO RLE dicts or full-size boolean arrays), painted in
                this order (later wins).
            gt_classes: their classes, in 0..K-1.
            pred_rles: predicted masks.
            pred_classes: their classes, in 0..K-1.
            pred_scores: their scores; those below :attr:`score_threshold` are dropped, the
                rest painted in ascending score order.

        Returns:
            dict: the image's metrics (see :attr:`per_image`), also stored.

        Raises:
            ValueError: mismatched lengths, classes out of range, masks of the wrong size or
                invalid RLEs.
        """
        gt_classes = self._classes(gt_classes, len(gt_rles), "ground-truth")
        pred_classes = self._classes(pred_classes, len(pred_rles), "predicted")
        scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if scores.size != len(pred_rles):
            raise ValueError(f"{scores.size} scores given for {len(pred_rles)} predictions")
        kept = np.flatnonzero(scores >= self.score_threshold)
        gt_map = paint_instances(gt_rles, height, width)
        pred_map = paint_instances([pred_rles[i] for i in kept.tolist()], height, width,
                                   scores=scores[kept])
        table = _pair_table(gt_map, pred_map)
        metrics = _image_metrics(table)
        self._add_class_counts(table, gt_classes, pred_classes[kept])
        record = {"image_id": image_id, "num_gt": len(gt_rles), "num_pred": int(kept.size)}
        record.update(metrics)
        self.per_image.append(record)
        return record

    def _add_class_counts(self, table: _PairTable, gt_classes: np.ndarray,
                          pred_classes: np.ndarray) -> None:
        """Per-class TP/FP/FN/IoU sums of one image: same-class pairs at IoU > 0.5."""
        num_classes = len(self.class_names)
        gt_class = gt_classes[table.gt_ids - 1]  # label i + 1 is instance i
        pred_class = pred_classes[table.pred_ids - 1]
        pair_gt_class = gt_class[table.pair_gt]
        matched = ((table.pair_iou > IOU_MATCH_THRESHOLD)
                   & (pair_gt_class == pred_class[table.pair_pred]))
        tp = np.bincount(pair_gt_class[matched], minlength=num_classes)
        self._tp += tp
        self._iou_sum += np.bincount(pair_gt_class[matched], weights=table.pair_iou[matched],
                                     minlength=num_classes)
        self._fn += np.bincount(gt_class, minlength=num_classes) - tp
        self._fp += np.bincount(pred_class, minlength=num_classes) - tp

    def class_counts(self) -> Dict[str, np.ndarray]:
        """The pooled per-class counts: ``tp``, ``fp``, ``fn`` and ``iou_sum``, arrays of K."""
        return {"tp": self._tp.copy(), "fp": self._fp.copy(), "fn": self._fn.copy(),
                "iou_sum": self._iou_sum.copy()}

    def summarize(self) -> Dict[str, float]:
        """The split's figures.

        Returns:
            dict: ``PQ``, ``SQ``, ``DQ``, ``AJI``, ``AJI+``, ``Dice`` (means over images),
            ``F1`` (pooled, class-agnostic), ``mPQ``, ``PQ-<class name>`` and
            ``F1-<class name>`` per class (NaN for a class with neither ground truth nor
            prediction), and ``num_images``. Fractions in [0, 1]; NaN where undefined (see the
            module docstring).
        """
        summary: Dict[str, float] = {}
        for key, field in _MEAN_KEYS:
            values = [record[field] for record in self.per_image]
            summary[key] = float(np.mean(values)) if values else math.nan
        tp = sum(record["tp"] for record in self.per_image)
        fp = sum(record["fp"] for record in self.per_image)
        fn = sum(record["fn"] for record in self.per_image)
        summary["F1"] = _ratio(2 * tp, 2 * tp + fp + fn)
        class_pq = [_ratio(self._iou_sum[c], self._tp[c] + 0.5 * self._fp[c] + 0.5 * self._fn[c])
                    for c in range(len(self.class_names))]
        present = [pq for pq in class_pq if not math.isnan(pq)]
        summary["mPQ"] = float(np.mean(present)) if present else math.nan
        for c, name in enumerate(self.class_names):
            summary[f"PQ-{name}"] = class_pq[c]
        for c, name in enumerate(self.class_names):
            summary[f"F1-{name}"] = _ratio(2 * self._tp[c],
                                           2 * self._tp[c] + self._fp[c] + self._fn[c])
        summary["num_images"] = len(self.per_image)
        return summary

    def state(self) -> Dict[str, Any]:
        """A picklable snapshot (plain lists and floats) for :meth:`from_states`."""
        return {"class_names": list(self.class_names), "score_threshold": self.score_threshold,
                "per_image": [dict(record) for record in self.per_image],
                "tp": self._tp.tolist(), "fp": self._fp.tolist(), "fn": self._fn.tolist(),
                "iou_sum": self._iou_sum.tolist()}

    @classmethod
    def from_states(cls, states: Sequence[Dict[str, Any]]) -> "PathologyAccumulator":
        """One accumulator holding the images of several :meth:`state` snapshots, in order.

        Raises:
            ValueError: no states, or states of different classes or score thresholds.
        """
        if not states:
            raise ValueError("from_states needs at least one state")
        merged = cls(states[0]["class_names"], states[0]["score_threshold"])
        for state in states:
            merged._merge_state(state)
        return merged

    def merge(self, other: "PathologyAccumulator") -> "PathologyAccumulator":
        """Add another accumulator's images (after this one's) and class counts; returns self.

        Raises:
            ValueError: the two differ in classes or score threshold.
        """
        self._merge_state(other.state())
        return self

    def _merge_state(self, state: Dict[str, Any]) -> None:
        if list(state["class_names"]) != self.class_names:
            raise ValueError(f"cannot merge accumulators of classes {state['class_names']} "
                             f"and {self.class_names}")
        if float(state["score_threshold"]) != self.score_threshold:
            raise ValueError(f"cannot merge accumulators of score thresholds "
                             f"{state['score_threshold']} and {self.score_threshold}")
        self.per_image.extend(dict(record) for record in state["per_image"])
        self._tp += np.asarray(state["tp"], np.int64)
        self._fp += np.asarray(state["fp"], np.int64)
        self._fn += np.asarray(state["fn"], np.int64)
        self._iou_sum += np.asarray(state["iou_sum"], np.float64)


# ---------------------------------------------------------------------------------- table


def format_table(summary: Dict[str, float], class_names: Sequence[str]) -> str:
    """A printable summary for logs: the split's figures, then PQ and F1 per class.

    Args:
        summary: :meth:`PathologyAccumulator.summarize`'s dict.
        class_names: the class names, in class order.

    Returns:
        str: two small tables (``tabulate``'s ``pipe`` format), values with 4 decimals.
    """
    overall = ["PQ", "SQ", "DQ", "AJI", "AJI+", "Dice", "F1", "mPQ"]
    head = ["images"] + [key for key in overall if key in summary]
    row = [summary.get("num_images", "")] + [summary[key] for key in head[1:]]
    text = tabulate([row], headers=head, tablefmt="pipe", floatfmt=".4f", missingval="-")
    rows = [[name, summary.get(f"PQ-{name}", math.nan), summary.get(f"F1-{name}", math.nan)]
            for name in class_names]
    if rows:
        text += "\n\n" + tabulate(rows, headers=["class", "PQ", "F1"], tablefmt="pipe",
                                  floatfmt=".4f")
    return text
