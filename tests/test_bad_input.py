"""Bad input gives a DatasetError whose message names the offending file and the problem.

Every fixture is a tiny folder written here with tifffile (no dependency on a generator).
"""

import json
import os

import cv2
import numpy as np
import pytest
import tifffile
from detectron2.data import DatasetCatalog

from seg_project.data.catalog import register_cells_splits
from seg_project.data.image_io import (
    DatasetError,
    check_image,
    read_array,
    read_image,
    read_image_size,
    read_mask,
)
from seg_project.data.reader import (
    load_annotated_split,
    load_mapping,
    load_test_images,
    summarize,
)
from seg_project.utils.errors import ConfigError

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


# -- pixel limit and colour modes -----------------------------------------------------------


def forged_tiff(path, height: int, width: int):
    """A 200-byte RGB TIFF whose header declares ``height`` x ``width`` pixels."""
    tifffile.imwrite(path, np.zeros((1, 1, 3), np.uint8), photometric="rgb", metadata=None)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tags = tif.pages[0].tags
        tags["ImageWidth"].overwrite(width)
        tags["ImageLength"].overwrite(height)
        tags["RowsPerStrip"].overwrite(height)
    return path


@pytest.fixture
def no_pixels_decoded(monkeypatch):
    """Fail any decoding of a TIFF's pixels (a refusal must come from the header alone)."""

    def refuse(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", refuse)


def test_a_header_declaring_40000_by_40000_pixels_is_refused_before_decoding(
        train, no_pixels_decoded):
    folder = _write_folder(train / "a", {})
    forged_tiff(folder / "image.tif", 40000, 40000)
    for read in (read_image, read_mask, read_image_size, check_image):
        _assert_names(_error(read, folder / "image.tif"), folder / "image.tif",
                      "declares 1,600,000,000 pixels", "limit of 268,435,456",
                      "SEG_PROJECT_MAX_PIXELS")
    _assert_names(_load_error(train), folder / "image.tif", "declares 1,600,000,000 pixels")


def test_the_pixel_limit_is_a_setting(train, tmp_path, monkeypatch):
    folder = _write_folder(train / "a")  # 20 x 30 = 600 pixels
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((H, W, 3), np.uint8))
    monkeypatch.setenv("SEG_PROJECT_MAX_PIXELS", "600")
    assert read_image(folder / "image.tif").shape == (H, W, 3)
    monkeypatch.setenv("SEG_PROJECT_MAX_PIXELS", "599")
    for path in (folder / "image.tif", folder / "class1.tif", tmp_path / "b.png"):
        _assert_names(_error(read_array, path), path, "declares 600 pixels", "limit of 599")
        _assert_names(_error(read_image_size, path), path, "declares 600 pixels")
    monkeypatch.setenv("SEG_PROJECT_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="SEG_PROJECT_MAX_PIXELS: must be a positive number"):
        read_image(folder / "image.tif")


def test_many_samples_per_pixel_count_towards_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "stack.tif"  # 4 x 5 pixels of 40 samples: as much memory as 200 pixels
    tifffile.imwrite(path, np.zeros((4, 5, 40), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    monkeypatch.setenv("SEG_PROJECT_MAX_PIXELS", "100")
    _assert_names(_error(read_array, path), path, "declares 200 pixels", "limit of 100")


def test_cmyk_and_other_colour_modes_are_refused_naming_the_file(train, tmp_path):
    folder = _write_folder(train / "a")
    tifffile.imwrite(folder / "image.tif", np.zeros((H, W, 4), np.uint8),
                     photometric="separated")
    _assert_names(_error(read_image, folder / "image.tif"), folder / "image.tif",
                  "CMYK TIFF", "convert the image to RGB first")
    _assert_names(_load_error(train), folder / "image.tif", "CMYK TIFF")
    lab = tmp_path / "lab.tif"
    tifffile.imwrite(lab, np.zeros((H, W, 3), np.uint8), photometric="cielab")
    _assert_names(_error(check_image, lab), lab, "CIELAB TIFF", "not supported")


def test_a_palette_image_is_read_through_its_colour_map_a_palette_mask_by_its_indices(
        tmp_path):
    indices = np.zeros((H, W), np.uint8)
    indices[2:6, 3:8] = 1
    indices[10:15, 12:20] = 2
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, 1] = [255 * 257, 0, 0]  # 16-bit entries, as TIFF stores them
    colormap[:, 2] = [0, 128 * 256, 255 * 256]  # some programs scale by 256
    path = tmp_path / "palette.tif"
    tifffile.imwrite(path, indices, photometric="palette", colormap=colormap)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    assert (image[3, 4] == [255, 0, 0]).all() and (image[12, 15] == [0, 128, 255]).all()
    assert (image[0, 0] == 0).all()
    assert check_image(path) == (H, W)
    assert np.array_equal(read_mask(path), indices)  # a mask's indices are its instance ids


def test_a_pixel_type_no_image_has_is_refused(tmp_path):
    path = tmp_path / "complex.tif"
    tifffile.imwrite(path, np.zeros((H, W), np.complex64))
    _assert_names(_error(check_image, path), path, "unsupported pixel type complex64")
