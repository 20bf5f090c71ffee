"""Pathology metrics (Dice, AJI, AJI+, DQ/SQ/PQ, mPQ, F1) on hand-built label maps whose
answers are worked out in the comments, plus a random case against a slow reference."""

import math
import pickle

import numpy as np
import pycocotools.mask as mask_util
import pytest
from scipy.optimize import linear_sum_assignment

from seg_project.data.instance_map import mask_crops, paint_instance_map
from seg_project.evaluation.pathology import (
    DEFAULT_SCORE_THRESHOLD,
    PathologyAccumulator,
    format_table,
    image_metrics,
)

SIX = ("dice", "aji", "aji_plus", "dq", "sq", "pq")


def rle(mask: np.ndarray, as_text: bool = True) -> dict:
    """COCO RLE of a full-size boolean mask (counts as str, or bytes)."""
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = encoded["counts"].decode("ascii") if as_text else encoded["counts"]
    return {"size": [int(v) for v in encoded["size"]], "counts": counts}


def box_mask(shape, rows, cols) -> np.ndarray:
    """A boolean mask of ``shape`` true on ``rows`` x ``cols`` (two (start, stop) ranges)."""
    mask = np.zeros(shape, bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def rles_of(label_map: np.ndarray) -> list:
    """One RLE per label 1..max of a map (in label order)."""
    return [rle(label_map == k) for k in range(1, int(label_map.max()) + 1)]


def paint_instances(masks, height, width, scores=None) -> np.ndarray:
    """The instance map of ``seg_project.data.instance_map.paint_instance_map`` (no overlap
    rule), each instance labelled by its mask's index + 1 (as the assertions read it)."""
    painted = paint_instance_map(mask_crops(masks, height, width), height, width, scores)
    lookup = np.zeros(painted.order.size + 1, np.int32)
    lookup[1:] = painted.order + 1
    return lookup[painted.instances]


def check(metrics: dict, **expected) -> None:
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key


# ------------------------------------------------------------------------ hand-built images


def test_perfect_prediction():
    gt = np.zeros((10, 10), np.int32)
    gt[0:4, 0:4] = 1
    gt[6:9, 5:10] = 2
    metrics = image_metrics(gt, gt.copy())
    check(metrics, **{key: 1.0 for key in SIX}, tp=2, fp=0, fn=0, iou_sum=2.0)


def test_one_missed_cell():
    # GT: A = 4x4 (16 px), B = 2x2 (4 px); prediction: A exactly, B missed.
    gt = np.zeros((8, 8), np.int32)
    gt[0:4, 0:4] = 1
    gt[6:8, 6:8] = 2
    pred = np.where(gt == 1, 1, 0)
    # Dice 2*16/(20+16) = 8/9; AJI = AJI+ = 16 / (16 + 4 of unpaired B) = 0.8;
    # TP 1, FN 1: DQ = 1/(1 + 0.5) = 2/3, SQ = 1, PQ = 2/3.
    check(image_metrics(gt, pred), dice=8 / 9, aji=0.8, aji_plus=0.8, dq=2 / 3, sq=1.0,
          pq=2 / 3, tp=1, fp=0, fn=1, iou_sum=1.0)


def test_one_cell_split_in_two():
    # GT: one 4x4 cell (16 px). Predictions: columns 0-2 (12 px) and column 3 (4 px).
    gt = np.zeros((4, 4), np.int32)
    gt[:, :] = 1
    pred = np.zeros((4, 4), np.int32)
    pred[:, 0:3] = 1
    pred[:, 3] = 2
    # IoUs 12/16 = 0.75 and 4/16 = 0.25. TP 1 (0.75), FP 1: DQ = 1/1.5, SQ = 0.75, PQ = 0.5.
    # AJI: GT paired with the 0.75 piece: 12 / (16 + 4 of the never-paired piece) = 0.6;
    # AJI+ pairs the same: 0.6. Dice: the foregrounds coincide: 1.
    check(image_metrics(gt, pred), dice=1.0, aji=0.6, aji_plus=0.6, dq=2 / 3, sq=0.75, pq=0.5,
          tp=1, fp=1, fn=0, iou_sum=0.75)


def test_iou_of_exactly_one_half_is_no_match():
    # A 4x4 cell split into two equal halves: both IoUs are 8/16 = 0.5, not > 0.5.
    gt = np.ones((4, 4), np.int32)
    pred = np.zeros((4, 4), np.int32)
    pred[:, 0:2] = 1
    pred[:, 2:4] = 2
    # No TP: DQ = SQ = PQ = 0 (FP 2, FN 1). AJI: the tie goes to the lower prediction label:
    # 8 / (16 + 8 of the other half) = 1/3; AJI+ picks one half too: 1/3.
    check(image_metrics(gt, pred), dice=1.0, aji=1 / 3, aji_plus=1 / 3, dq=0.0, sq=0.0, pq=0.0,
          tp=0, fp=2, fn=1, iou_sum=0.0)


def test_two_cells_merged_into_one():
    # GT: A = columns 0-3 (16 px), B = columns 4-5 (8 px) of a 4x6 image; one prediction
    # covering both (24 px). IoU(A) = 16/24 = 2/3 (TP), IoU(B) = 8/24 = 1/3 (FN).
    gt = np.zeros((4, 6), np.int32)
    gt[:, 0:4] = 1
    gt[:, 4:6] = 2
    pred = np.ones((4, 6), np.int32)
    # AJI: both GT paired with the merged cell: (16 + 8) / (24 + 24) = 0.5.
    # AJI+: the merged cell serves A only: 16 / (24 + 8 of unpaired B) = 0.5.
    # DQ = 1/(1 + 0.5) = 2/3, SQ = 2/3, PQ = 4/9.
    check(image_metrics(gt, pred), dice=1.0, aji=0.5, aji_plus=0.5, dq=2 / 3, sq=2 / 3,
          pq=4 / 9, tp=1, fp=0, fn=1, iou_sum=2 / 3)


def test_aji_and_aji_plus_differ():
    # 4x6 image. GT: A = columns 0-3 (16 px), B = columns 4-5 (8 px).
    # Predictions: Q = column 0 (4 px), P = columns 1-5 (20 px).
    # IoU(A, P) = 12/24 = 0.5, IoU(B, P) = 8/20 = 0.4, IoU(A, Q) = 4/16 = 0.25.
    gt = np.zeros((4, 6), np.int32)
    gt[:, 0:4] = 1
    gt[:, 4:6] = 2
    pred = np.zeros((4, 6), np.int32)
    pred[:, 0] = 1
    pred[:, 1:6] = 2
    # AJI: A -> P (0.5), B -> P (0.4); Q never paired:
    #   (12 + 8) / (24 + 20 + 4) = 20/48 = 5/12.
    # AJI+: the best one-to-one pairing is A-Q + B-P (0.25 + 0.4 = 0.65 > 0.5 of A-P alone):
    #   (4 + 8) / (16 + 20) = 1/3.
    # No IoU > 0.5: DQ = SQ = PQ = 0. Both foregrounds are the whole image: Dice 1.
    check(image_metrics(gt, pred), dice=1.0, aji=5 / 12, aji_plus=1 / 3, dq=0.0, sq=0.0,
          pq=0.0, tp=0, fp=2, fn=2)


def test_no_predictions():
    gt = np.zeros((6, 6), np.int32)
    gt[0:2, 0:2] = 1
    gt[3:6, 3:6] = 2
    metrics = image_metrics(gt, np.zeros_like(gt))
    check(metrics, **{key: 0.0 for key in SIX}, tp=0, fp=0, fn=2, iou_sum=0.0)


def test_no_ground_truth():
    pred = np.zeros((6, 6), np.int32)
    pred[0:2, 0:2] = 1
    metrics = image_metrics(np.zeros_like(pred), pred)
    check(metrics, **{key: 0.0 for key in SIX}, tp=0, fp=1, fn=0, iou_sum=0.0)


def test_empty_image_is_perfect():
    empty = np.zeros((5, 7), np.int32)
    check(image_metrics(empty, empty), **{key: 1.0 for key in SIX}, tp=0, fp=0, fn=0)


def test_labels_need_not_be_contiguous():
    # Sparse huge labels (the np.unique path) give the same answer as 1..n.
    gt = np.zeros((8, 8), np.int64)
    gt[0:4, 0:4] = 7
    gt[6:8, 6:8] = 2**31 - 1
    pred = np.zeros((8, 8), np.int64)
    pred[0:4, 0:3] = 10**9
    dense_gt = np.searchsorted([0, 7, 2**31 - 1], gt)
    dense_pred = (pred > 0).astype(np.int32)
    assert image_metrics(gt, pred) == image_metrics(dense_gt, dense_pred)


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match="shape"):
        image_metrics(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="negative"):
        image_metrics(-np.ones((4, 4), np.int32), np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="integer"):
        image_metrics(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.int32))


# -------------------------------------------------------------------------------- painting


def test_paint_higher_score_wins_the_overlap():
    shape = (10, 10)
    first = box_mask(shape, (0, 6), (0, 6))  # score 0.9
    second = box_mask(shape, (3, 9), (3, 9))  # score 0.6, overlaps first on [3:6, 3:6]
    painted = paint_instances([rle(first), rle(second, as_text=False)], 10, 10,
                              scores=[0.9, 0.6])
    assert painted.dtype == np.int32
    assert (painted[3:6, 3:6] == 1).all()  # the higher score wins although it came first
    assert (painted[first] == 1).all()
    assert (painted[second & ~first] == 2).sum() == (second & ~first).sum()
    assert painted[~(first | second)].max() == 0
    # Without scores the later mask wins; numpy masks paint the same as RLEs.
    unscored = paint_instances([rle(first), second], 10, 10)
    assert (unscored[3:6, 3:6] == 2).all()
    # Equal scores keep the given order: the later one wins.
    tied = paint_instances([rle(first), rle(second)], 10, 10, scores=[0.7, 0.7])
    np.testing.assert_array_equal(tied, unscored)


def test_paint_covered_instance_disappears():
    shape = (8, 8)
    big = box_mask(shape, (0, 6), (0, 6))
    small = box_mask(shape, (1, 3), (1, 3))  # inside big, lower score: no pixel left
    empty = np.zeros(shape, bool)
    painted = paint_instances([rle(small), rle(big), rle(empty)], 8, 8, scores=[0.6, 0.9, 0.99])
    assert set(np.unique(painted).tolist()) == {0, 2}
    gt = (big * 1).astype(np.int32)
    # The vanished instance and the empty one are not false positives.
    check(image_metrics(gt, painted), tp=1, fp=0, fn=0, pq=1.0, aji=1.0)


def test_paint_refuses_wrong_sizes():
    mask = box_mask((6, 6), (0, 2), (0, 2))
    with pytest.raises(ValueError, match="size"):
        paint_instances([rle(mask)], 6, 7)
    with pytest.raises(ValueError, match="scores"):
        paint_instances([rle(mask)], 6, 6, scores=[0.5, 0.6])
    bad = {"size": [6, 6], "counts": "0"}  # decodes to 0 pixels, not 36
    with pytest.raises(ValueError, match="RLE"):
        paint_instances([bad], 6, 6)


# ----------------------------------------------------------------------------- accumulator


def test_score_threshold_drops_a_prediction():
    shape = (10, 10)
    cell = box_mask(shape, (0, 4), (0, 4))
    stray = box_mask(shape, (6, 9), (6, 9))  # no ground truth there
    acc = PathologyAccumulator(["cell"])
    assert acc.score_threshold == DEFAULT_SCORE_THRESHOLD == 0.5
    # The stray prediction scores 0.49: dropped. The cell scores exactly 0.5: kept.
    record = acc.add_image(3, 10, 10, [rle(cell)], [0], [rle(cell), rle(stray)], [0, 0],
                           [0.5, 0.49])
    check(record, image_id=3, num_gt=1, num_pred=1, tp=1, fp=0, fn=0, pq=1.0)
    # With a lower threshold the stray one is a false positive: DQ = 1/(1 + 0.5).
    low = PathologyAccumulator(["cell"], score_threshold=0.3)
    record = low.add_image(3, 10, 10, [rle(cell)], [0], [rle(cell), rle(stray)], [0, 0],
                           [0.5, 0.49])
    check(record, num_pred=2, tp=1, fp=1, pq=2 / 3)


def _two_image_split():
    """Classes a, b, c. Image 1 (10x10): GT a-cell [0:4, 0:4] and b-cell [6:10, 6:10];
    predicted exactly, but the b-cell is predicted as class a.
    Image 2 (10x10): GT b-cell [0:4, 0:4] (16 px); predictions: b [0:4, 0:3] (12 px, IoU
    0.75) and a stray b [6:8, 6:8]."""
    shape = (10, 10)
    a1, b1 = box_mask(shape, (0, 4), (0, 4)), box_mask(shape, (6, 10), (6, 10))
    b2, p2, stray = (box_mask(shape, (0, 4), (0, 4)), box_mask(shape, (0, 4), (0, 3)),
                     box_mask(shape, (6, 8), (6, 8)))
    return [
        (1, 10, 10, [rle(a1), rle(b1)], [0, 1], [rle(a1), rle(b1)], [0, 0], [0.9, 0.8]),
        (2, 10, 10, [rle(b2)], [1], [rle(p2), rle(stray)], [1, 1], [0.9, 0.7]),
    ]


def test_per_class_pooling_across_images():
    acc = PathologyAccumulator(["a", "b", "c"])
    for image in _two_image_split():
        acc.add_image(*image)
    summary = acc.summarize()
    # Class a: TP 1 (IoU 1, image 1), FP 1 (the b-cell predicted as a): PQ = 1 / 1.5,
    #   F1 = 2 / (2 + 1).
    # Class b: TP 1 (IoU 0.75, image 2), FP 1 (stray), FN 1 (image 1's b-cell):
    #   PQ = 0.75 / (1 + 0.5 + 0.5) = 0.375, F1 = 2 / (2 + 1 + 1) = 0.5.
    # Class c: nothing anywhere: NaN, left out of mPQ = (2/3 + 0.375) / 2.
    assert summary["PQ-a"] == pytest.approx(2 / 3)
    assert summary["F1-a"] == pytest.approx(2 / 3)
    assert summary["PQ-b"] == pytest.approx(0.375)
    assert summary["F1-b"] == pytest.approx(0.5)
    assert math.isnan(summary["PQ-c"]) and math.isnan(summary["F1-c"])
    assert summary["mPQ"] == pytest.approx((2 / 3 + 0.375) / 2)
    # Class-agnostic, pooled: image 1 TP 2; image 2 TP 1, FP 1: F1 = 6 / (6 + 1).
    assert summary["F1"] == pytest.approx(6 / 7)
    # Per-image means: image 1 is perfect; image 2: DQ 2/3, SQ 0.75, PQ 0.5,
    # AJI = AJI+ = 12 / (16 + 4 of the stray) = 0.6, Dice = 2*12 / (16 + 16) = 0.75.
    assert summary["PQ"] == pytest.approx(0.75)
    assert summary["DQ"] == pytest.approx((1 + 2 / 3) / 2)
    assert summary["SQ"] == pytest.approx((1 + 0.75) / 2)
    assert summary["AJI"] == pytest.approx(0.8)
    assert summary["AJI+"] == pytest.approx(0.8)
    assert summary["Dice"] == pytest.approx(0.875)
    assert summary["num_images"] == 2
    expected_keys = {"PQ", "SQ", "DQ", "AJI", "AJI+", "Dice", "F1", "mPQ", "num_images"}
    expected_keys |= {f"{m}-{c}" for m in ("PQ", "F1") for c in "abc"}
    assert set(summary) == expected_keys
    assert [record["image_id"] for record in acc.per_image] == [1, 2]
    counts = acc.class_counts()
    assert counts["tp"].tolist() == [1, 1, 0]
    assert counts["fp"].tolist() == [1, 1, 0]
    assert counts["fn"].tolist() == [0, 1, 0]

    table = format_table(summary, acc.class_names)
    assert "mPQ" in table and "AJI+" in table and "0.3750" in table
    assert all(name in table for name in "abc")


def _same(first: dict, second: dict) -> None:
    assert set(first) == set(second)
    for key in first:
        if isinstance(first[key], float) and math.isnan(first[key]):
            assert math.isnan(second[key]), key
        else:
            assert first[key] == pytest.approx(second[key]), key


def test_merge_and_states_equal_one_accumulator():
    images = _two_image_split()
    whole = PathologyAccumulator(["a", "b", "c"])
    parts = [PathologyAccumulator(["a", "b", "c"]) for _ in images]
    for image, part in zip(images, parts):
        whole.add_image(*image)
        part.add_image(*image)
    merged = pickle.loads(pickle.dumps(parts[0])).merge(pickle.loads(pickle.dumps(parts[1])))
    _same(merged.summarize(), whole.summarize())
    assert merged.per_image == whole.per_image
    from_states = PathologyAccumulator.from_states([p.state() for p in parts])
    _same(from_states.summarize(), whole.summarize())
    with pytest.raises(ValueError, match="classes"):
        whole.merge(PathologyAccumulator(["a", "b"]))
    with pytest.raises(ValueError, match="threshold"):
        whole.merge(PathologyAccumulator(["a", "b", "c"], score_threshold=0.3))


def test_empty_accumulator_and_empty_split():
    summary = PathologyAccumulator(["x"]).summarize()
    assert summary["num_images"] == 0
    assert all(math.isnan(v) for k, v in summary.items() if k != "num_images")
    acc = PathologyAccumulator(["x"])
    acc.add_image(0, 4, 4, [], [], [], [], [])
    summary = acc.summarize()
    # An empty image predicted empty is perfect; pooled figures have nothing to pool.
    assert summary["PQ"] == summary["AJI"] == summary["Dice"] == 1.0
    assert math.isnan(summary["F1"]) and math.isnan(summary["mPQ"])
    assert math.isnan(summary["PQ-x"])


def test_bad_classes_are_refused():
    mask = box_mask((4, 4), (0, 2), (0, 2))
    acc = PathologyAccumulator(["a", "b"])
    with pytest.raises(ValueError, match="classes"):
        acc.add_image(0, 4, 4, [rle(mask)], [2], [], [], [])
    with pytest.raises(ValueError, match="classes"):
        acc.add_image(0, 4, 4, [rle(mask)], [0, 1], [], [], [])
    with pytest.raises(ValueError, match="scores"):
        acc.add_image(0, 4, 4, [rle(mask)], [0], [rle(mask)], [0], [])


# ------------------------------------------------------------- a larger random case, slowly


def _random_cells(rng, shape, count, classes):
    """Painted map of ``count`` random ellipses (later ones on top) and their classes."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    labels = np.zeros(shape, np.int32)
    centres = rng.uniform(0, shape, size=(count, 2))
    radii = rng.uniform(4, 14, size=(count, 2))
    for k in range(count):
        inside = (((rows - centres[k, 0]) / radii[k, 0]) ** 2
                  + ((cols - centres[k, 1]) / radii[k, 1]) ** 2) <= 1
        labels[inside] = k + 1
    return labels, rng.integers(0, classes, size=count), centres, radii


def _reference(gt, pred, gt_classes, pred_classes, num_classes):
    """Obviously-correct (slow) metrics: a loop over every (ground truth, prediction) pair."""
    gt_ids = [g for g in range(1, gt.max() + 1) if (gt == g).any()]
    pred_ids = [p for p in range(1, pred.max() + 1) if (pred == p).any()]
    inter = np.zeros((len(gt_ids), len(pred_ids)))
    union = np.zeros((len(gt_ids), len(pred_ids)))
    for i, g in enumerate(gt_ids):
        for j, p in enumerate(pred_ids):
            inter[i, j] = ((gt == g) & (pred == p)).sum()
            union[i, j] = ((gt == g) | (pred == p)).sum()
    iou = inter / union
    gt_area = [(gt == g).sum() for g in gt_ids]
    pred_area = [(pred == p).sum() for p in pred_ids]
    out = {"dice": 2 * ((gt > 0) & (pred > 0)).sum() / ((gt > 0).sum() + (pred > 0).sum())}

    used = set()
    total_inter = total_union = 0
    for i in range(len(gt_ids)):
        j = int(np.argmax(iou[i]))  # the first (lowest label) of the highest IoUs
        if iou[i, j] > 0:
            total_inter += inter[i, j]
            total_union += union[i, j]
            used.add(j)
        else:
            total_union += gt_area[i]
    total_union += sum(pred_area[j] for j in range(len(pred_ids)) if j not in used)
    out["aji"] = total_inter / total_union

    rows, cols = linear_sum_assignment(-iou)  # the full matrix, zeros included
    pairs = [(i, j) for i, j in zip(rows, cols) if iou[i, j] > 0]
    paired_gt, paired_pred = {i for i, _ in pairs}, {j for _, j in pairs}
    total_inter = sum(inter[i, j] for i, j in pairs)
    total_union = (sum(union[i, j] for i, j in pairs)
                   + sum(gt_area[i] for i in range(len(gt_ids)) if i not in paired_gt)
                   + sum(pred_area[j] for j in range(len(pred_ids)) if j not in paired_pred))
    out["aji_plus"] = total_inter / total_union

    tp_pairs = [(i, j) for i in range(len(gt_ids)) for j in range(len(pred_ids))
                if iou[i, j] > 0.5]
    tp = len(tp_pairs)
    fp, fn = len(pred_ids) - tp, len(gt_ids) - tp
    out.update(tp=tp, fp=fp, fn=fn, iou_sum=sum(iou[i, j] for i, j in tp_pairs))
    out["dq"] = tp / (tp + fp / 2 + fn / 2)
    out["sq"] = out["iou_sum"] / tp if tp else 0.0
    out["pq"] = out["dq"] * out["sq"]

    per_class = np.zeros((num_classes, 4))  # tp, fp, fn, iou sum
    for c in range(num_classes):
        gts = [i for i, g in enumerate(gt_ids) if gt_classes[g - 1] == c]
        preds = [j for j, p in enumerate(pred_ids) if pred_classes[p - 1] == c]
        matches = [iou[i, j] for i in gts for j in preds if iou[i, j] > 0.5]
        per_class[c] = [len(matches), len(preds) - len(matches), len(gts) - len(matches),
                        sum(matches)]
    return out, per_class


def test_random_image_matches_slow_reference():
    rng = np.random.default_rng(20240611)
    shape, num_classes = (300, 300), 3
    gt, gt_classes, centres, radii = _random_cells(rng, shape, 100, num_classes)
    # Predictions: most cells again, moved and resized a little, in a new order, with some
    # classes wrong, plus 15 stray ones; painted by score from RLEs.
    keep = rng.permutation(100)[:85]
    centres = np.concatenate([centres[keep] + rng.normal(0, 1.5, (85, 2)),
                              rng.uniform(0, shape, (15, 2))])
    radii = np.concatenate([radii[keep] * rng.uniform(0.8, 1.2, (85, 2)),
                            rng.uniform(4, 14, (15, 2))])
    pred_classes = np.concatenate([np.where(rng.random(85) < 0.8, gt_classes[keep],
                                            rng.integers(0, num_classes, 85)),
                                   rng.integers(0, num_classes, 15)])
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    pred_masks = [(((rows - c[0]) / r[0]) ** 2 + ((cols - c[1]) / r[1]) ** 2) <= 1
                  for c, r in zip(centres, radii)]
    scores = rng.uniform(0.2, 1.0, len(pred_masks))
    kept = np.flatnonzero(scores >= DEFAULT_SCORE_THRESHOLD)
    pred = paint_instances([rle(pred_masks[k]) for k in kept], *shape, scores=scores[kept])

    # The painted map: each pixel holds the highest-scoring kept mask covering it.
    expected = np.zeros(shape, np.int32)
    for position, k in enumerate(kept):
        covered_by_better = np.zeros(shape, bool)
        for other in kept:
            if scores[other] > scores[k]:
                covered_by_better |= pred_masks[other]
        expected[pred_masks[k] & ~covered_by_better] = position + 1
    np.testing.assert_array_equal(pred, expected)

    reference, per_class = _reference(gt, pred, gt_classes, pred_classes[kept], num_classes)
    assert reference["tp"] > 20 and reference["fp"] > 5 and reference["fn"] > 5  # a real test
    assert reference["aji"] != pytest.approx(reference["aji_plus"])
    check(image_metrics(gt, pred), **reference)

    # The accumulator, from RLEs of the ground truth, pools the same per-class counts.
    acc = PathologyAccumulator(["x", "y", "z"])
    record = acc.add_image(9, *shape, rles_of(gt), gt_classes,
                           [rle(m) for m in pred_masks], pred_classes, scores)
    check(record, **reference)
    counts = acc.class_counts()
    np.testing.assert_array_equal(counts["tp"], per_class[:, 0])
    np.testing.assert_array_equal(counts["fp"], per_class[:, 1])
    np.testing.assert_array_equal(counts["fn"], per_class[:, 2])
    np.testing.assert_allclose(counts["iou_sum"], per_class[:, 3])
