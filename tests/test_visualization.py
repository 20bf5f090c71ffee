"""Pictures of ground truth and predictions (seg_project.visualization, tools/visualize*.py):
sizes, that instances are drawn where they are, score threshold and cap, bbox formats, the
crop decoder, atomic writes, and the tools end to end on a tiny course-layout dataset."""

import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile
from conftest import QUICK_CONFIG, REPO, load_tool
from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_project import visualization as vis
from seg_project.data.catalog import register_cells
from seg_project.data.image_io import DatasetError, read_image
from seg_project.data.reader import load_annotated_split
from seg_project.data.rle import decode, encode_crop
from seg_project.visualization import draw as vis_draw
from seg_project.visualization import jobs as vis_jobs
from seg_project.visualization.instances import _decode_crops

S = vis.DrawStyle

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CONSEP_TEST = DATA / "consep" / "test"
HW3 = DATA / "hw3-sample"
H, W = 180, 200  # big enough for the legend and titles (>= 160 px)
# Square instances (x0, y0, size, class 1..K) of the tiny images (clear of the legend).
SQUARES = [(20, 100, 24, 1), (90, 40, 30, 2), (140, 120, 20, 2)]
TINY_DATASET = "vis_test_tiny"


def _image(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(90, 140, size=(H, W, 3))).astype(np.uint8)


def _square_rle(x0, y0, size):
    return encode_crop(np.ones((size, size), bool), x0, y0, H, W)


def _region(picture, image, x0, y0, size):
    """Share of pixels inside a square (1 px in from its edge) that the drawing changed."""
    inner = (slice(y0 + 1, y0 + size - 1), slice(x0 + 1, x0 + size - 1))
    return float(np.any(picture[inner] != image[inner], axis=-1).mean())


def _record(file_name="x/image.tif", image_id=1):
    annotations = [{"bbox": [x, y, s, s], "bbox_mode": 1, "category_id": c - 1,
                    "segmentation": _square_rle(x, y, s), "area": s * s, "iscrowd": 0}
                   for x, y, s, c in SQUARES]
    return {"file_name": file_name, "image_id": image_id, "height": H, "width": W,
            "annotations": annotations}


def _entries(image_id=1, xyxy=False, scores=(0.95, 0.7, 0.3)):
    entries = []
    for (x, y, s, c), score in zip(SQUARES, scores):
        box = [x, y, x + s, y + s] if xyxy else [x, y, s, s]
        entries.append({"image_id": image_id, "bbox": [float(v) for v in box], "score": score,
                        "category_id": c, "segmentation": _square_rle(x, y, s)})
    return entries


@pytest.fixture(scope="module")
def metadata():
    return vis.metadata_for_classes(["alpha", "beta", "gamma", "delta"])


@pytest.fixture
def course_root(tmp_path):
    """A course-layout root: train/ with two annotated images, test_release/ with two test
    images, and the mapping file giving them ids 7 and 3."""
    root = tmp_path / "root"
    for index, name in enumerate(["img_a", "img_b"]):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        rgba = np.dstack([_image(index), np.full((H, W), 255, np.uint8)])
        tifffile.imwrite(folder / "image.tif", rgba, compression="lzw")
        for number in (1, 2):
            mask = np.zeros((H, W), np.float64)
            for instance, (x, y, s, c) in enumerate(SQUARES, start=1):
                if c == number:
                    mask[y:y + s, x:x + s] = instance
            tifffile.imwrite(folder / f"class{number}.tif", mask)
    test_dir = root / "test_release"
    test_dir.mkdir()
    mapping = []
    for index, (name, image_id) in enumerate([("b-uuid.tif", 7), ("a-uuid.tif", 3)]):
        tifffile.imwrite(test_dir / name, _image(10 + index))
        mapping.append({"file_name": name, "id": image_id, "height": H, "width": W})
    (root / "test_image_name_to_ids.json").write_text(json.dumps(mapping))
    return root


def _write_results(path, entries):
    path.write_text(json.dumps(entries))
    return path


# ---------------------------------------------------------------- drawing


def test_crop_decoder_matches_pycocotools():
    rng = np.random.default_rng(3)
    height, width = 37, 29
    masks = [rng.random((height, width)) > 0.6 for _ in range(5)]
    masks.append(np.zeros((height, width), bool))
    full_height = np.zeros((height, width), bool)  # runs cross columns: top + bottom rows
    full_height[:, 3:6] = True
    masks.append(full_height)
    corner = np.zeros((height, width), bool)
    corner[-1, -1] = True
    masks.append(corner)
    rles = [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    for mask, (crop, x0, y0) in zip(masks, _decode_crops(rles)):
        if not mask.any():
            assert crop is None
            continue
        rebuilt = np.zeros_like(mask)
        rebuilt[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        np.testing.assert_array_equal(rebuilt, mask)


def test_ground_truth_is_drawn_where_the_instances_are(metadata):
    image = _image()
    picture, info = vis.draw_ground_truth(image, _record(), metadata, return_info=True)
    # The image's part, then the legend strip under it.
    assert info.legend_height > 0 and picture.dtype == np.uint8
    assert picture.shape == (H + info.legend_height, W, 3)
    for x, y, s, _ in SQUARES:
        assert _region(picture, image, x, y, s) > 0.9
    assert not np.array_equal(picture, image)


def test_ground_truth_cap_draws_fewer(metadata):
    image = _image()
    picture = vis.draw_ground_truth(image, _record(), metadata, S(max_instances=1, legend=False))
    x, y, s, _ = SQUARES[0]
    assert _region(picture, image, x, y, s) > 0.9
    for x, y, s, _ in SQUARES[1:]:
        assert _region(picture, image, x, y, s) < 0.2


def test_ground_truth_size_mismatch_is_refused(metadata):
    with pytest.raises(ValueError, match="x/image.tif"):
        vis.draw_ground_truth(_image()[:100], _record(), metadata)


def test_score_threshold_and_cap_reduce_what_is_drawn(metadata):
    image = _image()
    options = S(labels=False, legend=False)
    everything = vis.draw_predictions(image, _entries(), metadata, 0.0, options)
    assert all(_region(everything, image, x, y, s) > 0.9 for x, y, s, _ in SQUARES)
    confident = vis.draw_predictions(image, _entries(), metadata, 0.5, options)
    changed = [_region(confident, image, x, y, s) for x, y, s, _ in SQUARES]
    assert changed[0] > 0.9 and changed[1] > 0.9 and changed[2] < 0.2
    # The cap keeps the highest scores, whatever the order of the entries.
    capped = vis.draw_predictions(image, _entries()[::-1], metadata, 0.0,
                                  replace(options, max_instances=1))
    changed = [_region(capped, image, x, y, s) for x, y, s, _ in SQUARES]
    assert changed[0] > 0.9 and max(changed[1:]) < 0.2


def test_labels_add_text(metadata):
    image = _image()
    plain = vis.draw_predictions(image, _entries(), metadata, 0.0, S(labels=False, legend=False))
    labelled = vis.draw_predictions(image, _entries(), metadata, 0.0,
                                    S(labels=True, legend=False))
    assert np.any(plain != labelled)
    # Each label ("class score%") starts at its instance's bottom-left corner: a dark box
    # with text in the instance's class color. Nothing else changes.
    changed = np.any(plain != labelled, axis=-1)
    elsewhere = changed.copy()
    palette = np.asarray(metadata.thing_colors, dtype=float)
    for (x, y, s, c), entry in zip(SQUARES, _entries()):
        text = f"{metadata.thing_classes[c - 1]} {entry['score'] * 100:.0f}%"
        region = (slice(y + s - 3, y + s + 25), slice(x - 3, x + 10 * len(text)))
        rows, cols = np.nonzero(changed[region])
        assert len(rows), text
        top, left = rows.min() + y + s - 3, cols.min() + x - 3
        assert abs(top - (y + s)) <= 2 and abs(left - x) <= 2, (text, top, left)
        assert cols.max() - cols.min() + 1 >= 4 * len(text) and rows.max() - rows.min() >= 8
        pixels = labelled[region][changed[region]].astype(int)
        assert (pixels.max(axis=1) < 60).mean() > 0.5, text  # the box behind the text
        bright = Counter(tuple(p) for p in pixels if p.max() >= 150)
        text_color = np.asarray(bright.most_common(1)[0][0])
        nearest = np.argmin(np.linalg.norm(palette - text_color, axis=1))
        assert nearest == c - 1, (text, text_color)
        elsewhere[region] = False
    assert not elsewhere.any()


def test_unknown_category_names_the_source(metadata):
    entries = _entries()
    entries[0]["category_id"] = 9
    with pytest.raises(DatasetError, match=r"results\.json.*category_id 9"):
        vis.draw_predictions(_image(), entries, metadata, where="results.json")


def test_mask_of_another_size_is_refused(metadata):
    entries = _entries()
    entries[1]["segmentation"] = encode_crop(np.ones((3, 3), bool), 0, 0, 50, 50)
    with pytest.raises(DatasetError, match=r"size \[50, 50\] does not match"):
        vis.draw_predictions(_image(), entries, metadata, 0.0)


def test_bbox_format_detection():
    assert vis.detect_bbox_format(_entries(xyxy=True)) == "xyxy"
    assert vis.detect_bbox_format(_entries(xyxy=False)) == "xywh"
    boxes_only = [{"bbox": [50, 60, 10, 10], "score": 1.0, "category_id": 1}]
    assert vis.detect_bbox_format(boxes_only) == "xywh"  # x2 < x1: cannot be XYXY


def test_xyxy_boxes_are_drawn_at_their_corners(metadata):
    image = np.full((H, W, 3), 128, np.uint8)
    entry = {"bbox": [40.0, 40.0, 80.0, 80.0], "score": 0.9, "category_id": 1}  # no mask
    style = S(boxes=True, labels=False, legend=False)
    as_xyxy = vis.draw_predictions(image, [entry], metadata, style=style, bbox_format="xyxy")
    as_xywh = vis.draw_predictions(image, [entry], metadata, style=style, bbox_format="xywh")

    def right_edge(picture, x):
        return int(np.any(picture[45:75, x - 1:x + 2] != 128, axis=-1).sum())

    assert right_edge(as_xyxy, 80) > 10 and right_edge(as_xyxy, 120) == 0
    assert right_edge(as_xywh, 120) > 10 and right_edge(as_xywh, 80) == 0


def test_side_by_side():
    left, right = _image(1), _image(2)
    both = vis.side_by_side(left, right)
    assert both.shape == (H, 2 * W, 3)
    assert np.all(both[:, W - 1:W + 1] == 255)  # the separator
    np.testing.assert_array_equal(both[:20, W + 2:], right[:20, 2:])  # titles sit at the bottom
    assert np.any(both[-20:, :W] != left[-20:])
    with pytest.raises(ValueError, match="one size"):
        vis.side_by_side(left, right[:10])


def _title_pixels(half):
    """The bright (text) and dark (outline) pixels of a panel's bottom-left title on a flat
    grey picture."""
    corner = half[-half.shape[0] // 4:].astype(int)
    return (corner > 160).all(axis=-1), (corner < 60).all(axis=-1)


@pytest.mark.parametrize("side", [180, 700, 1400])
def test_titles_outline_lines_up_with_the_text(side):
    """Panel titles are legible: the dark outline hugs the white strokes along the whole
    title (it was drawn with wider letters, which drifted right of the text)."""
    grey = np.full((side, side, 3), 128, np.uint8)
    picture = vis.side_by_side(grey, grey)
    for half in (picture[:, :side - 1], picture[:, side + 1:]):
        text, outline = _title_pixels(half)
        rows, cols = np.nonzero(text)
        assert len(rows) > 50 and rows.max() - rows.min() >= 8  # letters of a readable size
        near = cv2.dilate(text.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=3) > 0
        assert outline.sum() > len(rows) // 2
        assert not (outline & ~near).any()  # no outline away from the strokes
        outline_cols = np.nonzero(outline.any(axis=0))[0]
        assert abs(int(outline_cols.max()) - int(cols.max())) <= 3
        assert abs(int(outline_cols.min()) - int(cols.min())) <= 3


def test_the_legend_says_which_score_threshold_was_drawn(metadata):
    image = _image()
    entries = _entries(scores=(0.95, 0.9, 0.85))  # above both thresholds: the same cells
    at_low, info = vis.draw_predictions(image, entries, metadata, 0.3, return_info=True)
    at_high = vis.draw_predictions(image, entries, metadata, 0.5)
    assert info.score_threshold == 0.3 and vis.threshold_text(0.3) == "score >= 0.3"
    assert info.legend == ["alpha: 1", "beta: 2", "gamma: 0", "delta: 0"]
    np.testing.assert_array_equal(at_low[:H], at_high[:H])
    # Only the text of the strip's last row differs, at its right (the left is the title's).
    rows, cols = np.nonzero(np.any(at_low != at_high, axis=-1))
    assert len(rows) > 20 and cols.min() > W // 3
    assert rows.min() >= H + info.legend_height // 2 and rows.max() < info.height
    # Ground truth says no threshold: that part of its strip is blank.
    truth, truth_info = vis.draw_ground_truth(image, _record(), metadata, return_info=True)
    assert truth_info.score_threshold is None
    assert truth.shape == at_low.shape
    corner = truth[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert (corner == corner[0, 0]).all()


@pytest.mark.parametrize("width", [170, 260, 600, 1024])
def test_what_was_drawn_stays_in_the_strip_clear_of_the_title(width):
    from seg_project.visualization import text

    names = ["other", "inflammatory", "epithelial", "spindle"]
    lines = [f"{name}: 1234" for name in names]
    colors = [[255, 200, 0], [0, 200, 83], [0, 160, 255], [255, 110, 0]]
    plain = text.legend_strip(width, names, lines, colors)
    strip = text.legend_strip(width, names, lines + ["top 300 of 2283 shown"], colors,
                              "score >= 0.55")
    assert strip.shape == plain.shape == (vis.legend_height(width, names), width, 3)
    rows, cols = np.nonzero(np.any(strip != plain, axis=-1))
    assert len(rows) > 30 and cols.min() >= 2 and cols.max() <= width - 3  # all of it shows
    titled = plain.copy()
    text.put_title(titled, "ground truth", 0, width)
    title = np.any(titled != plain, axis=-1).astype(np.uint8)
    assert title.any() and title[:strip.shape[0] // 2].sum() == 0  # in the strip's last row
    near_title = cv2.dilate(title, np.ones((3, 3), np.uint8), iterations=2) > 0
    assert not near_title[rows, cols].any()


def test_picture_flags_map_onto_one_draw_style():
    import argparse

    parser = argparse.ArgumentParser()
    vis.add_picture_arguments(parser)
    args = parser.parse_args([
        "--out", "x", "--no-labels", "--label-limit", "7", "--boxes", "--alpha", "0.3",
        "--min-size", "0", "--max-size", "900", "--resize", "smooth", "--max-instances", "5"])
    assert vis.draw_style(args) == S(labels=False, label_limit=7, boxes=True, alpha=0.3,
                                     min_size=0, max_size=900, resize="smooth",
                                     max_instances=5)
    assert vis.picture_options(args)["style"] == vis.draw_style(args)
    assert vis.draw_style(parser.parse_args(["--out", "x"])) == vis.TOOL_STYLE
    assert vis.TOOL_STYLE.min_size == vis.DEFAULT_MIN_SIZE
    for bad in (dict(alpha=1.5), dict(label_limit=-1), dict(min_size=-1), dict(max_size=0),
                dict(resize="cubic"), dict(max_instances=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            S(**bad)


def test_ground_truth_half_shares_the_style_but_not_the_boxes(course_root, tmp_path, metadata):
    records, _ = vis.load_annotated_source(course_root, class_names=["a", "b"])
    record = records[0]
    for annotation in record["annotations"]:  # boxes 4 px off the masks: a box would show
        x, y, w, h = annotation["bbox"]
        annotation["bbox"] = [x - 4, y - 4, w + 8, h + 8]
    entries = _entries(image_id=record["image_id"])
    style = S(boxes=True, max_instances=2, min_size=300, labels=False)
    written = vis.render_predictions([(record, entries)], metadata, tmp_path / "p", style=style,
                                     score_threshold=0.0, with_ground_truth=True,
                                     progress=False)
    picture = read_image(written[0])
    image = read_image(record["file_name"])
    truth = vis.draw_ground_truth(image, record, metadata, replace(style, boxes=False))
    predicted = vis.draw_predictions(image, entries, metadata, 0.0, style)
    expected = vis.side_by_side(truth, predicted)
    np.testing.assert_array_equal(picture, expected)
    assert not np.array_equal(truth, vis.draw_ground_truth(image, record, metadata, style))


def test_save_png_is_atomic_and_keeps_existing_files(tmp_path):
    picture = _image()
    target = vis.save_png(tmp_path / "a.png", picture)
    np.testing.assert_array_equal(read_image(target), picture)
    with pytest.raises(FileExistsError, match="a.png"):
        vis.save_png(target, np.zeros_like(picture))
    np.testing.assert_array_equal(read_image(target), picture)
    vis.save_png(target, np.zeros_like(picture), overwrite=True)
    assert read_image(target).max() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no temporary files left


def test_select_records():
    records = [{"file_name": f"/d/img{i}/image.tif"} for i in range(10)]
    first = vis.select_records(records, sample=3, seed=5)
    assert first == vis.select_records(records, sample=3, seed=5)
    assert len(first) == 3 and first == sorted(first, key=records.index)
    assert vis.select_records(records, sample=3, seed=6) != first
    assert vis.select_records(records, sample=50) == records
    picked = vis.select_records(records, names=["img7", "img2"])
    assert [vis.image_name(r["file_name"]) for r in picked] == ["img2", "img7"]
    with pytest.raises(ValueError, match="img99"):
        vis.select_records(records, names=["img99"])


def test_load_results_names_file_and_entry(tmp_path):
    good = _write_results(tmp_path / "good.json", _entries())
    assert len(vis.load_results(good)) == 3
    bad_entries = _entries()
    del bad_entries[1]["score"]
    bad = _write_results(tmp_path / "bad.json", bad_entries)
    with pytest.raises(DatasetError, match=r"bad\.json: entry 1: score"):
        vis.load_results(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(DatasetError, match="broken.json: not valid JSON"):
        vis.load_results(broken)


# ---------------------------------------------------------------- the tools


def test_visualize_data_on_a_root(course_root, tmp_path):
    out = tmp_path / "pictures"
    tool = load_tool("visualize_data")
    # --min-size 0: at the image's size (the default draws small images up to 1,024 px).
    assert tool.main([str(course_root), "--out", str(out), "--num-classes", "2",
                      "--min-size", "0"]) == 0
    pictures = sorted(out.iterdir())
    assert [p.name for p in pictures] == ["img_a.png", "img_b.png"]
    drawn = read_image(pictures[0])
    image = read_image(course_root / "train" / "img_a" / "image.tif")
    # The image's size, and the legend strip under it.
    assert drawn.shape == (*vis.picture_shape(H, W, ["class1", "class2"]), 3)
    assert drawn.shape[0] > H and drawn.shape[1:] == image.shape[1:]
    assert all(_region(drawn, image, x, y, s) > 0.9 for x, y, s, _ in SQUARES)
    # Nothing is overwritten without --overwrite; the refusal comes before any drawing.
    before = pictures[0].read_bytes()
    assert tool.main([str(course_root), "--out", str(out), "--num-classes", "2"]) == 2
    assert pictures[0].read_bytes() == before
    assert tool.main([str(course_root), "--out", str(out), "--num-classes", "2",
                      "--overwrite", "--names", "img_b"]) == 0


def test_visualize_data_on_a_registered_dataset(course_root, tmp_path):
    register_cells(TINY_DATASET, course_root / "train", names=["img_b"],
                   class_names=["a", "b"], cache_dir=False)
    try:
        out = tmp_path / "pictures"
        assert load_tool("visualize_data").main([TINY_DATASET, "--out", str(out)]) == 0
        assert [p.name for p in out.iterdir()] == ["img_b.png"]
    finally:
        DatasetCatalog.remove(TINY_DATASET)
        MetadataCatalog.remove(TINY_DATASET)


def test_visualize_data_runs_as_a_script(course_root, tmp_path):
    """The file runs as a command (entry point, imports, exit status)."""
    out = tmp_path / "pictures"
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "visualize_data.py"), str(course_root),
         "--out", str(out), "--num-classes", "2", "--sample", "1", "--seed", "1"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote 1 picture(s)" in done.stdout
    assert len(list(out.glob("img_*.png"))) == 1


def test_visualize_data_bad_source(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert load_tool("visualize_data").main([str(missing), "--out", str(tmp_path)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_visualize_results_with_mapping_file(course_root, tmp_path):
    test_dir = course_root / "test_release"
    # The staff's example writes XYXY boxes; "auto" finds that out from the masks.
    results = _write_results(tmp_path / "results.json",
                             _entries(image_id=7, xyxy=True) + _entries(image_id=3)[:1])
    out = tmp_path / "pictures"
    rc = load_tool("visualize").main([
        "--results", str(results), "--images", str(test_dir), "--id-map",
        str(course_root / "test_image_name_to_ids.json"), "--out", str(out),
        "--score-threshold", "0.5", "--min-size", "0"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["a-uuid.png", "b-uuid.png"]
    with_three = read_image(out / "b-uuid.png")  # id 7: two entries above 0.5
    image = read_image(test_dir / "b-uuid.tif")
    assert with_three.shape == (*vis.picture_shape(H, W, vis.class_names_for(4)), 3)
    changed = [_region(with_three, image, x, y, s) for x, y, s, _ in SQUARES]
    assert changed[0] > 0.9 and changed[1] > 0.9 and changed[2] < 0.2
    with_one = read_image(out / "a-uuid.png")  # id 3: one entry
    image = read_image(test_dir / "a-uuid.tif")
    changed = [_region(with_one, image, x, y, s) for x, y, s, _ in SQUARES]
    assert changed[0] > 0.9 and max(changed[1:]) < 0.2


def test_visualize_results_with_sorted_names(course_root, tmp_path, caplog):
    test_dir = course_root / "test_release"
    # Without a mapping, ids are 1..n in sorted file-name order: a-uuid.tif is 1.
    results = _write_results(tmp_path / "results.json", _entries(image_id=1)[:1])
    out = tmp_path / "pictures"
    tool = load_tool("visualize")
    assert tool.main(["--results", str(results), "--images", str(test_dir),
                      "--out", str(out), "--min-size", "0"]) == 0
    assert "sorted file-name order" in caplog.text
    x, y, s, _ = SQUARES[0]
    assert _region(read_image(out / "a-uuid.png"), read_image(test_dir / "a-uuid.tif"),
                   x, y, s) > 0.9
    assert _region(read_image(out / "b-uuid.png"), read_image(test_dir / "b-uuid.tif"),
                   x, y, s) < 0.2


def test_visualize_results_unknown_image_id(course_root, tmp_path, capsys):
    results = _write_results(tmp_path / "results.json", _entries(image_id=42))
    rc = load_tool("visualize").main([
        "--results", str(results), "--images", str(course_root / "test_release"),
        "--id-map", str(course_root / "test_image_name_to_ids.json"),
        "--out", str(tmp_path / "pictures")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "results.json" in err and "42" in err
    assert not (tmp_path / "pictures").exists()


def test_visualize_results_next_to_ground_truth(course_root, tmp_path):
    records = vis.load_annotated_source(course_root, class_names=["a", "b"])[0]
    image_id = records[0]["image_id"]
    results = _write_results(tmp_path / "results.json", _entries(image_id=image_id))
    out = tmp_path / "pictures"
    rc = load_tool("visualize").main([
        "--results", str(results), "--gt-root", str(course_root), "--class-names", "a,b",
        "--out", str(out), "--sample", "1", "--seed", "0", "--names", "img_a",
        "--min-size", "0"])
    assert rc == 0
    picture = read_image(out / "img_a.png")
    assert picture.shape == (H + vis.legend_height(W, ["a", "b"]), 2 * W, 3)
    image = read_image(course_root / "train" / "img_a" / "image.tif")
    for x, y, s, _ in SQUARES:
        assert _region(picture[:, :W], image, x, y, s) > 0.9  # ground truth, all three
    assert _region(picture[:, W:], image, *SQUARES[2][:3]) < 0.2  # score 0.3: not drawn


def _fake_predict_files(cfg, weights, device, paths):
    for path in paths:
        yield path, [{k: v for k, v in e.items() if k != "image_id"} for e in _entries()]


def test_visualize_model_plumbing(course_root, tmp_path, monkeypatch):
    """The model mode around the predictor (which is faked here): config, images, output."""
    config = tmp_path / "config.yaml"
    config.write_text("MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 2\nDATASETS:\n  CELLS:\n"
                      "    CLASS_NAMES: [a, b]\n")
    monkeypatch.setattr(vis_jobs, "_predict_files", _fake_predict_files)
    out = tmp_path / "pictures"
    rc = load_tool("visualize").main([
        "--config-file", str(config), "--weights", str(tmp_path / "model.pth"),
        "--images", str(course_root / "test_release" / "a-uuid.tif"), "--out", str(out),
        "--device", "cpu", "--min-size", "0"])
    assert rc == 0
    picture = read_image(out / "a-uuid.png")
    image = read_image(course_root / "test_release" / "a-uuid.tif")
    assert _region(picture, image, *SQUARES[0][:3]) > 0.9
    assert _region(picture, image, *SQUARES[2][:3]) < 0.2


def test_visualize_model_with_real_predictor(course_root, tmp_path):
    try:
        import seg_project.inference.predictor  # noqa: F401
    except ImportError:
        pytest.skip("seg_project.inference not available yet")
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from seg_project.config import load_config

    cfg = load_config(QUICK_CONFIG)
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("model")  # untrained
    config = QUICK_CONFIG
    out = tmp_path / "pictures"
    rc = load_tool("visualize").main([
        "--config-file", str(config), "--weights", str(tmp_path / "model.pth"),
        "--images", str(course_root / "test_release"), "--out", str(out), "--device", "cpu",
        "--score-threshold", "0", "--min-size", "0"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["a-uuid.png", "b-uuid.png"]
    class_names = list(cfg.DATASETS.CELLS.CLASS_NAMES)
    assert read_image(out / "a-uuid.png").shape == (*vis.picture_shape(H, W, class_names), 3)


# ---------------------------------------------------------------- real data


def test_consep_ground_truth_picture(metadata):
    if not CONSEP_TEST.is_dir():
        pytest.skip(f"CoNSeP data not found at {CONSEP_TEST}")
    record = load_annotated_split(CONSEP_TEST, 4, names=["test_2"], cache_dir=False)[0]
    image = read_image(record["file_name"])
    picture = vis.draw_ground_truth(image, record, metadata)
    assert image.shape == (1000, 1000, 3)
    assert picture.shape == (1000 + vis.legend_height(1000, metadata.thing_classes), 1000, 3)
    # Every instance is drawn: (nearly) all of its pixels changed.
    union = decode(mask_util.merge([ann["segmentation"] | {"counts": ann["segmentation"][
        "counts"].encode()} for ann in record["annotations"]])) > 0
    changed = np.any(picture[:1000] != image, axis=-1)
    assert changed[union].mean() > 0.9


def test_course_sample_through_the_tool(tmp_path):
    if not (HW3 / "train").is_dir():
        pytest.skip(f"course sample data not found at {HW3}")
    out = tmp_path / "pictures"
    assert load_tool("visualize_data").main([str(HW3), "--out", str(out),
                                             "--min-size", "0"]) == 0
    picture = read_image(out / "ta-sample.png")
    height, width = read_image(HW3 / "train" / "ta-sample" / "image.tif").shape[:2]
    assert picture.shape == (*vis.picture_shape(height, width, vis.class_names_for(4)), 3)
    assert picture.shape[0] > height and picture.shape[1] == width


def test_staff_example_boxes_are_xyxy():
    example = HW3 / "submission_example" / "test-results.json"
    if not example.is_file():
        pytest.skip(f"course sample data not found at {example}")
    assert vis.detect_bbox_format(vis.load_results(example)) == "xyxy"


def test_corrupt_mask_names_the_source(metadata):
    entries = _entries()
    good = entries[0]["segmentation"]["counts"]
    for counts in (good[:-3], "0" + good, "zzzz" + good):  # cut off; runs past the image
        entries[0]["segmentation"] = {"size": [H, W], "counts": counts}
        with pytest.raises(DatasetError, match=r"res\.json: RLE counts"):
            vis.draw_predictions(_image(), entries, metadata, where="res.json")


# ---------------------------------------------------------------- readable at any size

SMALL_H, SMALL_W = 100, 180  # the demo's small images
# A 10x20 (w x h) cell at column 100, row 40 of the small image.
CELL = (100, 40, 10, 20)


def _small_root(tmp_path, value=128):
    """A course-layout root with one plain grey 180x100 image holding one cell of class 2."""
    folder = tmp_path / "small" / "train" / "demo"
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "image.tif", np.full((SMALL_H, SMALL_W, 3), value, np.uint8))
    mask = np.zeros((SMALL_H, SMALL_W), np.float64)
    x, y, w, h = CELL
    mask[y:y + h, x:x + w] = 1
    tifffile.imwrite(folder / "class2.tif", mask)
    return tmp_path / "small"


def _grid_entries(count, height=H, width=W, size=6, step=10):
    """``count`` small square predictions on a grid, class 1, scores 0.99 down."""
    entries = []
    per_row = (width - 4) // step
    for index in range(count):
        x, y = 2 + (index % per_row) * step, 2 + (index // per_row) * step
        assert y + size <= height
        entries.append({"bbox": [float(x), float(y), float(size), float(size)],
                        "score": 0.99 - index * 1e-4, "category_id": 1,
                        "segmentation": encode_crop(np.ones((size, size), bool), x, y,
                                                    height, width)})
    return entries


def test_picture_size():
    assert vis_draw.picture_size(100, 180, 1024) == (569, 1024)
    assert vis_draw.picture_size(100, 180, 0) == (100, 180)
    assert vis_draw.picture_size(1000, 1000, 1024) == (1024, 1024)
    assert vis_draw.picture_size(2000, 1000, 1024) == (2000, 1000)  # not made smaller
    assert vis_draw.picture_size(2000, 1000, 1024, max_size=500) == (500, 250)
    assert vis_draw.picture_size(100, 180, 1024, max_size=360) == (200, 360)  # max wins
    with pytest.raises(ValueError, match="min_size"):
        vis_draw.picture_size(100, 180, -1)


def test_small_image_is_written_large_with_masks_by_nearest_neighbour(tmp_path):
    root = _small_root(tmp_path)
    out = tmp_path / "pictures"
    assert load_tool("visualize_data").main([str(root), "--out", str(out),
                                             "--num-classes", "2", "--no-labels"]) == 0
    picture = read_image(out / "demo.png")
    # >= 1,024 px on the long side, same aspect; the legend strip under the image
    legend = vis.legend_height(1024, ["class1", "class2"])
    assert picture.shape == (569 + legend, 1024, 3)
    # Where the image's part differs from the plain grey image: exactly the cell's pixels,
    # scaled (the legend covers none of it).
    changed = np.any(picture[:569] != 128, axis=-1)
    x, y, w, h = CELL
    sy, sx = 569 / SMALL_H, 1024 / SMALL_W
    rows, cols = np.nonzero(changed)
    assert abs(rows.min() - y * sy) <= 1 and abs(rows.max() + 1 - (y + h) * sy) <= 1
    assert abs(cols.min() - x * sx) <= 1 and abs(cols.max() + 1 - (x + w) * sx) <= 1
    # Nearest neighbour: a crisp block, every pixel in it drawn (fill or outline), the
    # fill one color (no blending with the background at the edges).
    block = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert block.all()
    inner = picture[rows.min() + 2:rows.max() - 1, cols.min() + 2:cols.max() - 1]
    assert len(np.unique(inner.reshape(-1, 3), axis=0)) == 1
    # The class's color is there: the fill is grey pulled towards class 2's color.
    color = np.asarray(vis.metadata_for_classes(["class1", "class2"]).thing_colors[1])
    expected = 128 * (1 - vis_draw.DEFAULT_ALPHA) + color * vis_draw.DEFAULT_ALPHA
    assert np.abs(inner[0, 0].astype(float) - expected).max() < 30  # the color, +- its jitter


def test_smooth_resize_keeps_masks_crisp(metadata):
    image = _image()
    record = _record()
    nearest = vis.draw_ground_truth(image, record, metadata,
                                    S(min_size=600, legend=False, labels=False))
    smooth = vis.draw_ground_truth(image, record, metadata,
                                   S(min_size=600, legend=False, labels=False, resize="smooth"))
    assert nearest.shape == smooth.shape == (540, 600, 3)
    empty = {**record, "annotations": []}
    plain_nearest = vis.draw_ground_truth(image, empty, metadata, S(min_size=600, legend=False))
    plain_smooth = vis.draw_ground_truth(image, empty, metadata,
                                         S(min_size=600, legend=False, resize="smooth"))
    assert not np.array_equal(plain_nearest, plain_smooth)
    # The same pixels are drawn on: the masks do not depend on how the image is resized.
    drawn_nearest = np.any(nearest != plain_nearest, axis=-1)
    drawn_smooth = np.any(smooth != plain_smooth, axis=-1)
    assert drawn_nearest.sum() > 3000
    assert (drawn_nearest != drawn_smooth).mean() < 1e-3
    with pytest.raises(ValueError, match="resize"):
        vis.draw_ground_truth(image, record, metadata, S(resize="cubic"))


def test_picture_style_decides_labels_by_count():
    few = vis_draw.picture_style(vis_draw.AUTO_LABEL_LIMIT)
    assert few.labels and not few.crowded and few.alpha == vis_draw.DEFAULT_ALPHA
    many = vis_draw.picture_style(vis_draw.AUTO_LABEL_LIMIT + 1)
    assert not many.labels and many.crowded and many.alpha == vis_draw.CROWDED_ALPHA
    assert vis_draw.picture_style(500, labels=True).labels  # asked for
    assert not vis_draw.picture_style(3, labels=False).labels
    assert vis_draw.picture_style(500, label_limit=None).labels  # no limit
    assert not vis_draw.picture_style(1, label_limit=0).labels
    assert vis_draw.picture_style(500, alpha=0.6).alpha == 0.6
    outlines = vis_draw.picture_style(3, outlines=True, labels=True, alpha=0.5)
    assert not outlines.labels and outlines.alpha == 0.0
    with pytest.raises(ValueError, match="alpha"):
        vis_draw.picture_style(3, alpha=1.5)


def test_above_the_label_limit_no_text_is_drawn(metadata):
    image = _image()
    crowd = _grid_entries(60)
    options = S(legend=False)
    default, info = vis.draw_predictions(image, crowd, metadata, 0.0, options, return_info=True)
    assert info.shown == 60 and not info.style.labels and info.style.crowded
    without = vis.draw_predictions(image, crowd, metadata, 0.0, replace(options, labels=False))
    with_labels = vis.draw_predictions(image, crowd, metadata, 0.0, replace(options, labels=True))
    np.testing.assert_array_equal(default, without)  # no text at all
    assert np.any(default != with_labels)
    # The limit is an option: with a higher one the same crowd is labelled.
    labelled = vis.draw_predictions(image, crowd, metadata, 0.0,
                                    replace(options, label_limit=100, alpha=0.2))
    np.testing.assert_array_equal(labelled, with_labels)
    # Below the limit, labels stay.
    few = vis.draw_predictions(image, _entries(), metadata, 0.0, options)
    assert np.any(few != vis.draw_predictions(image, _entries(), metadata, 0.0,
                                              replace(options, labels=False)))


def test_crowded_pictures_keep_outlines_and_a_light_fill(metadata):
    image = np.full((H, W, 3), 128, np.uint8)
    crowd = _grid_entries(60)
    picture = vis.draw_predictions(image, crowd, metadata, 0.0, S(legend=False))
    x, y = (int(v) for v in crowd[0]["bbox"][:2])
    cell = picture[y:y + 6, x:x + 6].astype(int)
    color = np.asarray(metadata.thing_colors[0])
    assert np.any(cell[0, 0] != 128)  # outline
    fill = 128 * (1 - vis_draw.CROWDED_ALPHA) + color * vis_draw.CROWDED_ALPHA
    assert np.abs(cell[2:4, 2:4] - fill).max() < 15  # light: the color, +- its jitter


def test_outlines_draw_no_fill(metadata):
    image = _image()
    x, y, s, _ = SQUARES[1]  # the largest cell, 30x30
    for picture in (
        vis.draw_ground_truth(image, _record(), metadata, S(outlines=True, legend=False)),
        vis.draw_predictions(image, _entries(), metadata, 0.0, S(outlines=True)),
    ):
        np.testing.assert_array_equal(picture[y + 2:y + s - 2, x + 2:x + s - 2],
                                      image[y + 2:y + s - 2, x + 2:x + s - 2])
        ring = np.any(picture[y:y + s, x:x + s] != image[y:y + s, x:x + s], axis=-1)
        assert ring[0].all() and ring[-1].all() and ring[:, 0].all() and ring[:, -1].all()


def test_outlines_option_of_the_tool(course_root, tmp_path, capsys):
    out = tmp_path / "pictures"
    tool = load_tool("visualize_data")
    assert tool.main([str(course_root), "--out", str(out), "--num-classes", "2",
                      "--names", "img_a", "--outlines", "--min-size", "0"]) == 0
    picture = read_image(out / "img_a.png")
    image = read_image(course_root / "train" / "img_a" / "image.tif")
    for x, y, s, _ in SQUARES:
        assert _region(picture, image, x + 2, y + 2, s - 4) == 0.0  # no fill
        # ... but an outline on the cell's edge pixels
        assert _region(picture, image, x - 1, y - 1, s + 2) > 0
    assert tool.main([str(course_root), "--out", str(tmp_path / "other"), "--outlines",
                      "--labels"]) == 2
    assert "--outlines" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main([str(course_root), "--out", str(tmp_path / "other"), "--min-size", "-5"])


def test_legend_counts_per_class(metadata):
    image = _image()
    _, info = vis.draw_ground_truth(image, _record(), metadata, return_info=True)
    assert info.legend == ["alpha: 1", "beta: 2", "gamma: 0", "delta: 0"]
    _, info = vis.draw_predictions(image, _entries(), metadata, 0.5, return_info=True)
    assert info.legend == ["alpha: 1", "beta: 1", "gamma: 0", "delta: 0"]
    assert vis_draw.legend_lines([2, 2, 0], ["a", "b", "c"]) == ["a: 1", "b: 0", "c: 2"]
    # The legend is a strip under the image, off the cells: the image's part is drawn as
    # without a legend, pixel for pixel.
    with_legend = vis.draw_ground_truth(image, _record(), metadata, S(labels=False))
    without = vis.draw_ground_truth(image, _record(), metadata, S(labels=False, legend=False))
    assert without.shape == image.shape
    assert with_legend.shape == (H + vis.legend_height(W, metadata.thing_classes), W, 3)
    np.testing.assert_array_equal(with_legend[:H], without)
    assert np.any(with_legend[H:] != with_legend[H, 0], axis=-1).sum() > 100  # text in it
    _, info = vis.draw_ground_truth(image, _record(), metadata, S(legend=False),
                                    return_info=True)
    assert info.legend == [] and info.legend_height == 0


def test_a_cap_is_reported_in_the_legend(metadata):
    image = _image()
    _, info = vis.draw_predictions(image, _entries(), metadata, 0.0, S(max_instances=1),
                                   return_info=True)
    assert (info.shown, info.total) == (1, 3)
    assert info.legend == ["alpha: 1", "beta: 0", "gamma: 0", "delta: 0", "top 1 of 3 shown"]
    _, info = vis.draw_ground_truth(image, _record(), metadata, S(max_instances=2),
                                    return_info=True)
    assert info.legend[-1] == "first 2 of 3 shown" and info.legend[:2] == ["alpha: 1",
                                                                            "beta: 1"]
    _, info = vis.draw_predictions(image, _entries(), metadata, 0.0, return_info=True)
    assert info.legend[-1] == "delta: 0"  # nothing left out: no note


def test_everything_is_drawn_by_default(metadata):
    """No 300-instance cap any more: draw_predictions and tools/visualize.py draw all."""
    image = np.full((H, W, 3), 128, np.uint8)
    crowd = _grid_entries(320)
    _, info = vis.draw_predictions(image, crowd, metadata, 0.0, return_info=True)
    assert info.shown == info.total == 320
    assert sum(int(line.split(": ")[1]) for line in info.legend) == 320


def test_side_by_side_halves_share_the_scale(course_root, tmp_path):
    records = vis.load_annotated_source(course_root, class_names=["a", "b"])[0]
    results = _write_results(tmp_path / "results.json",
                             _entries(image_id=records[0]["image_id"]))
    out = tmp_path / "pictures"
    assert load_tool("visualize").main([
        "--results", str(results), "--gt-root", str(course_root), "--class-names", "a,b",
        "--out", str(out), "--names", "img_a", "--score-threshold", "0"]) == 0
    picture = read_image(out / "img_a.png")
    height, width = vis_draw.picture_size(H, W, vis_draw.DEFAULT_MIN_SIZE)
    assert picture.shape == (height + vis.legend_height(width, ["a", "b"]), 2 * width, 3)
    assert max(height, width) == 1024
    # The same instances, at the same places, in both halves.
    image = read_image(course_root / "train" / "img_a" / "image.tif")
    plain = vis.draw_ground_truth(image, {**records[0], "annotations": []},
                                  vis.metadata_for_classes(["a", "b"]),
                                  S(min_size=vis_draw.DEFAULT_MIN_SIZE, legend=False))
    x, y, s, _ = SQUARES[1]
    sy, sx = height / H, width / W
    inner = (slice(int(y * sy) + 3, int((y + s) * sy) - 3),
             slice(int(x * sx) + 3, int((x + s) * sx) - 3))
    for half in (picture[:, :width], picture[:, width:]):
        assert np.any(half[inner] != plain[inner], axis=-1).mean() > 0.9


def test_consep_picture_above_the_label_limit(metadata):
    if not CONSEP_TEST.is_dir():
        pytest.skip(f"CoNSeP data not found at {CONSEP_TEST}")
    record = load_annotated_split(CONSEP_TEST, 4, names=["test_1"], cache_dir=False)[0]
    image = read_image(record["file_name"])
    picture, info = vis.draw_ground_truth(image, record, metadata, S(min_size=1024),
                                          return_info=True)
    assert picture.shape == (1024 + vis.legend_height(1024, metadata.thing_classes), 1024, 3)
    assert info.height == picture.shape[0] and info.height - info.legend_height == 1024
    assert info.style.crowded and not info.style.labels
    counts = [int(line.split(": ")[1]) for line in info.legend]
    assert sum(counts) == info.shown == len(record["annotations"])


def test_boxes_and_smaller_pictures_are_scaled(metadata):
    image = np.full((H, W, 3), 128, np.uint8)
    entry = {"bbox": [40.0, 40.0, 80.0, 80.0], "score": 0.9, "category_id": 1}  # no mask
    style = S(boxes=True, labels=False, legend=False, min_size=2 * W)
    picture = vis.draw_predictions(image, [entry], metadata, style=style, bbox_format="xyxy")
    assert picture.shape == (2 * H, 2 * W, 3)
    drawn = np.any(picture != 128, axis=-1)
    assert drawn[90:150, 158:161].sum() > 20 and not drawn[90:150, 162:].any()  # x2 = 80 * 2
    # --max-size draws large images smaller; the masks follow.
    small, info = vis.draw_ground_truth(_image(), _record(), metadata,
                                        S(max_size=100, legend=False), return_info=True)
    assert small.shape == (90, 100, 3) and (info.height, info.width) == (90, 100)
    x, y, s, _ = SQUARES[1]
    plain = vis.draw_ground_truth(_image(), {**_record(), "annotations": []}, metadata,
                                  S(max_size=100, legend=False))
    assert _region(small, plain, x // 2, y // 2, s // 2) > 0.9
