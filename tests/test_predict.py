"""Inference and the submission file: a model saved by a short CPU training run predicts the
generated test set; the mapping file is enforced; the real course mapping is covered."""

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile
import torch
from conftest import QUICK_CONFIG, SHARED_DATA, load_tool, tiny_opts

from seg_project.config import get_seg_project_cfg, load_config
from seg_project.data.image_io import DatasetError, read_image
from seg_project.data.reader import load_mapping
from seg_project.inference.postprocess import paste_masks_as_crops
from seg_project.submission import check_submission
from seg_project.visualization import picture_shape

predict_tool = load_tool("predict")

# The 4-iteration model of the `trained_run` fixture is barely trained: its detections score
# low, so these tests keep all of them (threshold 0, in the submission and the exports). What
# they test is the pipeline.
LOW_THRESHOLD = ["--score-threshold", "0.0", "--export-threshold", "0.0"]


def predict_argv(synthetic_root, trained_run, out, *extra):
    """tools/predict.py arguments: ``extra`` first (``--images`` takes several values),
    config overrides last."""
    return [*extra, "--config-file", str(QUICK_CONFIG), "--weights",
            str(trained_run / "model_final.pth"), "--out", str(out), *LOW_THRESHOLD,
            *tiny_opts(synthetic_root, out)]


def test_submission_for_the_generated_test_set(synthetic_root, trained_run, tmp_path):
    out = tmp_path / "submission"
    argv = predict_argv(synthetic_root, trained_run, out, "--images",
                        str(synthetic_root / "test_release"), "--id-map",
                        str(synthetic_root / "test_image_name_to_ids.json"), "--zip")
    assert predict_tool.main(argv) == 0
    mapping = load_mapping(synthetic_root / "test_image_name_to_ids.json")
    sizes = {m["id"]: (m["height"], m["width"]) for m in mapping}
    report = check_submission(out / "test-results.json", mapping, num_classes=4,
                              bbox_format="xywh")
    assert report.ok, report.errors
    entries = json.loads((out / "test-results.json").read_text())
    assert {e["image_id"] for e in entries} == set(sizes)  # every image, the mapping's ids
    for entry in entries:
        assert list(entry) == ["image_id", "bbox", "score", "category_id", "segmentation"]
        assert 1 <= entry["category_id"] <= 4 and isinstance(entry["segmentation"]["counts"], str)
        rle = {"size": entry["segmentation"]["size"],
               "counts": entry["segmentation"]["counts"].encode()}
        assert mask_util.decode(rle).shape == sizes[entry["image_id"]]
    assert (out / "test-results.zip").is_file()
    # An existing submission is not replaced without --overwrite.
    assert predict_tool.main(argv) == 2
    assert predict_tool.main(["--overwrite", *argv]) == 0


def test_plain_files_get_ids_from_sorted_names_and_tta_runs(synthetic_root, trained_run,
                                                            tmp_path, capsys, monkeypatch):
    from seg_project.inference.predictor import FlipResizeTTAMapper

    files = sorted((synthetic_root / "test_release").glob("*.tif"))[:2]
    sizes = [list(read_image(f).shape[:2]) for f in files]
    assert sizes[0] != sizes[1]  # so that each entry's mask size tells its image
    views = []
    make_views = FlipResizeTTAMapper.__call__

    def count_views(mapper, dataset_dict):
        made = make_views(mapper, dataset_dict)
        views.append([(view["height"], view["width"], tuple(view["image"].shape[1:]))
                      for view in made])
        return made

    monkeypatch.setattr(FlipResizeTTAMapper, "__call__", count_views)
    out = tmp_path / "tta"
    argv = predict_argv(synthetic_root, trained_run, out, "--images", *map(str, reversed(files)),
                        "--tta", "--bbox-format", "xyxy")
    argv += ["TEST.AUG.MIN_SIZES", "(64, 80)", "TEST.AUG.MAX_SIZE", "128"]
    assert predict_tool.main(argv) == 0
    assert "ids from sorted file names" in capsys.readouterr().out
    entries = json.loads((out / "test-results.json").read_text())
    assert {e["image_id"] for e in entries} <= {1, 2}
    report = check_submission(entries, {i + 1: read_image(f).shape[:2]
                                        for i, f in enumerate(files)}, 4, bbox_format="xyxy")
    assert report.ok, report.errors
    # Both images have detections (score threshold 0), each under the id of its sorted name.
    assert {e["image_id"] for e in entries} == {1, 2}
    assert all(e["segmentation"]["size"] == sizes[e["image_id"] - 1] for e in entries)
    # TTA ran: per image, 2 sizes x (as is, flipped left-right, flipped top-bottom) views of
    # the original-size image, short sides 64 and 80.
    assert len(views) == 2 and all(len(made) == 6 for made in views)
    for made in views:
        (height, width), shapes = made[0][:2], [shape for *_, shape in made]
        assert (height, width) in [tuple(size) for size in sizes]
        assert sorted({min(shape) for shape in shapes}) == [64, 80]
    # ... and its merged views give other detections than the plain prediction.
    plain_out = tmp_path / "plain"
    argv = predict_argv(synthetic_root, trained_run, plain_out, "--images", *map(str, files))
    assert predict_tool.main(argv) == 0
    plain = json.loads((plain_out / "test-results.json").read_text())
    assert {e["image_id"] for e in plain} == {1, 2}
    assert {e["score"] for e in entries} - {e["score"] for e in plain}


@pytest.mark.parametrize("problem", ["missing file", "wrong size", "outside the folder",
                                     "absolute path", "one file twice"])
def test_bad_mapping_fails_before_inference_and_writes_nothing(
        synthetic_root, trained_run, tmp_path, capsys, problem):
    images = tmp_path / "test_release"
    images.mkdir()
    mapping = load_mapping(synthetic_root / "test_image_name_to_ids.json")
    for entry in mapping:
        (images / entry["file_name"]).write_bytes(
            (synthetic_root / "test_release" / entry["file_name"]).read_bytes())
    id_map = tmp_path / "test_image_name_to_ids.json"
    first = mapping[0]["file_name"]
    if problem == "missing file":
        (images / first).unlink()
        expected = ["the file is missing", first]
    elif problem == "wrong size":
        mapping[0]["height"] += 1
        expected = ["but test_image_name_to_ids.json says", first]
    elif problem in ("outside the folder", "absolute path"):
        # an image beside the folder, with the listed size: only its name is wrong
        (images / first).rename(tmp_path / "outside.tif")
        name = "../outside.tif" if problem == "outside the folder" else str(
            tmp_path / "outside.tif")
        mapping[0]["file_name"] = name
        expected = [f"{id_map}: entry 0 (id {mapping[0]['id']}): file_name {name!r} leaves "
                    "the image folder"]
    else:
        mapping.append(dict(mapping[0], file_name=f"./{first}", id=99))
        expected = [f"{id_map}: ids {mapping[0]['id']} and 99 name one file, {first}"]
    id_map.write_text(json.dumps(mapping))
    out = tmp_path / "out"
    argv = predict_argv(synthetic_root, trained_run, out, "--images", str(images),
                        "--id-map", str(id_map))
    assert predict_tool.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert all(part in err for part in expected), err
    assert not out.exists()


def test_course_mapping_gives_all_101_ids_with_the_staff_keys(trained_run, tmp_path):
    sample = SHARED_DATA / "hw3-sample"
    if not (sample / "test_image_name_to_ids.json").is_file():
        pytest.skip(f"{sample} is not available")
    mapping = load_mapping(sample / "test_image_name_to_ids.json")
    images = tmp_path / "test_release"
    images.mkdir()
    rng = np.random.default_rng(0)
    for entry in mapping:  # stand-ins with the listed names and sizes (33 to 2500 px a side)
        h, w = entry["height"], entry["width"]
        image = np.zeros((h, w, 4), np.uint8)
        image[..., :3] = rng.integers(0, 256, 3, dtype=np.uint8)
        image[..., 3] = 255
        tifffile.imwrite(images / entry["file_name"], image, compression="zlib")
    out = tmp_path / "out"
    argv = ["--config-file", str(QUICK_CONFIG), "--weights", str(trained_run / "model_final.pth"),
            "--images", str(images), "--id-map", str(sample / "test_image_name_to_ids.json"),
            "--out", str(out), *LOW_THRESHOLD, "--max-detections", "2",
            "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
            "MODEL.RPN.POST_NMS_TOPK_TEST", "50"]
    assert predict_tool.main(argv) == 0
    entries = json.loads((out / "test-results.json").read_text())
    assert {e["image_id"] for e in entries} == set(range(1, 102))
    staff = json.loads((sample / "submission_example" / "test-results.json").read_text())
    assert {tuple(sorted(e)) for e in entries} == {tuple(sorted(staff[0]))}
    assert {tuple(sorted(e["segmentation"])) for e in entries} == {("counts", "size")}


def test_crop_pasting_matches_detectron2_full_size_pasting():
    from detectron2.layers.mask_ops import paste_masks_in_image

    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(40, 28, 28, generator=generator)
    xy = torch.rand(40, 2, generator=generator) * 150 - 10
    wh = torch.rand(40, 2, generator=generator) * 60 + 0.5
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 159)  # boxes are clipped before pasting
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 119)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
    reference = paste_masks_in_image(masks, boxes, (120, 160), threshold=0.5).numpy()
    crops = paste_masks_as_crops(masks, boxes, 120, 160, threshold=0.5)
    for full, (crop, x0, y0) in zip(reference, crops):
        mine = np.zeros_like(full)
        mine[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        assert (mine == full).mean() > 0.999  # equal but for float rounding at 0.5 ties


def test_predictor_rejects_missing_weights(tmp_path):
    from seg_project.checkpoint import WeightsNotFoundError
    from seg_project.inference.predictor import Predictor

    cfg = load_config(QUICK_CONFIG)
    with pytest.raises(WeightsNotFoundError, match="model_best.pth"):
        Predictor(cfg, weights=str(tmp_path / "model_best.pth"))


def test_unreadable_test_image_is_named(tmp_path):
    from seg_project.inference.predict import resolve_inputs

    bad = tmp_path / "a.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(DatasetError, match="a.tif"):
        resolve_inputs([Path(bad)])


def test_visualize_model_predictions_next_to_ground_truth(synthetic_root, trained_run, tmp_path):
    from seg_project.data.catalog import register_cells_splits

    visualize = load_tool("visualize")
    out = tmp_path / "pictures"
    argv = ["--config-file", str(QUICK_CONFIG), "--weights", str(trained_run / "model_final.pth"),
            "--dataset", "cells_val", "--score-threshold", "0.0", "--out", str(out),
            "--min-size", "0",  # at the image's size, to compare with it pixel for pixel
            *tiny_opts(synthetic_root, tmp_path)]
    try:
        assert visualize.main(argv) == 0
    finally:
        register_cells_splits()  # back to the default registration for other tests
    val_names = json.loads((trained_run / "cells_split.json").read_text())["val_names"]
    pictures = sorted(out.glob("*.png"))
    assert [p.stem for p in pictures] == sorted(val_names)
    class_names = list(get_seg_project_cfg().DATASETS.CELLS.CLASS_NAMES)
    for picture in pictures:
        image = read_image(synthetic_root / "train" / picture.stem / "image.tif")
        drawn = read_image(picture)
        height, width = picture_shape(*image.shape[:2], class_names)  # with the legend strip
        assert drawn.shape == (height, 2 * image.shape[1], 3)  # ground truth | model
        assert width == image.shape[1] and height >= image.shape[0]
        assert not np.array_equal(drawn[:, :image.shape[1]], image)


def test_predict_reports_images_that_reached_the_detection_cap(synthetic_root, trained_run,
                                                               tmp_path, capsys):
    out = tmp_path / "capped"
    argv = predict_argv(synthetic_root, trained_run, out, "--images",
                        str(synthetic_root / "test_release"), "--max-detections", "2")
    assert predict_tool.main(argv) == 0
    printed = capsys.readouterr().out
    entries = json.loads((out / "test-results.json").read_text())
    per_image = {}
    for entry in entries:
        per_image[entry["image_id"]] = per_image.get(entry["image_id"], 0) + 1
    capped = sum(1 for n in per_image.values() if n >= 2)
    assert capped >= 2, per_image  # score threshold 0: the barely trained model fills the cap
    assert (f"{capped} of 3 images reached TEST.DETECTIONS_PER_IMAGE (2 detections): most "
            "did, so detections were probably cut off") in printed


def test_predict_checks_the_output_before_loading_the_model(synthetic_root, trained_run,
                                                            tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("seg_project.inference.predictor.Predictor", no_model)
    out = tmp_path / "out"
    (out / "test-results.json").mkdir(parents=True)  # a folder where the file would go
    argv = predict_argv(synthetic_root, trained_run, out, "--images",
                        str(synthetic_root / "test_release"), "--overwrite")
    assert predict_tool.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {out / 'test-results.json'}: the submission file is an existing " \
                  "folder\n"


def test_geojson_objects_are_detections_unless_asked():
    args = predict_tool.build_parser().parse_args(
        ["--config-file", "c.yaml", "--weights", "w.pth", "--images", "x", "--out", "o"])
    assert args.object_type == "detection"
    with pytest.raises(SystemExit):
        predict_tool.build_parser().parse_args(
            ["--config-file", "c.yaml", "--weights", "w.pth", "--images", "x", "--out", "o",
             "--object-type", "cell"])


def test_every_output_format_from_one_prediction(synthetic_root, trained_run, tmp_path, capsys):
    """--format coco geojson label-tiff course: every detection in the submission, the cells
    (one per nucleus, under the overlap rule) in the other formats: one GeoJSON feature per
    instance of the label maps, a course-layout dataset the reader loads again; an existing
    course folder is kept without --overwrite."""
    from seg_project.data.image_io import read_mask
    from seg_project.data.reader import load_annotated_split

    out = tmp_path / "formats"
    images = synthetic_root / "test_release"
    argv = predict_argv(synthetic_root, trained_run, out, "--images", str(images), "--id-map",
                        str(synthetic_root / "test_image_name_to_ids.json"), "--format", "coco",
                        "geojson", "label-tiff", "course", "--max-detections", "20",
                        "--object-type", "annotation")
    assert predict_tool.main(argv) == 0
    class_names = list(get_seg_project_cfg().DATASETS.CELLS.CLASS_NAMES)
    entries = json.loads((out / "test-results.json").read_text())
    mapping = {m["file_name"]: m["id"] for m in load_mapping(
        synthetic_root / "test_image_name_to_ids.json")}
    for image in sorted(images.glob("*.tif")):
        own = [e for e in entries if e["image_id"] == mapping[image.name]]
        nonempty = [e for e in own if mask_util.area(
            {"size": e["segmentation"]["size"], "counts": e["segmentation"]["counts"].encode()})]
        collection = json.loads((out / "geojson" / f"{image.stem}.geojson").read_text())
        assert collection["type"] == "FeatureCollection"
        instances = read_mask(out / "labels" / f"{image.stem}_instances.tif")
        classes = read_mask(out / "labels" / f"{image.stem}_classes.tif")
        assert instances.shape == classes.shape == tuple(own[0]["segmentation"]["size"])
        assert ((instances > 0) == (classes > 0)).all() and instances.max() <= len(nonempty)
        # The GeoJSON and the label TIFFs hold the same cells, each a submission entry.
        assert len(collection["features"]) == instances.max()
        assert sorted(f["properties"]["measurements"]["score"]
                      for f in collection["features"]) == sorted(
            i["score"] for i in json.loads((out / "labels" / f"{image.stem}_labels.json")
                                           .read_text())["instances"])
        assert {f["properties"]["measurements"]["score"] for f in collection["features"]} \
            <= {e["score"] for e in nonempty}
        # editable QuPath annotations, as asked for
        assert {f["properties"]["objectType"] for f in collection["features"]} <= {"annotation"}
        # the label TIFFs' numbers named in their sidecar
        labels = json.loads((out / "labels" / f"{image.stem}_labels.json").read_text())
        assert [c["name"] for c in labels["classes"]] == class_names
        assert len(labels["instances"]) == instances.max()
        for instance in labels["instances"]:
            assert np.all(classes[instances == instance["id"]] == instance["class_id"])
    assert any(json.loads(p.read_text())["features"] for p in (out / "geojson").iterdir())
    records = load_annotated_split(out / "course", 4, cache_dir=False)
    assert len(records) == len(list(images.glob("*.tif")))
    assert predict_tool.main(["--overwrite", *argv]) == 0  # --overwrite replaces them all
    capsys.readouterr()
    # without it, a second run stops before inference and changes nothing
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    assert predict_tool.main(argv) == 2
    assert "error:" in capsys.readouterr().err
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before


@pytest.mark.parametrize("tta", [False, True])
def test_native_scale_prediction_in_tiles(synthetic_root, trained_run, tmp_path, tta):
    """RESIZE_MODE scale + TEST.TILE: images larger than a tile are predicted in tiles (with
    and without TTA) and the submission is valid at every image's own size."""
    files = sorted((synthetic_root / "test_release").glob("*.tif"))[:2]
    sizes = {i + 1: read_image(f).shape[:2] for i, f in enumerate(files)}
    assert max(max(s) for s in sizes.values()) > 48  # so that they need tiles
    out = tmp_path / "tiled"
    argv = predict_argv(synthetic_root, trained_run, out, "--images", *map(str, files),
                        *(["--tta"] if tta else []))
    argv += ["INPUT.RESIZE_MODE", "scale", "INPUT.SCALE_TEST", "0.75", "TEST.AUG.SCALES",
             "(1.0, 1.25)", "TEST.TILE.SIZE", "48", "TEST.TILE.OVERLAP", "16"]
    assert predict_tool.main(argv) == 0
    entries = json.loads((out / "test-results.json").read_text())
    assert entries, "the model predicted nothing at all"
    report = check_submission(entries, sizes, 4, bbox_format="xywh")
    assert report.ok, report.errors
