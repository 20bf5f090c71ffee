"""Bad input gives a DatasetError whose message names the offending file and the problem.

Every fixture is a tiny folder written here with tifffile (no dependency on a generator).
"""

import json
import os

import numpy as np
import pytest
import tifffile
from detectron2.data import DatasetCatalog

from seg_project.data.catalog import register_cells_splits
from seg_project.data.image_io import DatasetError
from seg_project.data.reader import (
    load_annotated_split,
    load_mapping,
    load_test_images,
    summarize,
)

H, W = 20, 30


def _blob_mask(dtype=np.uint16):
    mask = np.zeros((H, W), dtype)
    mask[2:6, 3:8] = 1
    mask[10:15, 12:20] = 2
    return mask


def _write_folder(folder, masks=None, image=None):
    """``folder/image.tif`` (RGB HxW unless ``image`` is given) and the ``masks`` files
    (name -> array); default: one class1.tif with two instances."""
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "image.tif",
                     np.full((H, W, 3), 100, np.uint8) if image is None else image)
    for name, array in ({"class1.tif": _blob_mask()} if masks is None else masks).items():
        tifffile.imwrite(folder / name, array)
    return folder


@pytest.fixture
def train(tmp_path):
    return tmp_path.resolve() / "root" / "train"


@pytest.fixture
def restore_catalog():
    """Tests that re-register the cells_* datasets put the default registration back."""
    yield
    register_cells_splits()


def _error(call, *args, **kwargs) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        call(*args, **kwargs)
    return info.value


def _load_error(train, num_classes=4) -> DatasetError:
    return _error(load_annotated_split, train, num_classes, cache_dir=False)


def _assert_names(error: DatasetError, path, *problem_words):
    """The message starts with the offending file and holds every word of the problem."""
    assert error.path == str(path)
    assert str(error).startswith(f"{path}: ")
    for word in problem_words:
        assert word in error.problem, (word, str(error))


# -- annotated folders ----------------------------------------------------------------------


def test_missing_image_tif(train):
    folder = _write_folder(train / "a")
    os.remove(folder / "image.tif")
    _assert_names(_load_error(train), folder / "image.tif", "missing", "image.tif")


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(2000))


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage,words", [
    (_truncated, ["cannot read TIFF", "corrupt"]),
    (_random_bytes, ["cannot read TIFF", "not a TIFF"]),
    (_empty, ["empty", "0 bytes"]),
], ids=["truncated", "random-bytes", "empty"])
@pytest.mark.parametrize("name", ["image.tif", "class1.tif"])
def test_corrupt_tiff(train, name, damage, words):
    folder = _write_folder(train / "a", image=np.random.default_rng(1).integers(
        0, 255, (H, W, 3), dtype=np.uint8))
    damage(folder / name)
    _assert_names(_load_error(train), folder / name, *words)


def test_mask_shape_differs_from_image(train):
    folder = _write_folder(train / "a", {"class2.tif": _blob_mask()[:, :W - 1]})
    _assert_names(_load_error(train), folder / "class2.tif", f"{H}x{W - 1}", f"{H}x{W}")


@pytest.mark.parametrize("dtype", [np.int32, np.float64])
def test_mask_with_negative_values(train, dtype):
    mask = _blob_mask(dtype)
    mask[0, 0] = -1
    folder = _write_folder(train / "a", {"class1.tif": mask})
    _assert_names(_load_error(train), folder / "class1.tif", "negative")


def test_mask_with_nan(train):
    mask = _blob_mask(np.float64)
    mask[1, 1] = np.nan
    folder = _write_folder(train / "a", {"class1.tif": mask})
    _assert_names(_load_error(train), folder / "class1.tif", "NaN")


def test_mask_with_values_that_are_not_whole_numbers(train):
    mask = _blob_mask(np.float64)
    mask[1, 1] = 1.5
    folder = _write_folder(train / "a", {"class1.tif": mask})
    _assert_names(_load_error(train), folder / "class1.tif", "not whole numbers", "1.5")


@pytest.mark.parametrize("array", [
    np.stack([_blob_mask(np.uint8)] * 3, axis=2),  # RGB mask
    np.stack([_blob_mask(np.uint8)] * 2, axis=0),  # two pages: not cut to the first one
], ids=["channels", "pages"])
def test_multi_channel_mask(train, array):
    folder = _write_folder(train / "a", {"class1.tif": array})
    _assert_names(_load_error(train), folder / "class1.tif", "single-channel")


@pytest.mark.parametrize("name", ["class0.tif", "class5.tif"])
def test_class_number_outside_1_to_k(train, name):
    folder = _write_folder(train / "a", {"class1.tif": _blob_mask(), name: _blob_mask()})
    _assert_names(_load_error(train, num_classes=4), folder / name, "outside 1..4")


@pytest.mark.parametrize("name", ["class_1.tif", "mask.tif", "Class1.tif", "class1.tiff"])
def test_tiff_not_named_class_n(train, name):
    folder = _write_folder(train / "a", {name: _blob_mask()})
    _assert_names(_load_error(train), folder / name, "unexpected TIFF name", "classN.tif")


def test_two_files_for_one_class(train):
    folder = _write_folder(train / "a", {"class1.tif": _blob_mask(), "class01.tif": _blob_mask()})
    _assert_names(_load_error(train), folder / "class1.tif", "two mask files", "class01.tif")


def test_only_the_bad_folder_is_named(train):
    _write_folder(train / "a")
    bad = _write_folder(train / "b", {"class1.tif": _blob_mask()[:10]})
    _write_folder(train / "c")
    _assert_names(_load_error(train), bad / "class1.tif", "mask is")


# -- the test-image mapping -----------------------------------------------------------------


@pytest.fixture
def test_images(tmp_path):
    """A test folder of two images (20x30 and 40x50) and a mapping file that fits them."""
    folder = tmp_path.resolve() / "test_release"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.zeros((20, 30, 3), np.uint8))
    tifffile.imwrite(folder / "b.tif", np.zeros((40, 50, 3), np.uint8))
    entries = [{"file_name": "a.tif", "id": 1, "height": 20, "width": 30},
               {"file_name": "b.tif", "id": 2, "height": 40, "width": 50}]
    mapping = tmp_path.resolve() / "test_image_name_to_ids.json"
    assert len(load_test_images(folder, _write_mapping(mapping, entries))) == 2
    return folder, mapping, entries


def _write_mapping(path, entries):
    path.write_text(json.dumps(entries))
    return path


def test_mapping_misses_an_image(test_images):
    folder, mapping, entries = test_images
    _write_mapping(mapping, entries[:1])
    _assert_names(_error(load_test_images, folder, mapping), mapping, "misses 1 image", "b.tif")


def test_mapping_repeats_an_id(test_images):
    folder, mapping, entries = test_images
    entries[1]["id"] = 1
    _write_mapping(mapping, entries)
    _assert_names(_error(load_test_images, folder, mapping), mapping, "id 1 is repeated")


def test_mapping_repeats_a_file_name(test_images):
    folder, mapping, entries = test_images
    _write_mapping(mapping, entries + [dict(entries[0], id=3)])
    _assert_names(_error(load_test_images, folder, mapping), mapping,
                  "file name a.tif is repeated")


@pytest.mark.parametrize("name", ["./a.tif", "sub/../a.tif", "a.tif/"])
def test_mapping_names_one_file_twice(test_images, name):
    folder, mapping, entries = test_images
    _write_mapping(mapping, entries + [dict(entries[0], file_name=name, id=3)])
    _assert_names(_error(load_test_images, folder, mapping), mapping,
                  f"ids 1 and 3 name one file, a.tif ('a.tif' and {name!r})")


@pytest.mark.parametrize("name", ["../outside.tif", "sub/../../outside.tif", "..", "ABSOLUTE"])
def test_mapping_names_a_file_outside_the_image_folder(test_images, name):
    folder, mapping, entries = test_images
    tifffile.imwrite(folder.parent / "outside.tif", np.zeros((H, W), np.uint8))
    if name == "ABSOLUTE":
        name = str(folder.parent / "outside.tif")
    _write_mapping(mapping, [dict(entries[0], file_name=name)] + entries[1:])
    _assert_names(_error(load_test_images, folder, mapping), mapping,
                  f"entry 0 (id 1): file_name {name!r} leaves the image folder")
    with pytest.raises(DatasetError, match="leaves the image folder"):
        load_mapping(mapping)  # whoever reads the mapping file (the submission checker too)


def test_mapping_may_name_files_with_dots_inside_the_folder(test_images):
    folder, mapping, entries = test_images
    entries[0]["file_name"] = "./sub/../a.tif"
    _write_mapping(mapping, entries)
    records = load_test_images(folder, mapping)
    assert [r["file_name"] for r in records] == [str(folder / "a.tif"), str(folder / "b.tif")]


def test_mapping_lists_a_missing_file(test_images):
    folder, mapping, entries = test_images
    _write_mapping(mapping, entries + [{"file_name": "c.tif", "id": 3, "height": 5,
                                        "width": 5}])
    _assert_names(_error(load_test_images, folder, mapping), folder / "c.tif",
                  "listed in", "missing")


def test_mapping_disagrees_with_an_image_size(test_images):
    folder, mapping, entries = test_images
    entries[1]["width"] = 51
    _write_mapping(mapping, entries)
    _assert_names(_error(load_test_images, folder, mapping), folder / "b.tif",
                  "is 40x50", "says 40x51")


@pytest.mark.parametrize("text,words", [
    ("{not json", ["not valid JSON"]),
    ('{"file_name": "a.tif"}', ["JSON list"]),
    ('[{"file_name": "a.tif", "id": 1}]', ["needs file_name, id, height and width"]),
    ('[{"file_name": "a.tif", "id": "1", "height": 20, "width": 30}]', ["id must be"]),
], ids=["bad-json", "not-a-list", "missing-keys", "id-not-int"])
def test_mapping_file_malformed(test_images, text, words):
    folder, mapping, _ = test_images
    mapping.write_text(text)
    _assert_names(_error(load_test_images, folder, mapping), mapping, *words)


# -- empty splits and empty images ----------------------------------------------------------


def test_train_folder_without_subfolders(train):
    train.mkdir(parents=True)
    (train / "notes.txt").write_text("no images here")
    _assert_names(_load_error(train), train, "empty split")


def test_validation_fraction_selecting_nothing(train, restore_catalog):
    _write_folder(train / "only")
    register_cells_splits(train.parent, val_fraction=0.2, cache_dir=False)
    error = _error(DatasetCatalog.get, "cells_val")
    _assert_names(error, train, "empty split", "validation fraction")
    assert len(DatasetCatalog.get("cells_train")) == 1


def test_empty_names_list(train):
    _write_folder(train / "a")
    error = _error(load_annotated_split, train, 4, names=[], cache_dir=False)
    _assert_names(error, train, "empty split", "1 folder")


def test_missing_split_folder(tmp_path):
    missing = tmp_path.resolve() / "nowhere" / "train"
    _assert_names(_load_error(missing), missing, "not found")


def test_images_without_instances_are_kept_and_reported(train):
    _write_folder(train / "all-zero", {"class1.tif": np.zeros((H, W), np.float64)})
    _write_folder(train / "no-class-file", {})
    _write_folder(train / "normal")
    records = load_annotated_split(train, 4, cache_dir=False)
    assert [len(r["annotations"]) for r in records] == [0, 0, 2]
    summary = summarize(records, ["class1", "class2", "class3", "class4"])
    assert summary["empty_images"] == ["all-zero", "no-class-file"]
    assert summary["images"] == 3 and summary["instances_per_class"]["class1"] == 2
    assert summary["instances_per_image"] == {"min": 0, "median": 0.0, "max": 2}
