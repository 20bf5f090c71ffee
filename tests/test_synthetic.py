"""Tests of the synthetic dataset generator: seg_project.data.synthetic, tools/make_synthetic.py."""

import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from seg_project.data.image_io import read_image, read_image_size, read_mask
from seg_project.data.reader import load_annotated_split, load_mapping, load_test_images
from seg_project.data.rle import decode
from seg_project.data.synthetic import (
    CLASS_STYLES,
    dataset_sample,
    format_summary,
    make_synthetic_dataset,
    render_sample,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
COURSE_SAMPLE = SHARED / "hw3-sample" / "train" / "ta-sample"
SEED = 0
EMPTY = 1


def _load_tool():
    spec = importlib.util.spec_from_file_location("make_synthetic", REPO / "tools" /
                                                  "make_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "data"
    summary = make_synthetic_dataset(root, seed=SEED, empty_images=EMPTY)
    return root, summary


def _train_folders(root):
    return sorted(p for p in (root / "train").iterdir())


def _tiff_page_info(path):
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return (page.compression, page.photometric, page.samplesperpixel, page.dtype,
                page.predictor)


def test_layout_holds_only_course_files(dataset):
    root, summary = dataset
    assert sorted(p.name for p in root.iterdir()) == [
        "test_image_name_to_ids.json", "test_release", "train"]
    folders = _train_folders(root)
    assert [f.name for f in folders] == [image["name"] for image in summary["train_images"]]
    assert len(folders) == 12 and len(summary["test_images"]) == 4
    for folder in folders:
        names = {p.name for p in folder.iterdir()}
        assert "image.tif" in names
        assert names - {"image.tif"} <= {f"class{c}.tif" for c in range(1, 5)}
    for path in (root / "test_release").iterdir():
        assert path.suffix == ".tif"
        assert uuid.UUID(path.stem).version == 4
    assert summary["untouched"] == []


def test_image_files_have_the_course_format(dataset):
    root, _ = dataset
    images = [f / "image.tif" for f in _train_folders(root)]
    images += sorted((root / "test_release").iterdir())
    for path in images:
        compression, photometric, samples, dtype, predictor = _tiff_page_info(path)
        assert compression == tifffile.COMPRESSION.LZW, path
        assert photometric == tifffile.PHOTOMETRIC.RGB, path
        assert samples == 4 and dtype == np.uint8, path
        rgba = tifffile.imread(path)
        assert rgba.shape[2] == 4 and (rgba[..., 3] == 255).all(), path


def test_mask_files_have_the_course_format(dataset):
    root, summary = dataset
    for folder, image in zip(_train_folders(root), summary["train_images"]):
        for name, count in image["instances"].items():
            path = folder / f"{name}.tif"
            assert path.exists() == (count > 0), path
            if not count:
                continue
            compression, photometric, samples, dtype, _ = _tiff_page_info(path)
            assert compression == tifffile.COMPRESSION.NONE and samples == 1, path
            assert dtype == np.float64, path
            mask = tifffile.imread(path)
            assert mask.shape == (image["height"], image["width"]), path
            assert np.array_equal(mask, np.floor(mask)), path
            assert np.array_equal(np.unique(mask), np.arange(count + 1)), path  # ids 1..n


def test_formats_match_the_real_course_files(dataset):
    if not COURSE_SAMPLE.is_dir():
        pytest.skip(f"course sample not available at {COURSE_SAMPLE}")
    root, _ = dataset
    folder = next(f for f in _train_folders(root) if (f / "class1.tif").exists())
    assert _tiff_page_info(folder / "image.tif") == _tiff_page_info(COURSE_SAMPLE / "image.tif")
    assert (_tiff_page_info(folder / "class1.tif")
            == _tiff_page_info(COURSE_SAMPLE / "class1.tif"))


def test_dataset_has_variety_negatives_and_absent_class_files(dataset):
    root, summary = dataset
    counts = summary["instances_per_class"]
    assert all(counts[f"class{c}"] > 0 for c in range(1, 5)), counts
    common, rare = counts["class1"] + counts["class2"], counts["class3"] + counts["class4"]
    assert rare * 5 < common, counts  # classes 3 and 4 are rare
    assert len(summary["empty_images"]) == EMPTY
    empty_folder = root / "train" / summary["empty_images"][0]
    assert [p.name for p in empty_folder.iterdir()] == ["image.tif"]
    annotated = [i for i in summary["train_images"] if any(i["instances"].values())]
    assert any(not all(i["instances"].values()) for i in annotated)  # some class files absent
    sizes = {(i["height"], i["width"]) for i in summary["train_images"]}
    assert len(sizes) >= 10 and any(h != w for h, w in sizes)  # varied, not square
    assert all(96 <= side <= 192 for size in sizes for side in size)


def test_round_trip_through_the_reader_is_pixel_exact(dataset):
    root, summary = dataset
    records = load_annotated_split(root / "train", 4, cache_dir=False)
    assert len(records) == 12
    for index, (record, image) in enumerate(zip(records, summary["train_images"])):
        sample = dataset_sample(SEED, "train", index,
                                empty=image["name"] in summary["empty_images"])
        assert Path(record["file_name"]).parent.name == image["name"]
        assert np.array_equal(read_image(record["file_name"]), sample.image)
        per_class = {}
        for ann in record["annotations"]:
            per_class.setdefault(ann["category_id"] + 1, []).append(ann)
        assert {f"class{c}": len(per_class.get(c, [])) for c in range(1, 5)} == image["instances"]
        for number, anns in per_class.items():
            labels = sample.masks[number]
            file_ids = read_mask(Path(record["file_name"]).parent / f"class{number}.tif")
            assert np.array_equal(file_ids, labels)
            for instance_id, ann in enumerate(anns, start=1):  # the reader keeps id order
                expected = labels == instance_id
                assert np.array_equal(decode(ann["segmentation"]).astype(bool), expected)
                assert ann["area"] == int(expected.sum())


def test_mapping_file_matches_the_test_images(dataset):
    root, summary = dataset
    mapping = root / "test_image_name_to_ids.json"
    entries = load_mapping(mapping)
    assert entries == summary["test_images"]
    assert [e["id"] for e in entries] == [1, 2, 3, 4]
    assert mapping.read_text(encoding="utf-8") == json.dumps(entries, indent=4)
    for entry in entries:
        assert list(entry) == ["file_name", "id", "height", "width"]
        size = read_image_size(root / "test_release" / entry["file_name"])
        assert size == (entry["height"], entry["width"])
    records = load_test_images(root / "test_release", mapping)
    assert [r["image_id"] for r in records] == [1, 2, 3, 4]
    real = SHARED / "hw3-sample" / "test_image_name_to_ids.json"
    if real.is_file():  # same JSON style as the course's file
        assert list(json.loads(real.read_text())[0]) == list(entries[0])


def _all_files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    make_synthetic_dataset(tmp_path / "a", num_train=3, num_test=2, seed=7)
    make_synthetic_dataset(tmp_path / "b", num_train=3, num_test=2, seed=7)
    make_synthetic_dataset(tmp_path / "c", num_train=2, num_test=2, seed=7)
    make_synthetic_dataset(tmp_path / "d", num_train=3, num_test=2, seed=8)
    files = _all_files(tmp_path / "a")
    assert files == _all_files(tmp_path / "b")
    # Image i depends on (seed, split, i) only, not on how many images are made.
    smaller = _all_files(tmp_path / "c")
    assert all(files[name] == data for name, data in smaller.items())
    other = _all_files(tmp_path / "d")
    assert not set(files.values()) & set(other.values())
    first, second = dataset_sample(7, "train", 0), dataset_sample(7, "train", 0)
    assert first.image.tobytes() == second.image.tobytes()
    assert first.masks.keys() == second.masks.keys()
    assert all(first.masks[c].tobytes() == second.masks[c].tobytes() for c in first.masks)
    assert not np.array_equal(dataset_sample(8, "train", 0).image[:32, :32],
                              first.image[:32, :32])


def test_refuses_to_overwrite_and_force_keeps_other_files(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    notes = root / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        make_synthetic_dataset(root, num_train=2, num_test=1)
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"]
    make_synthetic_dataset(root, num_train=2, num_test=1, overwrite=True)
    folder = root / "train" / "synthetic_0000"
    absent = next(c for c in range(1, 5) if not (folder / f"class{c}.tif").exists())
    stale = folder / f"class{absent}.tif"
    stale.write_bytes((folder / "image.tif").read_bytes())  # a stale annotation file
    (folder / "readme.txt").write_text("mine too")
    summary = make_synthetic_dataset(root, num_train=2, num_test=1, overwrite=True)
    assert not stale.exists()
    assert (folder / "readme.txt").read_text() == "mine too"
    assert notes.read_text() == "mine" and summary["untouched"] == [str(notes)]
    assert "notes.txt" in format_summary(summary)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        make_synthetic_dataset(tmp_path / "file")


@pytest.mark.parametrize("options", [
    {"num_train": 0}, {"num_test": 0}, {"seed": -1}, {"min_size": 200, "max_size": 100},
    {"min_size": 8}, {"cells_per_image": (5, 2)}, {"empty_images": 13},
])
def test_bad_options_raise_before_writing(tmp_path, options):
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path / "data", **options)
    assert not (tmp_path / "data").exists()


def test_render_sample_classes_touching_and_overlap():
    sample = render_sample(200, 240, num_cells=80, seed=3)
    assert sample.image.shape == (200, 240, 3) and sample.image.dtype == np.uint8
    assert set(sample.masks) == {1, 2, 3, 4}
    # Even when crowded far beyond what fits, no id is hidden completely: ids stay 1..n.
    packed = render_sample(96, 96, num_cells=400, seed=4)
    for labels in list(sample.masks.values()) + list(packed.masks.values()):
        assert labels.dtype == np.int32
        assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    # Touching: some pixel of one instance has a 4-neighbour of another (any class).
    combined = sum((m > 0).astype(int) * (c * 1000 + m) for c, m in sample.masks.items())
    right = (combined[:, 1:] != combined[:, :-1]) & (combined[:, 1:] > 0) & (combined[:, :-1] > 0)
    assert right.any()
    # Overlap across class files is allowed and happens in a crowded image.
    covered = sum((m > 0).astype(int) for m in sample.masks.values())
    assert covered.max() >= 2
    # The classes differ: mean size 4 < 1 < 2 < 3; class 1 darker than class 3; class 4 bluest.
    areas, colors = {}, {}
    for number, labels in sample.masks.items():
        sizes = ndimage.sum_labels(labels > 0, labels, np.arange(1, labels.max() + 1))
        areas[number] = sizes.mean()
        colors[number] = sample.image[labels > 0].mean(axis=0)
    assert areas[4] < areas[1] < areas[2] < areas[3], areas
    assert colors[1].sum() < colors[3].sum()
    assert colors[4][2] - colors[4][0] > max(colors[c][2] - colors[c][0] for c in (1, 2, 3))


def test_render_sample_negative_and_class_subset():
    blank = render_sample(64, 80, num_cells=0, seed=1)
    assert blank.masks == {} and blank.counts() == {c: 0 for c in CLASS_STYLES}
    only = render_sample(64, 80, num_cells=10, classes=[2], seed=1)
    assert set(only.masks) == {2} and only.counts()[2] > 0
    with pytest.raises(ValueError, match="unknown class"):
        render_sample(64, 80, classes=[5])


def test_tool_main_writes_refuses_and_forces(tmp_path, capsys):
    tool = _load_tool()
    out = tmp_path / "out"
    argv = ["--out", str(out), "--num-train", "2", "--num-test", "1", "--seed", "4",
            "--min-size", "64", "--max-size", "80", "--empty-images", "1"]
    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "class1:" in printed and "1 without any" in printed
    assert len(load_annotated_split(out / "train", 4, cache_dir=False)) == 2
    before = _all_files(out)
    assert tool.main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert tool.main(argv + ["--force"]) == 0
    assert _all_files(out) == before  # same seed, same bytes
    assert tool.main(["--out", str(tmp_path / "x"), "--min-size", "300"]) == 2
    assert "min_size" in capsys.readouterr().err


def test_tool_runs_as_a_script(tmp_path):
    out = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_synthetic.py"), "--out", str(out),
         "--num-train", "1", "--num-test", "1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "written to" in result.stdout
    assert (out / "train" / "synthetic_0000" / "image.tif").is_file()
