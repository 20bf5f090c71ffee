"""Tests of the evaluation: grader-exact COCO AP (equal to stock pycocotools), the high-cap
figures, annotated held-out splits, the evaluator in training, and tools/evaluate.py."""

import contextlib
import io
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from conftest import REPO, SHARED_DATA, load_tool, train_args

from seg_project.evaluation.coco import evaluate_coco_tasks

CONSEP_TEST = SHARED_DATA / "consep" / "test"


def _coco(dataset: dict):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def _square(x, y, size, height=64, width=64):
    mask = np.zeros((height, width), np.uint8)
    mask[y:y + size, x:x + size] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _toy_ground_truth(per_class=(300, 50)):
    """One 400x400 image with ``per_class[k]`` disjoint 4x4 squares of class k+1."""
    images = [{"id": 1, "height": 400, "width": 400, "file_name": "a.tif"}]
    annotations, results = [], []
    index = 0
    for category, count in enumerate(per_class, start=1):
        for _ in range(count):
            y, x = divmod(index, 50)
            index += 1
            rle = _square(8 * x, 8 * y, 4, 400, 400)
            box = [8.0 * x, 8.0 * y, 4.0, 4.0]
            annotations.append({"id": index, "image_id": 1, "category_id": category,
                                "segmentation": rle, "area": 16.0, "bbox": box,
                                "iscrowd": 0})
            results.append({"image_id": 1, "category_id": category, "segmentation": rle,
                            "bbox": box, "score": 1.0 - index * 1e-4})
    categories = [{"id": k + 1, "name": f"c{k + 1}"} for k in range(len(per_class))]
    return _coco({"images": images, "annotations": annotations,
                  "categories": categories}), results


def test_headline_counts_100_per_image_and_class_the_high_cap_counts_all():
    """The issue's example: 300 perfect class-1 and 50 perfect class-2 predictions on one image:
    stock COCOeval gives AP50 (100/300 + 50/50) / 2 = 0.668, not 1.0."""
    coco_gt, results = _toy_ground_truth()
    metrics = evaluate_coco_tasks(coco_gt, results, ["c1", "c2"], high_cap=1000)
    segm = metrics["segm"]
    assert segm["AP50"] == pytest.approx(66.8, abs=0.1)
    assert segm["AP50-c2"] == pytest.approx(100.0)
    assert segm["AP50-c1"] == pytest.approx(33.6, abs=0.2)  # 101-point interpolation
    assert segm["AP50@1000"] == pytest.approx(100.0)
    assert segm["AP50@1000-c1"] == pytest.approx(100.0)
    assert metrics["bbox"]["AP50"] == pytest.approx(segm["AP50"])


def test_no_predictions_is_zero_not_nan():
    coco_gt, _ = _toy_ground_truth((5, 0))
    metrics = evaluate_coco_tasks(coco_gt, [], ["c1", "c2"], high_cap=1000)
    assert metrics["segm"]["AP50"] == 0.0
    assert metrics["segm"]["AP50-c1"] == 0.0
    assert np.isnan(metrics["segm"]["AP50-c2"])
    assert metrics["segm"]["AP50@1000"] == 0.0


def _consep_ground_truth(names):
    from seg_project.data.reader import load_annotated_split

    records = load_annotated_split(CONSEP_TEST, 4, names=names)
    images, annotations = [], []
    for record in records:
        images.append({"id": record["image_id"], "height": record["height"],
                       "width": record["width"], "file_name": record["file_name"]})
        for ann in record["annotations"]:
            rle = dict(ann["segmentation"])
            if isinstance(rle["counts"], bytes):
                rle["counts"] = rle["counts"].decode("ascii")
            x, y, w, h = (float(v) for v in mask_util.toBbox(rle))
            annotations.append({"id": len(annotations) + 1, "image_id": record["image_id"],
                                "category_id": ann["category_id"] + 1, "segmentation": rle,
                                "area": float(mask_util.area(rle)), "bbox": [x, y, w, h],
                                "iscrowd": 0})
    categories = [{"id": k, "name": f"class{k}"} for k in range(1, 5)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _jittered_predictions(dataset, seed=0):
    """Predictions from the ground truth: every instance found (some shifted right by 1-2 px,
    so IoUs vary), with random scores and some in the wrong class."""
    from seg_project.data.rle import decode_crop, encode_crop

    rng = np.random.default_rng(seed)
    results = []
    for ann in dataset["annotations"]:
        x, y, w, h = (int(v) for v in ann["bbox"])
        height, width = ann["segmentation"]["size"]
        shift = min(int(rng.integers(0, 3)), width - (x + w))
        crop = decode_crop(ann["segmentation"], (x, y, x + w, y + h))
        rle = dict(encode_crop(crop, x + shift, y, height, width))
        if isinstance(rle["counts"], bytes):
            rle["counts"] = rle["counts"].decode("ascii")
        category = ann["category_id"] if rng.random() > 0.1 else int(rng.integers(1, 5))
        results.append({"image_id": ann["image_id"], "category_id": category,
                        "segmentation": rle, "bbox": [x + shift, y, w, h],
                        "score": float(rng.random())})
    return results


@pytest.mark.skipif(not CONSEP_TEST.is_dir(), reason="needs ../shared/data/consep (real data)")
def test_grader_exact_equals_stock_pycocotools_on_real_consep():
    """Our headline (faster-coco-eval and pycocotools engines) equals stock pycocotools
    COCOeval with default params to 1e-6, with more than 100 predictions per class and
    image."""
    from pycocotools.cocoeval import COCOeval

    dataset = _consep_ground_truth(["test_1", "test_2"])
    results = _jittered_predictions(dataset)
    per_image_class = {}
    for r in results:
        key = (r["image_id"], r["category_id"])
        per_image_class[key] = per_image_class.get(key, 0) + 1
    assert sum(n > 100 for n in per_image_class.values()) >= 3  # the cap matters
    coco_gt = _coco(dataset)
    names = ["class1", "class2", "class3", "class4"]
    for task in ("segm", "bbox"):
        with contextlib.redirect_stdout(io.StringIO()):
            stock_results = [r if task == "bbox" else {k: v for k, v in r.items() if k != "bbox"}
                             for r in results]
            stock = COCOeval(coco_gt, coco_gt.loadRes(json.loads(json.dumps(stock_results))),
                             task)
            stock.evaluate()
            stock.accumulate()
            stock.summarize()
        for fast in (True, False):
            # (pycocotools at a cap of 1000 takes a minute here: its high cap is not run)
            ours = evaluate_coco_tasks(coco_gt, results, names, tasks=(task,),
                                       high_cap=1000 if fast else 100, fast=fast)[task]
            for index, metric in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
                expected = stock.stats[index] * 100 if stock.stats[index] >= 0 else np.nan
                assert ours[metric] == pytest.approx(expected, abs=1e-6, nan_ok=True), (
                    task, fast, metric)
            precision = stock.eval["precision"][0, :, :, 0, -1]
            for k, name in enumerate(names):
                values = precision[:, k][precision[:, k] > -1]
                expected = values.mean() * 100 if values.size else np.nan
                assert ours[f"AP50-{name}"] == pytest.approx(expected, abs=1e-6, nan_ok=True)
            if fast:  # the high cap counts more of the crowded images' detections
                assert ours["AP50@1000"] > ours["AP50"]


def test_annotated_folders_register_as_their_own_datasets(synthetic_root, tmp_path):
    import shutil

    from detectron2.data import DatasetCatalog, MetadataCatalog

    from seg_project.data.catalog import register_cells_splits

    root = tmp_path / "root"
    shutil.copytree(synthetic_root, root)
    held_out = root / "heldout"
    held_out.mkdir()
    for folder in sorted((root / "train").iterdir())[:2]:
        shutil.move(str(folder), held_out / folder.name)
    (root / "notes").mkdir()  # a folder without annotated images is not a dataset
    register_cells_splits(root)
    assert "cells_annotated_heldout" in DatasetCatalog.list()
    assert "cells_annotated_notes" not in DatasetCatalog.list()
    records = DatasetCatalog.get("cells_annotated_heldout")
    assert len(records) == 2 and all(r["annotations"] for r in records)
    assert MetadataCatalog.get("cells_annotated_heldout").evaluator_type == "coco"
    assert MetadataCatalog.get("cells_test").evaluator_type == "none"  # keeps its meaning
    register_cells_splits(synthetic_root)  # another root: its annotated sets replace these
    assert "cells_annotated_heldout" not in DatasetCatalog.list()


def test_training_logs_grader_exact_high_cap_and_pathology(trained_run):
    lines = [json.loads(line) for line in (trained_run / "metrics.json").read_text().splitlines()]
    evals = [line for line in lines if "segm/AP50" in line]
    assert evals
    last = evals[-1]
    for key in ("segm/AP50", "bbox/AP", "segm/AP50-class1", "pathology/PQ", "pathology/AJI",
                "pathology/AJI+", "pathology/Dice", "pathology/mPQ", "pathology/F1",
                "pathology/PQ-class1"):
        assert key in last, key
    # the tiny run's cap is the grader's 100: no separate high-cap figures
    assert not any("@" in key for key in last)
    log = (trained_run / "log.txt").read_text()
    assert "grader-exact" in log and "Pathology metrics" in log


def test_evaluate_tool_same_numbers_for_submission_and_coco_results(trained_run, tmp_path,
                                                                    capsys):
    """tools/evaluate.py on the evaluator's coco_instances_results.json and on the same
    predictions written as a course submission with [x1, y1, x2, y2] boxes gives the same
    numbers, which equal the training run's last evaluation."""
    from seg_project.submission import build_submission, write_submission

    coco_results = trained_run / "inference" / "cells_val" / "coco_instances_results.json"
    entries = json.loads(coco_results.read_text())
    assert entries
    by_image = {}
    for e in entries:
        by_image.setdefault(e["image_id"], []).append(e)
    submission = build_submission(sorted(by_image.items()), bbox_format="xyxy")
    write_submission(submission, tmp_path / "test-results.json")
    evaluate = load_tool("evaluate")
    config = str(REPO / "configs" / "quick_schedules" / "mask_rcnn_R_18_FPN_cells_quick.yaml")
    opts = train_args(*_run_root_and_out(trained_run))[2:]
    outputs = []
    for path in (coco_results, tmp_path / "test-results.json"):
        assert evaluate.main([str(path), "--dataset", "cells_val", "--config-file", config,
                              "--json", *opts]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    a, b = outputs
    assert b["input"]["bbox_format"] == "xyxy" and a["input"]["bbox_format"] == "xywh"
    for task in ("segm", "bbox", "pathology"):
        for key, value in a[task].items():
            assert b[task][key] == (pytest.approx(value) if value is not None else None), key
    lines = [json.loads(line) for line in (trained_run / "metrics.json").read_text().splitlines()]
    last = [line for line in lines if "segm/AP50" in line][-1]
    assert a["segm"]["AP50"] == pytest.approx(last["segm/AP50"], abs=1e-6)
    assert a["pathology"]["PQ"] == pytest.approx(last["pathology/PQ"], abs=1e-6)


def _run_root_and_out(run_dir):
    config = json.loads((run_dir / "cells_split.json").read_text())
    return type(run_dir)(config["split"]["root"]), run_dir


def test_evaluator_scores_ground_truth_as_predictions_100(synthetic_root, tmp_path):
    """The evaluator given the ground truth as predictions reports AP 100 (segm and bbox,
    grader-exact and high cap), PQ 1, and writes category ids 1..K in its results file."""
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.structures import BitMasks, Boxes, BoxMode, Instances

    from seg_project.config import get_seg_project_cfg, register_datasets_from_config
    from seg_project.evaluation.evaluator import CellsCOCOEvaluator

    cfg = get_seg_project_cfg()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 4
    cfg.DATASETS.CELLS.ROOT = str(synthetic_root)
    cfg.TEST.DETECTIONS_PER_IMAGE = 1000
    register_datasets_from_config(cfg)
    evaluator = CellsCOCOEvaluator.from_config(cfg, "cells_val", str(tmp_path))
    evaluator.reset()
    records = DatasetCatalog.get("cells_val")
    for record in records:
        anns = record["annotations"]
        instances = Instances((record["height"], record["width"]))
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        # scores rise in annotation order: where instances overlap, the painted maps of
        # predictions and ground truth then resolve contested pixels alike (later wins)
        instances.scores = torch.linspace(0.9, 1.0, len(anns))
        instances.pred_classes = torch.tensor([a["category_id"] for a in anns])
        masks = np.stack([mask_util.decode(a["segmentation"]) for a in anns]).astype(bool)
        instances.pred_masks = BitMasks(torch.from_numpy(masks)).tensor
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": instances}])
    results = evaluator.evaluate()
    for task in ("segm", "bbox"):
        assert results[task]["AP"] == pytest.approx(100.0)
        assert results[task]["AP50@1000"] == pytest.approx(100.0)
    assert results["pathology"]["PQ"] == pytest.approx(1.0)
    written = json.loads((tmp_path / "coco_instances_results.json").read_text())
    categories = {e["category_id"] for e in written}
    expected = {a["category_id"] + 1 for r in records for a in r["annotations"]}
    assert categories == expected and categories <= {1, 2, 3, 4}
