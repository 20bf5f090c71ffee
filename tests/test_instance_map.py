"""One cell per nucleus: the overlap rule of the instance maps behind the pathology metrics,
the label TIFFs, the GeoJSON and the pictures, on hand-built masks whose answers are worked
out in the comments."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest

from seg_project.data.instance_map import (
    DEFAULT_RULE,
    NO_RULE,
    OverlapRule,
    cell_entries,
    mask_crops,
    paint_instance_map,
)
from seg_project.data.rle import encode_crop
from seg_project.evaluation.pathology import PathologyAccumulator
from seg_project.export.geojson import predictions_to_geojson
from seg_project.export.label_tiff import label_sidecar_path, write_label_tiffs
from seg_project.utils.errors import ConfigError

H, W = 48, 64
NAMES = ["a", "b", "c", "d"]
COLORS = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]]


def disk(cx, cy, radius):
    yy, xx = np.mgrid[:H, :W]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= radius ** 2


def rle(mask):
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def entry(mask, category, score):
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return {"image_id": 1, "category_id": category, "score": score,
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "segmentation": encode_crop(mask[y0:y1, x0:x1], int(x0), int(y0), H, W)}


def iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def paint(masks, scores=None, rule=NO_RULE):
    return paint_instance_map(mask_crops(masks, H, W), H, W, scores, rule=rule)


@pytest.fixture
def one_cell_twice():
    """A nucleus detected twice: class a at 0.9, class b at 0.8, shifted 1 px (IoU ~0.8).
    The second keeps ~11% of its pixels beside the first (IoU 0.8 of equal areas: the
    intersection is 0.89 of each), a sliver."""
    first, second = disk(30.0, 24.0, 8.0), disk(31.5, 24.0, 8.0)
    assert 0.75 <= iou(first, second) <= 0.85
    return first, second


def test_two_detections_of_one_cell_become_one_instance_everywhere(one_cell_twice, tmp_path):
    first, second = one_cell_twice
    entries = [entry(first, 1, 0.9), entry(second, 2, 0.8)]
    for rule in (DEFAULT_RULE, OverlapRule(max_mask_iou=0.5)):
        # The pathology map: one true positive, no false-positive sliver.
        accumulator = PathologyAccumulator(NAMES, 0.5, rule)
        record = accumulator.add_image(1, H, W, [rle(first)], [0], [rle(first), rle(second)],
                                       [0, 1], [0.9, 0.8])
        assert (record["tp"], record["fp"], record["fn"]) == (1, 0, 0)
        assert record["pq"] == pytest.approx(1.0)
        # The label TIFF: one instance, of the higher score's class.
        written = write_label_tiffs(tmp_path / rule.describe(), "img", entries, H, W, NAMES,
                                    COLORS, rule=rule)
        from seg_project.data.image_io import read_mask

        instances, classes = read_mask(written[0]), read_mask(written[1])
        assert int(instances.max()) == 1 and np.array_equal(instances == 1, first)
        assert set(np.unique(classes[first]).tolist()) == {1}
        sidecar = json.loads(label_sidecar_path(tmp_path / rule.describe(), "img").read_text())
        assert [(i["id"], i["class_id"], i["score"]) for i in sidecar["instances"]] == \
            [(1, 1, 0.9)]
        # The GeoJSON: one feature.
        collection = predictions_to_geojson(entries, NAMES, COLORS, "img", rule=rule)
        assert [f["properties"]["classification"]["name"] for f in collection["features"]] \
            == ["a"]
        # The cells of the pictures and the report's confusion matrix: the first entry only.
        assert cell_entries(entries, H, W, 0.5, rule) == [entries[0]]
    # Without the rule the duplicate survives as a second instance: a sliver around the first.
    record = PathologyAccumulator(NAMES, 0.5, NO_RULE).add_image(
        1, H, W, [rle(first)], [0], [rle(first), rle(second)], [0, 1], [0.9, 0.8])
    assert (record["tp"], record["fp"]) == (1, 1)
    assert len(predictions_to_geojson(entries, NAMES, COLORS, "img")["features"]) == 2


def test_pictures_draw_one_shape_per_cell(one_cell_twice):
    from seg_project.visualization.instances import prediction_shapes

    first, second = one_cell_twice
    entries = [entry(first, 1, 0.9), entry(second, 2, 0.8)]

    class Metadata:
        thing_classes = NAMES
        thing_dataset_id_to_contiguous_id = {1: 0, 2: 1, 3: 2, 4: 3}

        def get(self, key, default=None):
            return getattr(self, key, default)

    shapes, total = prediction_shapes(entries, Metadata(), H, W, 0.5, None, "xywh", "x",
                                      DEFAULT_RULE)
    assert total == 1 and len(shapes) == 1 and shapes[0].class_index == 0
    drawn = np.zeros((H, W), bool)
    drawn[shapes[0].y0:shapes[0].y0 + shapes[0].crop.shape[0],
          shapes[0].x0:shapes[0].x0 + shapes[0].crop.shape[1]] = shapes[0].crop
    assert np.array_equal(drawn, first)
    # Without a rule both are drawn whole, over each other (the pictures of before).
    shapes, total = prediction_shapes(entries, Metadata(), H, W, 0.5, None, "xywh", "x")
    assert total == 2 and len(shapes) == 2


def bands(*rows):
    """Full-width horizontal bands of a 10 x 10 image, one mask per (start, stop)."""
    masks = []
    for start, stop in rows:
        mask = np.zeros((10, 10), bool)
        mask[start:stop] = True
        masks.append(mask)
    return masks


def test_visible_fraction_drops_a_covered_instance_and_frees_its_pixels():
    # A (0.9) rows 0-3, B (0.8) rows 2-5, C (0.7) rows 4-7: 40 pixels each; B keeps rows 4-5
    # beside A, exactly half of its pixels.
    masks = bands((0, 4), (2, 6), (4, 8))
    crops = mask_crops(masks, 10, 10)
    kept = paint_instance_map(crops, 10, 10, [0.9, 0.8, 0.7], rule=OverlapRule(0.5))
    assert kept.order.tolist() == [0, 1, 2]  # half visible is enough at F = 0.5
    assert (kept.instances[4:6] == 2).all() and (kept.instances[6:8] == 3).all()
    dropped = paint_instance_map(crops, 10, 10, [0.9, 0.8, 0.7], rule=OverlapRule(0.55))
    assert dropped.order.tolist() == [0, 2]  # B dropped entirely...
    assert (dropped.instances[4:8] == 2).all()  # ...and C, next, takes rows 4-7 whole
    assert (dropped.instances[8:] == 0).all() and (dropped.instances[:4] == 1).all()
    # F = 0 keeps every instance that keeps a pixel (the painting without the rule).
    plain = paint_instance_map(crops, 10, 10, [0.9, 0.8, 0.7], rule=NO_RULE)
    assert plain.order.tolist() == [0, 1, 2]
    assert np.array_equal(plain.instances, kept.instances)


def test_mask_iou_suppression_drops_a_duplicate_and_frees_its_pixels():
    # A (0.9) rows 0-5 (60 px), B (0.8) rows 2-7 (60 px): IoU 40 / 80 = 0.5. C (0.7) rows
    # 6-9 (40 px).
    masks = bands((0, 6), (2, 8), (6, 10))
    crops = mask_crops(masks, 10, 10)
    at_limit = paint_instance_map(crops, 10, 10, [0.9, 0.8, 0.7], rule=OverlapRule(0, 0.5))
    assert at_limit.order.tolist() == [0, 1, 2]  # IoU 0.5 does not exceed 0.5
    below = paint_instance_map(crops, 10, 10, [0.9, 0.8, 0.7], rule=OverlapRule(0, 0.45))
    assert below.order.tolist() == [0, 2]
    assert (below.instances[6:] == 2).all() and (below.instances[:6] == 1).all()
    # The IoU is that of the whole masks: C overlaps the dropped B, not A, and stays whole.
    assert np.count_nonzero(below.instances == 2) == 40


def test_order_classes_and_empty_masks():
    masks = bands((0, 4), (2, 6)) + [np.zeros((10, 10), bool)]
    crops = mask_crops(masks, 10, 10)
    assert crops[2] is None
    # Equal scores: the later mask first; no scores: the later first too (painted in order).
    tied = paint_instance_map(crops, 10, 10, [0.5, 0.5, 0.5], classes=[3, 4, 2])
    assert tied.order.tolist() == [1, 0] and (tied.instances[2:4] == 1).all()
    assert (tied.classes[2:6] == 4).all() and (tied.classes[:2] == 3).all()
    unscored = paint_instance_map(crops, 10, 10)
    assert np.array_equal(unscored.instances, tied.instances) and unscored.classes is None
    assert np.array_equal(tied.kept(), [0, 1])
    with pytest.raises(ValueError, match="scores"):
        paint_instance_map(crops, 10, 10, [0.5])
    with pytest.raises(ValueError, match="classes"):
        paint_instance_map(crops, 10, 10, classes=[1])


def test_rule_values_and_config_keys():
    from conftest import QUICK_CONFIG

    from seg_project.config import check_config, load_config

    cfg = load_config()
    assert OverlapRule.from_config(cfg) == DEFAULT_RULE
    assert cfg.TEST.PATHOLOGY.SCORE_THRESHOLD == -1  # the operating point, else 0.5
    # A run's config.yaml from before the rule, read as a dict: the defaults.
    assert OverlapRule.from_config({"TEST": {"PATHOLOGY": {}}}) == DEFAULT_RULE
    assert OverlapRule.from_config({"TEST": {"INSTANCE_MAP": {"MIN_VISIBLE_FRACTION": 0.3,
                                                               "MAX_MASK_IOU": 0.7}}}) \
        == OverlapRule(0.3, 0.7)
    with pytest.raises(ValueError):
        OverlapRule(min_visible_fraction=1.5)
    with pytest.raises(ValueError):
        OverlapRule(max_mask_iou=0.0)
    assert DEFAULT_RULE.describe() == "overlaps: drop < 70% visible"
    assert NO_RULE.describe() == "overlaps: higher score wins, none dropped"
    for key, value in (("TEST.INSTANCE_MAP.MIN_VISIBLE_FRACTION", "1.5"),
                       ("TEST.INSTANCE_MAP.MAX_MASK_IOU", "0.0"),
                       ("TEST.PATHOLOGY.SCORE_THRESHOLD", "2.0")):
        bad = load_config(QUICK_CONFIG, [key, value])
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            check_config(bad)
