"""The data layer on real files: conversion of the course sample and of CoNSeP, RLE fidelity,
the test-image mapping, the conversion cache, image formats and the train/val split."""

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from seg_project.data import reader
from seg_project.data.catalog import register_cells_splits, split_train_val, write_split_file
from seg_project.data.image_io import DatasetError, read_image, read_mask
from seg_project.data.reader import (
    load_annotated_split,
    load_test_images,
    read_annotated_folder,
    stable_image_id,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HW3 = DATA / "hw3-sample"
CONSEP_TRAIN = DATA / "consep" / "train"
CONSEP_TRAIN_COUNTS = [371, 3941, 5537, 5706]
# CoNSeP images whose instance RLEs are decoded one by one (690 instances; decoding all
# 15,555 full-size masks takes ~10 s). Every image's union, bboxes and areas are checked.
CONSEP_DECODED = ("train_2", "train_12", "train_16")
CONSEP_ENCODED = ("train_5", "train_25")  # 60 instances encoded full-size for comparison

needs_hw3 = pytest.mark.skipif(not HW3.is_dir(), reason=f"course sample data not found at {HW3}")
needs_consep = pytest.mark.skipif(not CONSEP_TRAIN.is_dir(),
                                  reason=f"CoNSeP data not found at {CONSEP_TRAIN}")


@pytest.fixture(scope="module")
def hw3_records():
    if not HW3.is_dir():
        pytest.skip(f"course sample data not found at {HW3}")
    return load_annotated_split(HW3 / "train", 4, cache_dir=False)


@pytest.fixture(scope="module")
def consep_records():
    if not CONSEP_TRAIN.is_dir():
        pytest.skip(f"CoNSeP data not found at {CONSEP_TRAIN}")
    return load_annotated_split(CONSEP_TRAIN, 4, cache_dir=False)


@pytest.fixture(params=["hw3", "consep"])
def records(request):
    return request.getfixturevalue(f"{request.param}_records")


@pytest.fixture
def restore_catalog():
    """Tests that re-register the cells_* datasets put the default registration back."""
    yield
    register_cells_splits()


def _class_counts(records, num_classes=4):
    counts = [0] * num_classes
    for record in records:
        for ann in record["annotations"]:
            counts[ann["category_id"]] += 1
    return counts


def _class_masks(record):
    """(category_id, source mask) for every class file of a record's folder."""
    folder = Path(record["file_name"]).parent
    for path in sorted(folder.glob("class*.tif")):
        yield int(path.stem[len("class"):]) - 1, read_mask(path)


def _snapshot(folder: Path):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns, p.stat().st_size)
                  for p in folder.rglob("*"))


def _write_folder(folder: Path, ids_per_class, size=(24, 32)):
    """A tiny annotated folder: RGB image.tif, and classN.tif holding ``ids`` as 3x3 blobs."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    tifffile.imwrite(folder / "image.tif", np.full((h, w, 3), 90, np.uint8))
    for number, count in ids_per_class.items():
        mask = np.zeros((h, w), np.uint16)
        for i in range(count):
            y, x = divmod(4 * i, w - 3)
            mask[4 * y:4 * y + 3, x:x + 3] = i + 1
        tifffile.imwrite(folder / f"class{number}.tif", mask)


# -- conversion of the real data ----------------------------------------------------------


def test_hw3_sample_converts_to_161_instances_of_classes_1_and_2(hw3_records):
    (record,) = hw3_records
    assert (record["height"], record["width"]) == (397, 482)
    assert len(record["annotations"]) == 161
    assert {ann["category_id"] for ann in record["annotations"]} == {0, 1}
    assert _class_counts(hw3_records) == [2, 159, 0, 0]


def test_consep_train_exact_instance_counts(consep_records):
    assert len(consep_records) == 27
    assert _class_counts(consep_records) == CONSEP_TRAIN_COUNTS
    assert min(ann["area"] for r in consep_records for ann in r["annotations"]) <= 3


def test_annotations_are_well_formed_and_rles_agree_with_bbox_and_area(records):
    for record in records:
        size = [record["height"], record["width"]]
        rles = []
        for ann in record["annotations"]:
            assert set(ann) == {"bbox", "bbox_mode", "category_id", "segmentation", "area",
                                "iscrowd"}
            assert ann["bbox_mode"] == BoxMode.XYWH_ABS and ann["iscrowd"] == 0
            assert ann["category_id"] in range(4)
            assert all(type(v) is int for v in ann["bbox"]) and type(ann["area"]) is int
            assert isinstance(ann["segmentation"]["counts"], str)
            assert ann["segmentation"]["size"] == size
            assert mask_util.area(ann["segmentation"]) == ann["area"]
            rles.append(ann["segmentation"])
        boxes = mask_util.toBbox(rles) if rles else np.zeros((0, 4))
        np.testing.assert_array_equal(boxes, [ann["bbox"] for ann in record["annotations"]])


def _boxes_and_areas(mask):
    """(x, y, w, h, area) of every id of a label image, from its pixel coordinates."""
    ys, xs = np.nonzero(mask)
    ids = mask[ys, xs]
    top = int(mask.max()) + 1
    y0, x0 = np.full(top, mask.shape[0]), np.full(top, mask.shape[1])
    y1, x1 = np.full(top, -1), np.full(top, -1)
    np.minimum.at(y0, ids, ys), np.minimum.at(x0, ids, xs)
    np.maximum.at(y1, ids, ys), np.maximum.at(x1, ids, xs)
    area = np.bincount(ids, minlength=top)
    return sorted((int(x0[i]), int(y0[i]), int(x1[i] - x0[i] + 1), int(y1[i] - y0[i] + 1),
                   int(area[i])) for i in np.unique(ids))


def test_bbox_and_area_of_every_instance_match_the_source_masks(records):
    """Tight XYWH boxes and pixel counts, computed from the class files themselves."""
    for record in records:
        for category, mask in _class_masks(record):
            got = [(*ann["bbox"], ann["area"]) for ann in record["annotations"]
                   if ann["category_id"] == category]
            assert sorted(got) == _boxes_and_areas(mask), (record["file_name"], category)


def _as_bytes(rle):
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def _decoded_images(records):
    return [r for r in records if "consep" not in r["file_name"]
            or Path(r["file_name"]).parent.name in CONSEP_DECODED]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2, per call
def test_rles_decode_to_the_source_masks_pixel_for_pixel(records):
    """Rebuild each class file's label image from the instance masks decoded by pycocotools
    (as Detectron2 decodes them) and compare it to the file."""
    first = records[0]["annotations"][0]["segmentation"]
    np.testing.assert_array_equal(mask_util.decode(first), mask_util.decode(_as_bytes(first)))
    for record in _decoded_images(records):
        for category, mask in _class_masks(record):
            rebuilt = np.zeros_like(mask)
            anns = [a for a in record["annotations"] if a["category_id"] == category]
            for ann in anns:
                full = mask_util.decode(_as_bytes(ann["segmentation"]))
                x, y, w, h = ann["bbox"]
                inside = full[y:y + h, x:x + w].astype(bool)
                assert np.count_nonzero(full) == np.count_nonzero(inside), "pixels outside bbox"
                ids = np.unique(mask[y:y + h, x:x + w][inside])
                assert len(ids) == 1 and ids[0] > 0, "an instance mask spans several ids"
                box = rebuilt[y:y + h, x:x + w]
                assert not box[inside].any(), "instance masks overlap"
                box[inside] = ids[0]
            np.testing.assert_array_equal(rebuilt, mask)
            assert len(anns) == len(np.unique(mask[mask > 0]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_union_of_a_class_rles_is_its_mask_without_overlaps(records):
    """Every image: the decoded union of a class's RLEs is the class file's foreground, and
    the instance areas add up to it (so no two instances share a pixel)."""
    for record in records:
        for category, mask in _class_masks(record):
            anns = [a for a in record["annotations"] if a["category_id"] == category]
            if not anns:
                assert not mask.any()
                continue
            union = mask_util.decode(mask_util.merge([_as_bytes(a["segmentation"])
                                                      for a in anns]))
            np.testing.assert_array_equal(union.astype(bool), mask > 0)
            assert sum(a["area"] for a in anns) == np.count_nonzero(mask)


def test_rles_are_byte_identical_to_pycocotools_encode_of_full_masks(records):
    """The crop encoder gives the very strings of ``pycocotools.mask.encode`` (checked on
    the course sample and two small CoNSeP images: full-size encoding is the slow path)."""
    for record in records:
        if "consep" in record["file_name"] and \
                Path(record["file_name"]).parent.name not in CONSEP_ENCODED:
            continue
        for category, mask in _class_masks(record):
            got = [a["segmentation"]["counts"] for a in record["annotations"]
                   if a["category_id"] == category]
            expected = [mask_util.encode(np.asfortranarray(mask == i, dtype=np.uint8))["counts"]
                        .decode("ascii") for i in np.unique(mask[mask > 0])]
            assert got == expected


def test_image_ids_are_stable_and_distinct(consep_records, hw3_records):
    ids = [r["image_id"] for r in consep_records]
    assert len(set(ids)) == len(ids) == 27
    assert all(1 <= i < 2**31 for i in ids)
    for record in consep_records[:2]:
        again = read_annotated_folder(Path(record["file_name"]).parent, 4)
        assert again["image_id"] == record["image_id"]
        assert again["image_id"] == stable_image_id(Path(record["file_name"]).parent.name)
    (hw3_again,) = load_annotated_split(HW3 / "train", 4, cache_dir=False)
    assert hw3_again["image_id"] == hw3_records[0]["image_id"]
    assert hw3_again["image_id"] not in ids


# -- the test-image mapping -----------------------------------------------------------------


@pytest.fixture
def hw3_test_root(tmp_path):
    """A root with the real mapping file and blank stand-ins of the listed size per image."""
    mapping = HW3 / "test_image_name_to_ids.json"
    if not mapping.is_file():
        pytest.skip(f"course mapping file not found at {mapping}")
    root = tmp_path / "cells"
    (root / "test_release").mkdir(parents=True)
    shutil.copy(mapping, root / "test_image_name_to_ids.json")
    for entry in json.loads(mapping.read_text()):
        tifffile.imwrite(root / "test_release" / entry["file_name"],
                         np.zeros((entry["height"], entry["width"]), np.uint8),
                         compression="zlib")
    return root


def test_real_mapping_gives_101_test_images_with_their_ids(hw3_test_root, restore_catalog):
    entries = json.loads((hw3_test_root / "test_image_name_to_ids.json").read_text())
    expected = {e["file_name"]: (e["id"], e["height"], e["width"]) for e in entries}
    assert len(expected) == 101 and max(e["height"] for e in entries) == 2500
    direct = load_test_images(hw3_test_root / "test_release",
                              hw3_test_root / "test_image_name_to_ids.json")
    register_cells_splits(hw3_test_root)
    registered = DatasetCatalog.get("cells_test")
    for records in (direct, registered):
        assert len(records) == 101
        got = {Path(r["file_name"]).name: (r["image_id"], r["height"], r["width"])
               for r in records}
        assert got == expected
        assert sorted(r["image_id"] for r in records) == list(range(1, 102))


# -- the conversion cache -------------------------------------------------------------------


def test_warm_load_comes_from_the_cache(tmp_path, monkeypatch):
    train = tmp_path / "train"
    _write_folder(train / "a", {1: 3, 2: 2})
    _write_folder(train / "b", {3: 4})
    cache = tmp_path / "cache"
    cold = load_annotated_split(train, 4, cache_dir=cache)

    def fail(*args, **kwargs):
        raise AssertionError("converted again although the cache is warm")

    monkeypatch.setattr(reader, "read_annotated_folder", fail)
    assert load_annotated_split(train, 4, cache_dir=cache) == cold
    assert [len(r["annotations"]) for r in cold] == [5, 4]


def _counting_conversions(monkeypatch) -> list:
    """Patch the reader so that each conversion appends its folder's name to the list."""
    converted = []
    real = reader.read_annotated_folder

    def counting(folder, *args, **kwargs):
        converted.append(Path(folder).name)
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(reader, "read_annotated_folder", counting)
    return converted


def test_a_changed_file_is_read_again_a_touched_one_is_not(tmp_path, monkeypatch):
    train = tmp_path / "train"
    _write_folder(train / "a", {1: 3})
    _write_folder(train / "b", {1: 2})
    cache = tmp_path / "cache"
    load_annotated_split(train, 4, cache_dir=cache)
    converted = _counting_conversions(monkeypatch)
    mask_file = train / "b" / "class1.tif"
    later = mask_file.stat().st_mtime_ns + 5_000_000_000
    os.utime(mask_file, ns=(later, later))  # the same bytes: the cache is still valid
    load_annotated_split(train, 4, cache_dir=cache)
    assert converted == []

    _write_folder(train / "a", {1: 6})  # new content
    records = load_annotated_split(train, 4, cache_dir=cache)
    assert converted == ["a"]
    assert [len(r["annotations"]) for r in records] == [6, 2]

    (train / "b" / "class1.tif").rename(train / "b" / "class2.tif")  # same bytes, new name
    records = load_annotated_split(train, 4, cache_dir=cache)
    assert converted == ["a", "b"]
    assert [a["category_id"] for a in records[1]["annotations"]] == [1, 1]


def test_a_mask_edited_in_place_with_its_size_and_mtime_is_never_served_stale(tmp_path,
                                                                             monkeypatch):
    train = tmp_path / "train"
    _write_folder(train / "a", {1: 4})
    cache = tmp_path / "cache"
    (record,) = load_annotated_split(train, 4, cache_dir=cache)
    assert len(record["annotations"]) == 4
    mask_file = train / "a" / "class1.tif"
    stat = mask_file.stat()
    mask = tifffile.imread(mask_file)
    mask[mask == 4] = 3  # instance 4 merged into 3: same dtype and shape, so the same size
    tifffile.imwrite(mask_file, mask)
    os.utime(mask_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (mask_file.stat().st_size, mask_file.stat().st_mtime_ns) == (stat.st_size,
                                                                        stat.st_mtime_ns)
    converted = _counting_conversions(monkeypatch)
    (record,) = load_annotated_split(train, 4, cache_dir=cache)
    assert converted == ["a"]
    assert len(record["annotations"]) == 3


def _planted_pickle(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when it is loaded."""

    class Plant:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps(Plant())


def test_a_planted_pickle_or_garbage_in_the_cache_is_ignored_and_never_run(tmp_path, caplog):
    train = tmp_path / "train"
    _write_folder(train / "a", {1: 3})
    cache = tmp_path / "cache"
    (expected,) = load_annotated_split(train, 4, cache_dir=cache)
    (cache_file,) = cache.iterdir()
    assert cache_file.suffix == ".json"
    marker = tmp_path / "marker"
    legacy = cache_file.with_suffix(".pkl")
    for content in (_planted_pickle(marker), b"\x00garbage", b'{"format": "other"}',
                    b"[1, 2]"):
        cache_file.write_bytes(content)
        legacy.write_bytes(_planted_pickle(marker))  # the name caches had before: never opened
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="seg_project.data.cache"):
            (record,) = load_annotated_split(train, 4, cache_dir=cache)
        assert record == expected
        assert not marker.exists()
        messages = [r.getMessage() for r in caplog.records]
        assert any(str(cache_file) in m and "Ignoring" in m for m in messages), messages
        assert any(str(legacy) in m and "never loaded" in m for m in messages), messages
        assert json.loads(cache_file.read_text())["entries"]["a"]["record"] == expected


def test_cache_lives_in_its_folder_and_the_dataset_is_not_written(tmp_path, monkeypatch):
    if not HW3.is_dir():
        pytest.skip(f"course sample data not found at {HW3}")
    env_cache = tmp_path / "env-cache"
    monkeypatch.setenv("SEG_PROJECT_CACHE", str(env_cache))
    before = _snapshot(HW3)
    cache = tmp_path / "cache"
    first = load_annotated_split(HW3 / "train", 4, cache_dir=cache)
    assert load_annotated_split(HW3 / "train", 4, cache_dir=cache) == first
    assert _snapshot(HW3) == before
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"
    assert not env_cache.exists()  # an explicit cache_dir wins over the environment
    load_annotated_split(HW3 / "train", 4)
    assert [p.suffix for p in env_cache.iterdir()] == [".json"]
    assert _snapshot(HW3) == before


# -- image formats --------------------------------------------------------------------------

_RNG = np.random.default_rng(0)
_RGB = _RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)
_GRAY = _RGB[..., 0]


def _rgba_varying_alpha():
    alpha = _RNG.integers(0, 256, (12, 16, 1), dtype=np.uint8)
    return np.concatenate([_RGB, alpha], axis=2)


@pytest.mark.filterwarnings("ignore:.*stored as RGB:DeprecationWarning")  # float RGB write
@pytest.mark.parametrize("name,array,expected", [
    ("gray.tif", _GRAY, np.repeat(_GRAY[..., None], 3, axis=2)),
    ("gray1.tif", _GRAY[..., None], np.repeat(_GRAY[..., None], 3, axis=2)),
    ("rgb.tif", _RGB, _RGB),
    ("rgba.tif", _rgba_varying_alpha(), _RGB),  # alpha dropped, colors as stored
    ("gray16_small.tif", _GRAY.astype(np.uint16), np.repeat(_GRAY[..., None], 3, axis=2)),
    ("rgb16_small.tif", _RGB.astype(np.uint16), _RGB),
    ("float01.tif", _RGB / 255.0, _RGB),
])
def test_image_formats_read_as_rgb_uint8(tmp_path, name, array, expected):
    tifffile.imwrite(tmp_path / name, array)
    image = read_image(tmp_path / name)
    assert image.dtype == np.uint8 and image.shape == (12, 16, 3)
    np.testing.assert_array_equal(image, expected)


def test_planar_rgb_tiff_reads_channels_last(tmp_path):
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(_RGB, 2, 0), photometric="rgb",
                     planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), _RGB)


def test_wide_uint16_is_stretched_by_percentiles(tmp_path):
    data = np.linspace(0, 60000, 100 * 100).reshape(100, 100).astype(np.uint16)
    data[0, 0] = 65535  # one hot pixel beyond the 99.9th percentile
    tifffile.imwrite(tmp_path / "wide.tif", data)
    image = read_image(tmp_path / "wide.tif")
    assert image.shape == (100, 100, 3) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 2]).all()
    gray = image[..., 0].astype(int)
    assert gray.min() == 0 and gray.max() == 255 and gray[0, 0] == 255
    assert 120 <= gray[50, 0] <= 135  # the middle of the range lands mid-gray
    flat = gray.ravel()[1:]
    assert (np.diff(flat) >= 0).all()  # order kept
    assert len(np.unique(flat)) > 200  # and not clipped to a few levels


def test_png_via_opencv_is_rgb(tmp_path):
    cv2.imwrite(str(tmp_path / "rgb.png"), _RGB[..., ::-1])  # OpenCV writes BGR
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), _RGB)
    cv2.imwrite(str(tmp_path / "gray16.png"), _GRAY.astype(np.uint16) * 200)
    image = read_image(tmp_path / "gray16.png")
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8
    assert image.max() == 255 and image.min() == 0


# -- train/val split ------------------------------------------------------------------------


@pytest.fixture
def ten_folders(tmp_path):
    train = tmp_path / "root" / "train"
    for i in range(10):
        (train / f"img{i:02d}").mkdir(parents=True)
    (train / ".hidden").mkdir()
    return train


def test_split_is_deterministic_respects_fraction_and_depends_on_seed(ten_folders):
    names = sorted(f"img{i:02d}" for i in range(10))
    first = split_train_val(ten_folders, 0.2, seed=0)
    assert first == split_train_val(ten_folders, 0.2, seed=0)
    assert len(first["val"]) == 2 and sorted(first["train"] + first["val"]) == names
    assert len(split_train_val(ten_folders, 0.5, seed=0)["val"]) == 5
    assert split_train_val(ten_folders, 0.0)["val"] == []
    others = {tuple(split_train_val(ten_folders, 0.2, seed=s)["val"]) for s in range(1, 6)}
    assert others - {tuple(first["val"])}, "the seed does not change the split"


def test_split_from_a_list_file(ten_folders, tmp_path):
    listing = tmp_path / "val.txt"
    listing.write_text("# held out\nimg03\n\nimg07\n")
    assert split_train_val(ten_folders, val_list=str(listing))["val"] == ["img03", "img07"]
    listing.write_text("img03\nimg99\n")
    with pytest.raises(DatasetError) as info:
        split_train_val(ten_folders, val_list=str(listing))
    assert str(listing) in str(info.value) and "img99" in str(info.value)


def test_split_from_an_earlier_runs_cells_split_json(ten_folders, tmp_path, restore_catalog):
    root = ten_folders.parent
    register_cells_splits(root, val_fraction=0.3, seed=5)
    path = write_split_file(tmp_path / "run", ["cells_train", "cells_val"])
    saved = json.loads(path.read_text())
    expected = split_train_val(ten_folders, 0.3, seed=5)
    assert saved["val_names"] == expected["val"] and len(expected["val"]) == 3
    assert split_train_val(ten_folders, val_list=str(path)) == expected
