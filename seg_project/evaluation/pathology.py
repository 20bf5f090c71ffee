"""Instance-segmentation metrics of the pathology literature: Dice, AJI, AJI+, DQ/SQ/PQ, mPQ, F1.

Everything is computed on **instance maps**: one ``int32`` image per side in which every pixel
holds the label of the one instance covering it (0 = background), painted by
:func:`seg_project.data.instance_map.paint_instance_map`, the painter of every output that
shows "the cells":

- predictions with ``score >= score_threshold`` (default :data:`DEFAULT_SCORE_THRESHOLD`,
  0.5; tools pass the run's operating point, see :mod:`seg_project.data.score_threshold`)
  are painted in descending score order under the accumulator's overlap rule
  (:class:`~seg_project.data.instance_map.OverlapRule`: the higher score wins a contested
  pixel; an instance left with fewer than ``min_visible_fraction`` of its pixels, or whose
  mask IoU with a higher-scored kept one exceeds ``max_mask_iou``, is dropped);
- the ground truth is painted in its given order, the later instance winning, without the
  rule;
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
decoded from their RLE inside each instance's box only
(:func:`seg_project.data.instance_map.mask_crops`), once per image however many thresholds
are scored (:meth:`PathologyAccumulator.add_crops`).
"""

import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np
from scipy.optimize import linear_sum_assignment
from tabulate import tabulate

from ..data.instance_map import (
    NO_RULE,
    Crop,
    InstanceMap,
    OverlapRule,
    mask_crops,
    paint_instance_map,
)
from ..data.score_threshold import DEFAULT_SCORE_THRESHOLD

__all__ = [
    "DEFAULT_SCORE_THRESHOLD",
    "IOU_MATCH_THRESHOLD",
    "PathologyAccumulator",
    "format_table",
    "image_metrics",
    "paint_ground_truth",
    "setting_text",
    "summary_setting",
]

# A (ground truth, prediction) pair is a detection match when its IoU is strictly above this.
IOU_MATCH_THRESHOLD = 0.5
# Per-image metrics averaged over images, in the order of the summary and the table.
_MEAN_KEYS = (("PQ", "pq"), ("SQ", "sq"), ("DQ", "dq"), ("AJI", "aji"), ("AJI+", "aji_plus"),
              ("Dice", "dice"))
# Labels up to this many times the pixel count are counted with bincount; larger, sparse
# labels go through np.unique (a sort) instead.
_BINCOUNT_FACTOR = 4

Mask = Union[Dict[str, Any], np.ndarray]


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
            labels, not necessarily contiguous), e.g. an :class:`InstanceMap`'s ``instances``.
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


def paint_ground_truth(masks: Sequence[Mask], height: int, width: int) -> InstanceMap:
    """The ground truth's instance map: painted in the given order, the later instance
    winning, without the overlap rule.

    Args:
        masks: COCO RLE dicts or full-size boolean arrays.
        height: image height.
        width: image width.

    Raises:
        ValueError: a mask of the wrong size or an invalid RLE.
    """
    return paint_instance_map(mask_crops(masks, height, width), height, width)


# ------------------------------------------------------------------------------ per split


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator > 0 else math.nan


def setting_text(score_threshold: float, rule: OverlapRule) -> str:
    """Which predictions the metrics count, for every table that prints them:
    ``"score >= 0.5; overlaps: drop < 50% visible"`` (NaN threshold: ``"score >= several"``,
    a split pooled over folds of other thresholds)."""
    value = "several" if math.isnan(score_threshold) else f"{score_threshold:g}"
    return f"score >= {value}; {rule.describe()}"


class PathologyAccumulator:
    """Collects per-image metrics and per-class counts over a split, then summarises them.

    Picklable: accumulators of several processes can be gathered and combined with
    :meth:`merge` (or through :meth:`state` / :meth:`from_states`).

    Attributes:
        class_names: the K class names; classes are numbered 0..K-1.
        score_threshold: predictions scoring below it are ignored (NaN: images of several
            thresholds, see :meth:`from_states`).
        rule: the overlap rule the predictions are painted with.
        per_image: one dict per added image, in add order: :func:`image_metrics`'s keys plus
            ``image_id``, ``num_gt`` (ground-truth instances given) and ``num_pred``
            (predictions at or above the threshold, before painting).
    """

    def __init__(self, class_names: Sequence[str],
                 score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                 rule: OverlapRule = NO_RULE):
        """
        Args:
            class_names: the K class names (class ``k`` is ``class_names[k]``).
            score_threshold: predictions with ``score >= score_threshold`` are evaluated.
            rule: the overlap rule of the predictions' instance maps (default: none).
        """
        self.class_names: List[str] = [str(name) for name in class_names]
        self.score_threshold = float(score_threshold)
        self.rule = rule
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
                rest painted in descending score order under :attr:`rule`.

        Returns:
            dict: the image's metrics (see :attr:`per_image`), also stored.

        Raises:
            ValueError: mismatched lengths, classes out of range, masks of the wrong size or
                invalid RLEs.
        """
        scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if scores.size != len(pred_rles):
            raise ValueError(f"{scores.size} scores given for {len(pred_rles)} predictions")
        gt_classes = self._classes(gt_classes, len(gt_rles), "ground-truth")
        gt_map = paint_ground_truth(gt_rles, height, width)
        return self.add_crops(image_id, gt_map, gt_classes, mask_crops(pred_rles, height, width),
                              pred_classes, scores, num_gt=len(gt_rles))

    def add_crops(self, image_id: Any, gt_map: InstanceMap, gt_classes: Sequence[int],
                  pred_crops: Sequence[Optional[Crop]], pred_classes: Sequence[int],
                  pred_scores: Sequence[float], num_gt: Optional[int] = None) -> Dict[str, Any]:
        """:meth:`add_image` for masks already decoded: the ground truth painted once
        (:func:`paint_ground_truth`), the predictions as crops
        (:func:`seg_project.data.instance_map.mask_crops`), so that one decoding serves
        several accumulators (thresholds, rules).

        Args:
            image_id: the image's id.
            gt_map: the ground truth's instance map.
            gt_classes: the classes (0..K-1) of the ground-truth masks it was painted from.
            pred_crops: the predicted masks as crops (None: empty).
            pred_classes: their classes, in 0..K-1.
            pred_scores: their scores.
            num_gt: the ground-truth instances given (default: ``len(gt_classes)``).

        Returns:
            dict: the image's metrics, also stored.

        Raises:
            ValueError: mismatched lengths or classes out of range.
        """
        gt_classes = self._classes(gt_classes, len(gt_classes), "ground-truth")
        pred_classes = self._classes(pred_classes, len(pred_crops), "predicted")
        scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if scores.size != len(pred_crops):
            raise ValueError(f"{scores.size} scores given for {len(pred_crops)} predictions")
        kept = np.flatnonzero(scores >= self.score_threshold)
        height, width = gt_map.instances.shape
        pred_map = paint_instance_map([pred_crops[i] for i in kept.tolist()], height, width,
                                      scores=scores[kept], rule=self.rule)
        table = _pair_table(gt_map.instances, pred_map.instances)
        metrics = _image_metrics(table)
        self._add_class_counts(table, gt_classes[gt_map.order],
                               pred_classes[kept][pred_map.order])
        record = {"image_id": image_id,
                  "num_gt": len(gt_classes) if num_gt is None else int(num_gt),
                  "num_pred": int(kept.size)}
        record.update(metrics)
        self.per_image.append(record)
        return record

    def _add_class_counts(self, table: _PairTable, gt_class_of_label: np.ndarray,
                          pred_class_of_label: np.ndarray) -> None:
        """Per-class TP/FP/FN/IoU sums of one image: same-class pairs at IoU > 0.5.
        ``*_class_of_label[k - 1]`` is the class of label ``k`` of the map."""
        num_classes = len(self.class_names)
        gt_class = gt_class_of_label[table.gt_ids - 1]
        pred_class = pred_class_of_label[table.pred_ids - 1]
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
            module docstring). :meth:`setting` says which predictions were counted.
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

    def setting(self) -> Dict[str, float]:
        """Which predictions were counted: ``score_threshold``, and the overlap rule's
        ``min_visible_fraction`` and ``max_mask_iou`` (numbers, so that they can be logged
        beside the metrics)."""
        return {"score_threshold": self.score_threshold, **self.rule.to_dict()}

    def state(self) -> Dict[str, Any]:
        """A picklable snapshot (plain lists and floats) for :meth:`from_states`."""
        return {"class_names": list(self.class_names), "score_threshold": self.score_threshold,
                "rule": self.rule.to_dict(),
                "per_image": [dict(record) for record in self.per_image],
                "tp": self._tp.tolist(), "fp": self._fp.tolist(), "fn": self._fn.tolist(),
                "iou_sum": self._iou_sum.tolist()}

    @classmethod
    def from_states(cls, states: Sequence[Dict[str, Any]],
                    mixed_thresholds: bool = False) -> "PathologyAccumulator":
        """One accumulator holding the images of several :meth:`state` snapshots, in order.

        Args:
            states: the snapshots.
            mixed_thresholds: accept snapshots of different score thresholds (folds of a
                cross-validation, each scored at the threshold chosen on the other folds);
                the result's :attr:`score_threshold` is then NaN.

        Raises:
            ValueError: no states, or states of different classes, overlap rules or (without
                ``mixed_thresholds``) score thresholds.
        """
        if not states:
            raise ValueError("from_states needs at least one state")
        threshold = states[0]["score_threshold"]
        if mixed_thresholds and any(s["score_threshold"] != threshold for s in states):
            threshold = math.nan
        merged = cls(states[0]["class_names"], threshold,
                     OverlapRule.from_dict(states[0].get("rule", NO_RULE.to_dict())))
        for state in states:
            merged._merge_state(state, check_threshold=not mixed_thresholds)
        return merged

    def merge(self, other: "PathologyAccumulator") -> "PathologyAccumulator":
        """Add another accumulator's images (after this one's) and class counts; returns self.

        Raises:
            ValueError: the two differ in classes, score threshold or overlap rule.
        """
        self._merge_state(other.state())
        return self

    def _merge_state(self, state: Dict[str, Any], check_threshold: bool = True) -> None:
        if list(state["class_names"]) != self.class_names:
            raise ValueError(f"cannot merge accumulators of classes {state['class_names']} "
                             f"and {self.class_names}")
        if check_threshold and float(state["score_threshold"]) != self.score_threshold:
            raise ValueError(f"cannot merge accumulators of score thresholds "
                             f"{state['score_threshold']} and {self.score_threshold}")
        rule = OverlapRule.from_dict(state.get("rule", NO_RULE.to_dict()))
        if rule != self.rule:
            raise ValueError(f"cannot merge accumulators of overlap rules {rule.describe()} "
                             f"and {self.rule.describe()}")
        self.per_image.extend(dict(record) for record in state["per_image"])
        self._tp += np.asarray(state["tp"], np.int64)
        self._fp += np.asarray(state["fp"], np.int64)
        self._fn += np.asarray(state["fn"], np.int64)
        self._iou_sum += np.asarray(state["iou_sum"], np.float64)


# ---------------------------------------------------------------------------------- table


def summary_setting(summary: Dict[str, float]) -> str:
    """:func:`setting_text` of a summary that holds :meth:`PathologyAccumulator.setting`'s
    keys ("" for one that does not say its threshold)."""
    if "score_threshold" not in summary:
        return ""
    rule = OverlapRule(summary.get("min_visible_fraction", 0.0),
                       summary.get("max_mask_iou", 1.0))
    return setting_text(float(summary["score_threshold"]), rule)


def format_table(summary: Dict[str, float], class_names: Sequence[str]) -> str:
    """A printable summary for logs: which predictions were counted, the split's figures,
    then PQ and F1 per class.

    Args:
        summary: :meth:`PathologyAccumulator.summarize`'s dict, with
            :meth:`PathologyAccumulator.setting`'s keys when they are to be printed.
        class_names: the class names, in class order.

    Returns:
        str: a line saying the score threshold and overlap rule (:func:`setting_text`), then
        two small tables (``tabulate``'s ``pipe`` format), values with 4 decimals.
    """
    overall = ["PQ", "SQ", "DQ", "AJI", "AJI+", "Dice", "F1", "mPQ"]
    head = ["images"] + [key for key in overall if key in summary]
    row = [summary.get("num_images", "")] + [summary[key] for key in head[1:]]
    text = tabulate([row], headers=head, tablefmt="pipe", floatfmt=".4f", missingval="-")
    setting = summary_setting(summary)
    if setting:
        text = f"Predictions counted: {setting}\n{text}"
    rows = [[name, summary.get(f"PQ-{name}", math.nan), summary.get(f"F1-{name}", math.nan)]
            for name in class_names]
    if rows:
        text += "\n\n" + tabulate(rows, headers=["class", "PQ", "F1"], tablefmt="pipe",
                                  floatfmt=".4f")
    return text
