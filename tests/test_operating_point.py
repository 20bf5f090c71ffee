"""The operating point: the score threshold of highest PQ, chosen on a grid from an evaluated
split's predictions, written beside the weights and read back by prediction, export and the
report; an explicit threshold overrides it."""

import contextlib
import io
import json
import math
import shutil

import numpy as np
import pycocotools.mask as mask_util
import pytest
import yaml
from conftest import QUICK_CONFIG, load_tool, tiny_opts
from pycocotools.coco import COCO

from seg_project.config import get_seg_project_cfg
from seg_project.data.instance_map import DEFAULT_RULE
from seg_project.data.score_threshold import (
    read_operating_point,
    resolve_score_threshold,
    write_operating_point,
)
from seg_project.evaluation.operating_point import (
    best_row,
    choose_operating_point,
    cross_validate,
    grid_rows,
    sweep,
)

GRID = [round(0.05 * k, 2) for k in range(1, 20)]
NAMES = ["a", "b", "c", "d"]


def rle(mask):
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def square(row, col, size=6, shape=(20, 60)):
    mask = np.zeros(shape, bool)
    mask[row:row + size, col:col + size] = True
    return mask


def constructed_split():
    """Two 20 x 60 images of separate square cells, predicted exactly, with false positives:

    - image 1: cells scored 0.9, 0.8, 0.6 and 0.45, false positives at 0.4 and 0.3: PQ is 1
      at score >= 0.45 only (0.5 misses a cell, 0.4 adds a false positive);
    - image 2: cells scored 0.9, 0.8 and 0.75, a false positive at 0.7: PQ is 1 at 0.75 only.
    """
    cells = {1: [(square(2, 2 + 10 * k), score) for k, score in enumerate([0.9, 0.8, 0.6, 0.45])],
             2: [(square(2, 2 + 10 * k), score) for k, score in enumerate([0.9, 0.8, 0.75])]}
    strays = {1: [(square(12, 2), 0.4), (square(12, 30), 0.3)], 2: [(square(12, 2), 0.7)]}
    dataset = {"images": [{"id": i, "height": 20, "width": 60} for i in cells],
               "categories": [{"id": k + 1, "name": n} for k, n in enumerate(NAMES)],
               "annotations": []}
    results = []
    for image_id, image_cells in cells.items():
        for mask, score in image_cells:
            segmentation = rle(mask)
            bbox = mask_util.toBbox({"size": segmentation["size"],
                                     "counts": segmentation["counts"].encode()}).tolist()
            dataset["annotations"].append({"id": len(dataset["annotations"]) + 1,
                                           "image_id": image_id, "category_id": 1,
                                           "segmentation": segmentation, "area": 36,
                                           "bbox": bbox, "iscrowd": 0})
            results.append({"image_id": image_id, "category_id": 1, "score": score,
                            "bbox": bbox, "segmentation": segmentation})
        for mask, score in strays[image_id]:
            results.append({"image_id": image_id, "category_id": 2, "score": score,
                            "segmentation": rle(mask)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
    return coco_gt, results


def test_threshold_search_picks_the_known_best_threshold():
    coco_gt, results = constructed_split()
    accumulators = sweep(coco_gt, results, NAMES, [(t, DEFAULT_RULE) for t in GRID],
                         img_ids=[1])[0]
    rows = grid_rows(accumulators)
    assert [r["score_threshold"] for r in rows] == GRID
    best = best_row(rows)
    assert best["score_threshold"] == 0.45 and best["PQ"] == pytest.approx(1.0)
    by_threshold = {r["score_threshold"]: r for r in rows}
    assert by_threshold[0.4]["DQ"] == pytest.approx(4 / 4.5)  # one false positive
    assert by_threshold[0.5]["DQ"] == pytest.approx(3 / 3.5)  # one missed cell
    assert by_threshold[0.45]["cells"] == 4 and by_threshold[0.05]["detections"] == 6
    assert all(r["PQ"] < 1 for r in rows if r["score_threshold"] != 0.45)


def test_cross_validation_scores_each_half_at_the_other_halfs_threshold():
    coco_gt, results = constructed_split()
    pooled, chosen = cross_validate(coco_gt, results, NAMES, GRID, DEFAULT_RULE)
    # Image 1 (fold 0) is scored at the threshold chosen on image 2, and the other way round.
    assert chosen == [0.75, 0.45]
    assert math.isnan(pooled.score_threshold)
    first, second = pooled.per_image
    assert first["image_id"] == 1 and first["dq"] == pytest.approx(2 / 3)  # 2 of 4 at 0.75
    assert second["image_id"] == 2 and second["dq"] == pytest.approx(3 / 3.5)  # FP at 0.45
    # Chosen and scored on the same images, each would score 1.0: the optimism avoided.
    assert pooled.summarize()["PQ"] < 0.8
    with pytest.raises(ValueError, match="folds"):
        cross_validate(coco_gt, results, NAMES, GRID, DEFAULT_RULE, folds=3)


def test_precedence_explicit_key_operating_point_file_default(tmp_path):
    cfg = {"TEST": {"PATHOLOGY": {"SCORE_THRESHOLD": -1.0},
                    "OPERATING_POINT": {"SCORE_THRESHOLD": -1.0, "DATASET": ""}}}
    assert resolve_score_threshold(None, cfg, tmp_path) == (0.5, "default: no operating point")
    write_operating_point(tmp_path, {"score_threshold": 0.35, "dataset": "cells_val"})
    found = resolve_score_threshold(None, cfg, tmp_path / "model_best.pth")
    assert found.value == 0.35 and found.source.startswith("operating point chosen on cells_val")
    cfg["TEST"]["OPERATING_POINT"].update(SCORE_THRESHOLD=0.3, DATASET="cells_val")
    assert resolve_score_threshold(None, cfg, tmp_path).value == 0.3  # recorded in config.yaml
    cfg["TEST"]["PATHOLOGY"]["SCORE_THRESHOLD"] = 0.6
    assert resolve_score_threshold(None, cfg, tmp_path) == (0.6,
                                                            "TEST.PATHOLOGY.SCORE_THRESHOLD")
    assert resolve_score_threshold(0.2, cfg, tmp_path, flag="--x") == (0.2, "--x")
    assert resolve_score_threshold(0.0, cfg, tmp_path).value == 0.0  # 0 is a value, not unset
    with pytest.raises(ValueError, match="--x"):
        resolve_score_threshold(1.5, cfg, tmp_path, flag="--x")
    (tmp_path / "operating_point.json").write_text('{"score_threshold": "high"}')
    from seg_project.utils.errors import DatasetError

    with pytest.raises(DatasetError, match="operating_point.json"):
        read_operating_point(tmp_path)


def test_training_chose_an_operating_point(trained_run):
    point = read_operating_point(trained_run / "model_final.pth")
    assert point is not None and point["dataset"] == "cells_val"
    assert point["overlap_rule"] == DEFAULT_RULE.to_dict()
    assert [r["score_threshold"] for r in point["grid"]] == GRID
    pqs = [r["PQ"] for r in point["grid"]]
    assert point["best"]["PQ"] == max(pqs)
    assert point["score_threshold"] == GRID[pqs.index(max(pqs))]  # the first of the best
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["TEST"]["OPERATING_POINT"] == {
        **config["TEST"]["OPERATING_POINT"], "SCORE_THRESHOLD": point["score_threshold"],
        "DATASET": "cells_val"}


# ------------------------------------------------- a run with known best threshold 0.45


def _free_square(occupied: np.ndarray, size: int = 3):
    """A size x size square of pixels no ground truth covers, or None."""
    height, width = occupied.shape
    for row in range(0, height - size, size):
        for col in range(0, width - size, size):
            if not occupied[row:row + size, col:col + size].any():
                mask = np.zeros_like(occupied)
                mask[row:row + size, col:col + size] = True
                return mask
    return None


@pytest.fixture(scope="module")
def known_run(trained_run, tmp_path_factory):
    """A copy of the trained run whose validation predictions are constructed: every ground
    truth cell at 0.9, except the cells touching no other at 0.45, plus a false positive per
    image at 0.4 where there is no cell: PQ is highest at score >= 0.45 only."""
    from seg_project.config import register_run_datasets
    from seg_project.evaluation.results_file import ground_truth

    run = tmp_path_factory.mktemp("known") / "run"
    run.mkdir()
    for name in ("metrics.json", "config.yaml", "cells_split.json", "log.txt"):
        shutil.copy2(trained_run / name, run / name)
    (run / "model_final.pth").symlink_to(trained_run / "model_final.pth")
    cfg = register_run_datasets(run)
    coco_gt, _ = ground_truth("cells_val", list(cfg.DATASETS.CELLS.CLASS_NAMES))
    results, lonely = [], 0
    for image_id in coco_gt.getImgIds():
        anns = coco_gt.imgToAnns[image_id]
        masks = [coco_gt.annToMask(a).astype(bool) for a in anns]
        occupied = np.any(masks, axis=0)
        for ann, mask in zip(anns, masks):
            alone = not any((mask & other).any() for other in masks if other is not mask)
            lonely += alone
            results.append({"image_id": image_id, "category_id": ann["category_id"],
                            "bbox": ann["bbox"], "score": 0.45 if alone else 0.9,
                            "segmentation": rle(mask)})
        stray = _free_square(occupied)
        assert stray is not None
        results.append({"image_id": image_id, "category_id": 1, "score": 0.4,
                        "segmentation": rle(stray)})
    assert lonely
    folder = run / "inference" / "cells_val"
    folder.mkdir(parents=True)
    (folder / "coco_instances_results.json").write_text(json.dumps(results))
    assert load_tool("choose_operating_point").main([str(run)]) == 0
    return run


def test_the_tool_writes_the_point_beside_the_weights_and_in_config_yaml(known_run):
    point = json.loads((known_run / "operating_point.json").read_text())
    assert point["score_threshold"] == 0.45 and point["dataset"] == "cells_val"
    assert point["best"]["DQ"] == pytest.approx(1.0)
    config = yaml.safe_load((known_run / "config.yaml").read_text())
    assert config["TEST"]["OPERATING_POINT"]["SCORE_THRESHOLD"] == 0.45
    assert config["TEST"]["OPERATING_POINT"]["DATASET"] == "cells_val"
    # The dry run chooses the same and writes nothing.
    before = (known_run / "operating_point.json").stat().st_mtime_ns
    assert choose_operating_point(known_run, record=False)["score_threshold"] == 0.45
    assert (known_run / "operating_point.json").stat().st_mtime_ns == before


def test_a_run_from_before_operating_points_gets_its_point_applied(known_run, tmp_path):
    """A config.yaml written before operating points (no TEST.INSTANCE_MAP) holds the default
    of then, TEST.PATHOLOGY.SCORE_THRESHOLD 0.5, which would override the point: choosing one
    sets it to -1. A threshold of a newer config is the user's and stays."""
    old, new = tmp_path / "old", tmp_path / "new"
    for run in (old, new):
        shutil.copytree(known_run, run, symlinks=True)
    config = yaml.safe_load((old / "config.yaml").read_text())
    del config["TEST"]["INSTANCE_MAP"]
    config["TEST"]["PATHOLOGY"]["SCORE_THRESHOLD"] = 0.5
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    config = yaml.safe_load((new / "config.yaml").read_text())
    config["TEST"]["PATHOLOGY"]["SCORE_THRESHOLD"] = 0.5
    (new / "config.yaml").write_text(yaml.safe_dump(config))
    for run, kept in ((old, -1.0), (new, 0.5)):
        assert choose_operating_point(run)["score_threshold"] == 0.45
        test = yaml.safe_load((run / "config.yaml").read_text())["TEST"]
        assert test["PATHOLOGY"]["SCORE_THRESHOLD"] == kept
        assert test["OPERATING_POINT"]["SCORE_THRESHOLD"] == 0.45
        assert resolve_score_threshold(None, {"TEST": test}).value == \
            (0.45 if kept < 0 else 0.5)


def test_export_uses_the_runs_point_unless_told(known_run, synthetic_root, tmp_path, capsys):
    """tools/export.py on a results file of the test images: per image a cell at 0.6 and one
    at 0.3; the run's operating point (0.45) exports the first only, --score-threshold both."""
    from seg_project.data.image_io import read_mask
    from seg_project.data.reader import load_mapping

    mapping = load_mapping(synthetic_root / "test_image_name_to_ids.json")
    results = []
    for item in mapping:
        shape = (item["height"], item["width"])
        for score, (row, col) in ((0.6, (2, 2)), (0.3, (30, 30))):
            results.append({"image_id": item["id"], "category_id": 2, "score": score,
                            "bbox": [col, row, 8, 8],
                            "segmentation": rle(square(row, col, 8, shape))})
    submission = tmp_path / "test-results.json"
    submission.write_text(json.dumps(results))
    export = load_tool("export")
    common = ["--results", str(submission), "--images", str(synthetic_root / "test_release"),
              "--id-map", str(synthetic_root / "test_image_name_to_ids.json"), "--format",
              "label-tiff", "geojson"]
    assert export.main([*common, "--out", str(tmp_path / "op"), "--run", str(known_run)]) == 0
    assert "Cells: score >= 0.45 (operating point chosen on cells_val)" in capsys.readouterr().out
    assert export.main([*common, "--out", str(tmp_path / "all"), "--run", str(known_run),
                        "--score-threshold", "0.2"]) == 0
    assert "Cells: score >= 0.2 (--score-threshold)" in capsys.readouterr().out
    for item in mapping:
        stem = item["file_name"].rsplit(".", 1)[0]
        for out, expected in (("op", [0.6]), ("all", [0.6, 0.3])):
            labels = json.loads((tmp_path / out / "labels" / f"{stem}_labels.json").read_text())
            assert [i["score"] for i in labels["instances"]] == expected
            assert labels["classes"][1]["name"] == "class2"  # the run's class names
            assert int(read_mask(tmp_path / out / "labels" / f"{stem}_instances.tif").max()) \
                == len(expected)
            collection = json.loads((tmp_path / out / "geojson" / f"{stem}.geojson").read_text())
            assert len(collection["features"]) == len(expected)
    # Ids of other images are refused before anything is written.
    submission.write_text(json.dumps([dict(results[0], image_id=999)]))
    assert export.main([*common, "--out", str(tmp_path / "bad"), "--score-threshold", "0.5"]) \
        == 2
    assert "999" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_predict_exports_at_the_point_beside_the_weights(known_run, synthetic_root, tmp_path,
                                                         capsys):
    predict = load_tool("predict")
    image = sorted((synthetic_root / "test_release").glob("*.tif"))[0]
    argv = ["--images", str(image), "--format", "coco", "label-tiff", "--config-file",
            str(QUICK_CONFIG), "--weights", str(known_run / "model_final.pth"),
            "--score-threshold", "0.0"]
    assert predict.main([*argv, "--out", str(tmp_path / "op"),
                         *tiny_opts(synthetic_root, tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Exported cells: score >= 0.45 (operating point chosen on cells_val" in printed
    labels = json.loads((tmp_path / "op" / "labels" / f"{image.stem}_labels.json").read_text())
    assert all(i["score"] >= 0.45 for i in labels["instances"])
    # tools/export.py from that submission, at the same point, writes the same files.
    assert load_tool("export").main([
        "--results", str(tmp_path / "op" / "test-results.json"), "--images", str(image.parent),
        "--format", "label-tiff", "--out", str(tmp_path / "again"), "--run", str(known_run),
        "--class-names", *get_seg_project_cfg().DATASETS.CELLS.CLASS_NAMES]) == 0
    for suffix in ("_instances.tif", "_classes.tif", "_labels.json"):
        assert (tmp_path / "again" / "labels" / f"{image.stem}{suffix}").read_bytes() == \
            (tmp_path / "op" / "labels" / f"{image.stem}{suffix}").read_bytes(), suffix
    assert predict.main([*argv, "--out", str(tmp_path / "low"), "--export-threshold", "0.0",
                         *tiny_opts(synthetic_root, tmp_path)]) == 0
    assert "Exported cells: score >= 0 (--export-threshold)" in capsys.readouterr().out
    submission = json.loads((tmp_path / "low" / "test-results.json").read_text())
    labels = json.loads((tmp_path / "low" / "labels" / f"{image.stem}_labels.json").read_text())
    assert {i["score"] for i in labels["instances"]} <= {e["score"] for e in submission}


def test_report_uses_the_point_unless_told(known_run):
    from seg_project.analysis.report import build_report

    page = build_report(known_run, worst=1)
    assert "score &gt;= 0.45 (operating point chosen on cells_val)" in page
    assert "Operating point: score &gt;= 0.45, chosen on cells_val: PQ 1.0000 there" in page
    assert "mean PQ 1.0000" in page  # the best/worst images, at the point: every cell found
    page = build_report(known_run, worst=1, score_threshold=0.3)
    assert "score &gt;= 0.3 (score_threshold)" in page
    assert "mean PQ 1.0000" not in page  # at 0.3 the false positives are cells too
