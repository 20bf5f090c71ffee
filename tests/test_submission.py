"""Tests of the submission writer and checker (seg_project.submission) and its CLI."""

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest

from seg_project import submission as sub
from seg_project.data.image_io import DatasetError
from seg_project.data.rle import counts_problems, encode_crop
from seg_project.submission import (
    build_submission,
    check_submission,
    format_report,
    load_result_entries,
    load_submission,
    write_submission,
)
from seg_project.submission.entries import RESULT_KEYS, entry_problems

REPO = Path(__file__).resolve().parents[1]
HW3 = Path(__file__).resolve().parents[2] / "shared" / "data" / "hw3-sample"
NUM_CLASSES = 4
MAPPING = [
    {"file_name": "a.tif", "id": 1, "height": 120, "width": 150},
    {"file_name": "b.tif", "id": 7, "height": 30, "width": 30},
]


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return xx ** 2 + yy ** 2 <= radius ** 2


def _prediction(crop: np.ndarray, x0: int, y0: int, size, category: int, score: float):
    """A prediction entry (as inference makes them) whose bbox is the crop's tight box."""
    ys, xs = np.nonzero(crop)
    bbox = [float(x0 + xs.min()), float(y0 + ys.min()), float(np.ptp(xs) + 1),
            float(np.ptp(ys) + 1)]
    return {"bbox": bbox, "score": score, "category_id": category,
            "segmentation": encode_crop(crop, x0, y0, *size)}


def _predictions():
    """Crafted masks: a rectangle, a disk, an L at the bottom-right corner, a full-height bar."""
    ell = np.zeros((6, 7), bool)
    ell[:, :2] = True
    ell[-2:, :] = True
    image1 = [
        _prediction(np.ones((5, 6), bool), 10, 8, (120, 150), 1, 0.9),
        _prediction(_disk(4), 30, 20, (120, 150), 2, 0.75),
        _prediction(ell, 143, 114, (120, 150), 4, 0.5),
    ]
    image7 = [_prediction(np.ones((30, 2), bool), 3, 0, (30, 30), 3, 1.0)]
    return [(1, image1), (7, image7)]


@pytest.fixture
def entries():
    return build_submission(_predictions())


@pytest.fixture
def mapping_file(tmp_path):
    path = tmp_path / "ids.json"
    path.write_text(json.dumps(MAPPING))
    return path


def _check(entries, **kwargs):
    return check_submission(entries, MAPPING, NUM_CLASSES, **kwargs)


# ------------------------------------------------------------------------------ building


def test_build_submission_orders_keys_converts_types_and_boxes():
    predictions = _predictions()
    predictions[0][1][0]["segmentation"]["counts"] = (
        predictions[0][1][0]["segmentation"]["counts"].encode("ascii"))
    predictions[0][1][0]["score"] = np.float32(0.25)
    xywh = build_submission(predictions)
    xyxy = build_submission(predictions, bbox_format="xyxy")
    assert [list(e) for e in xywh] == [list(sub.ENTRY_KEYS)] * 4
    first = xywh[0]
    assert first["image_id"] == 1 and type(first["category_id"]) is int
    assert type(first["score"]) is float and first["score"] == 0.25
    assert all(type(v) is float for v in first["bbox"])
    assert isinstance(first["segmentation"]["counts"], str)
    assert first["bbox"] == [10.0, 8.0, 6.0, 5.0]
    assert xyxy[0]["bbox"] == [10.0, 8.0, 16.0, 13.0]
    assert [e["image_id"] for e in xyxy] == [1, 1, 1, 7]


def test_build_submission_rejects_bad_input():
    with pytest.raises(ValueError, match="bbox_format"):
        build_submission(_predictions(), bbox_format="cxcywh")
    broken = _predictions()
    del broken[1][1][0]["score"]
    with pytest.raises(ValueError, match="prediction 0 of image_id 7"):
        build_submission(broken)
    with pytest.raises(ValueError, match="image_id must be an integer"):
        build_submission([(1.5, [])])


# ------------------------------------------------------------------ valid submissions


@pytest.mark.parametrize("bbox_format", ["xywh", "xyxy"])
def test_valid_submission_round_trips_through_json_and_zip(tmp_path, mapping_file, bbox_format):
    entries = build_submission(_predictions(), bbox_format=bbox_format)
    written = write_submission(entries, tmp_path / "out" / "test-results.json",
                               zip_path=tmp_path / "out" / "submission.zip")
    assert written == [tmp_path / "out" / "test-results.json", tmp_path / "out" / "submission.zip"]
    assert json.loads(written[0].read_text()) == entries
    with zipfile.ZipFile(written[1]) as archive:
        assert archive.namelist() == ["test-results.json"]
    assert load_submission(written[1]) == entries
    for source in [entries, written[0], str(written[1])]:
        for requested in ("auto", bbox_format):
            report = check_submission(source, mapping_file, NUM_CLASSES, bbox_format=requested)
            assert report.ok, report.errors
            assert report.bbox_format == bbox_format
            assert report.num_entries == 4
            assert report.entries_per_image == {1: 3, 7: 1}
            assert report.entries_per_class == {1: 1, 2: 1, 3: 1, 4: 1}
            assert report.images_without_entries == []
            assert report.warnings == []
    text = format_report(report)
    assert "VALID" in text and f"bbox format: {bbox_format}" in text and "7:1" in text


def test_staff_example_checks_clean_and_is_detected_as_xyxy():
    if not HW3.is_dir():
        pytest.skip(f"real data not found at {HW3} (see ../shared/data/README.md)")
    example = HW3 / "submission_example" / "test-results.json"
    report = check_submission(example, HW3 / "test_image_name_to_ids.json", NUM_CLASSES)
    assert report.ok, report.errors
    assert report.bbox_format == "xyxy"
    assert report.entries_per_image[1] == 2 and len(report.images_without_entries) == 100
    # Read as COCO boxes the staff's boxes run off the image: a clear error, and a hint.
    as_xywh = check_submission(example, HW3 / "test_image_name_to_ids.json", NUM_CLASSES,
                               bbox_format="xywh")
    assert len(as_xywh.errors) == 2
    assert "entry 0 (image_id 1)" in as_xywh.errors[0]
    assert any("look like xyxy" in w for w in as_xywh.warnings)


def test_auto_format_prefers_the_reading_whose_boxes_match_the_masks_better():
    """Boxes of masks near the origin fit both readings; the tighter reading wins."""
    near_origin = build_submission([(1, _predictions()[0][1][:2])], bbox_format="xyxy")
    report = _check(near_origin)
    assert report.ok and report.bbox_format == "xyxy", report.bbox_format_note
    assert "2 of 2 non-empty masks fit xyxy (mean IoU 1.00), 2 fit xywh" in (
        report.bbox_format_note)
    forced = _check(near_origin, bbox_format="xywh")
    assert forced.ok and any("look like xyxy" in w for w in forced.warnings)


def test_empty_masks_and_missing_images_are_warnings_unless_required(entries):
    entries = [e for e in entries if e["image_id"] == 1]
    entries[1]["segmentation"] = encode_crop(np.zeros((3, 3), bool), 0, 0, 120, 150)
    report = _check(entries)
    assert report.ok, report.errors
    assert report.images_without_entries == [7]
    assert any("empty mask" in w and "entry 1 (image_id 1)" in w for w in report.warnings)
    assert any("1 of 2 images have no entry" in w for w in report.warnings)
    strict = _check(entries, require_all_images=True)
    assert not strict.ok and "1 of 2 images have no entry: ids 7" in strict.errors[0]


def test_a_bbox_far_larger_than_its_mask_is_a_warning(entries):
    entries[1]["bbox"] = [0.0, 0.0, 140.0, 110.0]  # holds the 9x9 disk, but 15 times as wide
    report = _check(entries)
    assert report.ok, report.errors
    assert any(w.startswith("1 entry has a bbox far larger than its mask")
               and "entry 1 (image_id 1)" in w for w in report.warnings)


def test_crowded_images_get_a_max_dets_warning(entries):
    crowded = [copy.deepcopy(entries[0]) for _ in range(sub.COCO_MAX_DETS + 1)]
    report = _check(crowded)
    assert report.ok
    assert any("maxDets=100" in w for w in report.warnings)


# -------------------------------------------------------------------------------- errors


def _set(path, value):
    def mutate(entry):
        target = entry
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _counts(transform):
    def mutate(entry):
        entry["segmentation"]["counts"] = transform(entry["segmentation"]["counts"])
    return mutate


def _delete(key):
    return lambda entry: entry.pop(key)


def _shift_bbox(dx):
    return lambda entry: entry["bbox"].__setitem__(0, entry["bbox"][0] + dx)


ERROR_CASES = {
    "image_id str": (_set(["image_id"], "1"), "image_id must be an integer"),
    "image_id float": (_set(["image_id"], 1.0), "image_id must be an integer"),
    "unknown image_id": (_set(["image_id"], 99), "image_id 99 is not in the mapping file"),
    "category 0": (_set(["category_id"], 0), "category_id 0 is outside 1..4"),
    "category K+1": (_set(["category_id"], 5), "category_id 5 is outside 1..4"),
    "category bool": (_set(["category_id"], True), "category_id must be an integer"),
    "score str": (_set(["score"], "0.9"), "score must be a finite number"),
    "score nan": (_set(["score"], float("nan")), "score must be a finite number"),
    "score > 1": (_set(["score"], 1.5), "score 1.5 is outside [0, 1]"),
    "bbox of 3": (_set(["bbox"], [1.0, 2.0, 3.0]), "bbox must be a list of 4 finite numbers"),
    "bbox inf": (_set(["bbox"], [1.0, 2.0, float("inf"), 3.0]), "bbox must be a list of 4"),
    "missing key": (_delete("score"), "missing key(s): score"),
    "wrong RLE size": (_set(["segmentation", "size"], [150, 120]),
                       "segmentation size [150, 120] differs from the image's size [120, 150]"),
    "float RLE size": (_set(["segmentation", "size"], [120.0, 150.0]),
                       "segmentation size must be [height, width] integers"),
    "uncompressed counts": (_set(["segmentation", "counts"], [0, 5, 1995]),
                            "counts must be a compressed RLE string, got an uncompressed RLE"),
    "counts extra run": (_counts(lambda c: c + "5"), "segmentation counts decode to"),
    "counts truncated": (_counts(lambda c: c + "a"), "truncated"),
    "counts bad char": (_counts(lambda c: "~" + c), "outside the RLE alphabet"),
    "counts non-ascii": (_counts(lambda c: c + "é"), "outside the RLE alphabet"),
    "counts empty": (_counts(lambda c: ""), "segmentation counts is empty"),
    "counts negative run": (_counts(lambda c: "5M" + c), "decode to a negative"),
    "counts long number": (_counts(lambda c: "ooooooo0" + c), "longer than 6 characters"),
    "bbox off the mask": (_shift_bbox(20.0), "does not contain its mask"),
    "bbox off the image": (_set(["bbox"], [30.0, 20.0, 130.0, 9.0]),
                           "reaches beyond the 120x150 image"),
    "bbox negative size": (_set(["bbox"], [12.0, 9.0, -2.0, 3.0]), "negative width or height"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_each_kind_of_error_is_reported_naming_the_entry(entries, case):
    mutate, expected = ERROR_CASES[case]
    broken = copy.deepcopy(entries)
    mutate(broken[1])
    report = _check(broken, bbox_format="xywh")
    assert not report.ok
    assert len(report.errors) == 1, report.errors
    assert expected in report.errors[0]
    image_id = broken[1].get("image_id")
    assert report.errors[0].startswith(f"entry 1 (image_id {image_id!r}): ")
    assert "INVALID (1 error)" in format_report(report)


def test_entry_that_is_not_an_object_and_a_top_level_that_is_not_a_list(entries, tmp_path):
    report = _check(entries[:1] + [["not", "a", "dict"]] + entries[1:])
    assert report.errors == ["entry 1 (no image_id): must be an object with keys image_id, "
                             "bbox, score, category_id, segmentation, got ['not', 'a', "
                             "'dict'] (list)"]
    path = tmp_path / "dict.json"
    path.write_text(json.dumps({"annotations": entries}))
    for source in ({"annotations": entries}, path):
        report = _check(source)
        assert report.errors == ["top level must be a JSON list of entries, got dict"]


def test_checker_and_readers_share_one_entry_validator(entries, tmp_path):
    """The checker and the results reader (evaluation, pictures) name a bad field alike."""
    broken = copy.deepcopy(entries)
    broken[1]["score"] = float("nan")
    problem = "score must be a finite number, got nan (float)"
    assert _check(broken).errors == [f"entry 1 (image_id 1): {problem}"]
    path = tmp_path / "results.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("test-results.json", json.dumps(broken))
    with pytest.raises(DatasetError, match=r"results\.zip: entry 1: " + re.escape(problem)):
        load_result_entries(path)
    assert load_result_entries(write_submission(entries, tmp_path / "r.json")[0]) == entries
    # One image's predictions need no image_id; any entry needs a bbox or a mask.
    prediction = {"score": 0.5, "category_id": 1, "bbox": [0, 0, 1, 1]}
    assert entry_problems(prediction, ("category_id", "score")).first() is None
    assert entry_problems(prediction, RESULT_KEYS).first() == "image_id is missing"
    assert entry_problems({"score": 0.5, "category_id": 1}, ("category_id", "score")).first() \
        == "has neither segmentation nor bbox"


def test_many_errors_are_all_kept_but_the_report_is_truncated(entries):
    broken = [dict(entries[0], category_id=9) for _ in range(50)]
    report = _check(broken)
    assert len(report.errors) == 50
    text = format_report(report, max_listed=5)
    assert "entry 4 (image_id 1)" in text and "entry 5 (" not in text
    assert "... and 45 more" in text


def test_unreadable_submissions_raise_dataset_errors(tmp_path, mapping_file):
    with pytest.raises(DatasetError, match="submission file not found"):
        load_submission(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_id": 1,')
    with pytest.raises(DatasetError, match="bad.json: not valid JSON"):
        check_submission(bad, mapping_file, NUM_CLASSES)
    wrong_zip = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong_zip, "w") as archive:
        archive.writestr("results/test-results.json", "[]")
    with pytest.raises(DatasetError, match="found results/test-results.json"):
        load_submission(wrong_zip)
    not_zip = tmp_path / "not.zip"
    not_zip.write_text("[]")
    with pytest.raises(DatasetError, match="not a readable zip"):
        load_submission(not_zip)
    with pytest.raises(ValueError, match="num_classes"):
        check_submission([], mapping_file, 0)


# ------------------------------------------------- large and hostile submission files


def _varied(entries, copies: int):
    """``copies`` variants of ``entries``, with problems and warnings of every kind spread
    over them (so that they cross chunk and read-buffer boundaries)."""
    out = []
    for k in range(copies):
        for entry in copy.deepcopy(entries):
            if k % 5 == 1:
                entry["score"] = 7.5
            elif k % 5 == 2:
                entry["segmentation"]["counts"] = entry["segmentation"]["counts"][:-1]
            elif k % 5 == 3:
                entry["bbox"] = [0.0, 0.0, 149.0, 119.0] if entry["image_id"] == 1 else [
                    0.0, 0.0, -1.0, 2.0]
            out.append(entry)
    out.insert(3, ["not", "an", "entry"])
    out.insert(7, {"image_id": 99, "bbox": [0, 0, 1, 1], "score": 0.5, "category_id": 1,
                   "segmentation": {"size": [3, 3], "counts": "9"}})
    return out


def test_a_file_is_checked_in_chunks_as_it_is_read_with_the_same_report(entries, tmp_path,
                                                                         monkeypatch):
    from seg_project.submission import check as check_module
    from seg_project.submission import file as file_module

    varied = _varied(entries, 13)
    whole = _check(varied)
    assert whole.errors and whole.warnings and whole.num_entries == len(varied)
    path = tmp_path / "test-results.json"
    path.write_text(" \n" + json.dumps(varied, indent=1) + "\n")  # whitespace everywhere
    monkeypatch.setattr(check_module, "_CHUNK_ENTRIES", 3)
    monkeypatch.setattr(file_module, "_READ_BYTES", 7)  # numbers cut at buffer ends
    for source in (varied, path):
        report = check_submission(source, MAPPING, NUM_CLASSES)
        assert (report.errors, report.warnings, report.entries_per_image,
                report.entries_per_class, report.bbox_format, report.bbox_format_note,
                report.num_entries) == (whole.errors, whole.warnings, whole.entries_per_image,
                                        whole.entries_per_class, whole.bbox_format,
                                        whole.bbox_format_note, whole.num_entries)
    path.write_text("[1.5, 2e3, -0, \"x\"]")
    assert check_submission(path, MAPPING, NUM_CLASSES).num_entries == 4


def test_checking_a_file_holds_one_chunk_of_entries_in_memory(entries, tmp_path, monkeypatch):
    import tracemalloc

    from seg_project.submission import check as check_module

    path = tmp_path / "test-results.json"
    noted = [dict(entry, note="n" * 1000) for entry in entries]  # as long as a large mask's RLE
    path.write_text(json.dumps(noted * 4000))  # 16,000 entries, 18 MB
    monkeypatch.setattr(check_module, "_CHUNK_ENTRIES", 500)
    peaks = []
    for work in (lambda: json.loads(path.read_bytes()),
                 lambda: check_submission(path, MAPPING, NUM_CLASSES)):
        tracemalloc.start()
        work()
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    whole, checked = peaks
    assert checked < whole / 4, (checked, whole)  # entries as Python objects: 500 at a time


@pytest.mark.parametrize("text,problem", [
    ('[{"image_id": 1}', "the list is not closed"),
    ('[{"image_id": 1} {"image_id": 2}]', "expected , or ]"),
    ('[{"image_id": 1}] [', "extra data after the list"),
    ('[{"image_id": 1,]', "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("   ", "submission file is empty"),
    ("@", "unexpected '@'"),
])
def test_broken_json_is_one_dataset_error(tmp_path, mapping_file, text, problem):
    path = tmp_path / "test-results.json"
    path.write_text(text)
    with pytest.raises(DatasetError, match=re.escape(problem)):
        check_submission(path, mapping_file, NUM_CLASSES)


def _zip(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_a_zip_with_more_than_one_json_is_an_error(tmp_path, entries, mapping_file):
    data = json.dumps(entries)
    path = _zip(tmp_path / "two.zip", {"test-results.json": data, "old/results.json": data})
    for read in (lambda p: check_submission(p, mapping_file, NUM_CLASSES), load_submission):
        with pytest.raises(DatasetError, match=r"two\.zip: zip holds 2 JSON files "
                                               r"\(test-results\.json, old/results\.json\)"):
            read(path)
    with_notes = _zip(tmp_path / "notes.zip", {"test-results.json": data, "README.txt": "hi"})
    assert check_submission(with_notes, mapping_file, NUM_CLASSES).ok


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path, mapping_file, monkeypatch):
    from seg_project.submission import file as file_module

    bomb = _zip(tmp_path / "bomb.zip", {"test-results.json": "[" + " " * 4_000_000 + "]"})
    big = _zip(tmp_path / "big.zip", {"test-results.json": json.dumps(
        [{"image_id": i} for i in range(200)])})
    (info,) = zipfile.ZipFile(bomb).infolist()
    assert info.compress_size < 40_000  # 4 MB of spaces deflate about a thousand times

    def no_inflating(*args, **kwargs):
        raise AssertionError("the member was inflated")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_inflating)
    for read in (lambda p: check_submission(p, mapping_file, NUM_CLASSES), load_submission):
        with pytest.raises(DatasetError, match=r"bomb\.zip: test-results\.json inflates "
                                               r"[\d,]+ bytes to 4,000,002, more than 100 times"):
            read(bomb)
    monkeypatch.setattr(file_module, "MAX_UNZIPPED_BYTES", 1000)
    with pytest.raises(DatasetError, match=r"declares [\d,]+ bytes uncompressed, more than "
                                           r"the limit of 1,000"):
        load_submission(big)


def test_a_zip_member_inflating_beyond_its_declared_size_is_unreadable(tmp_path, entries,
                                                                       mapping_file):
    data = json.dumps(entries).encode()
    path = _zip(tmp_path / "lying.zip", {"test-results.json": data})
    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local, central
        at = raw.index(signature) + offset
        assert int.from_bytes(raw[at:at + 4], "little") == len(data)
        raw[at:at + 4] = (10).to_bytes(4, "little")  # declares 10 bytes
    path.write_bytes(bytes(raw))
    for read in (lambda p: check_submission(p, mapping_file, NUM_CLASSES), load_submission):
        with pytest.raises(DatasetError, match=r"lying\.zip: (not a readable zip file|"
                                               r"not valid JSON)"):
            read(path)


# --------------------------------------------------------------------- RLE counts check


def _reference_counts_problem(text: str, pixels: int):
    """pycocotools' rleFrString in Python, plus the checks a valid RLE passes."""
    runs, p = [], 0
    if not text:
        return "empty"
    while p < len(text):
        value, k, more = 0, 0, True
        while more:
            if p >= len(text):
                return "truncated"
            c = ord(text[p]) - 48
            if not 0 <= c <= 63:
                return "alphabet"
            value |= (c & 0x1F) << 5 * k
            more, p, k = bool(c & 0x20), p + 1, k + 1
            if not more and c & 0x10:
                value |= -1 << 5 * k
        if k > 6:
            return "long"
        if len(runs) > 2:
            value += runs[-2]
        if not 0 <= value < 2 ** 32:
            return "run"
        runs.append(value)
    return None if sum(runs) == pixels else "sum"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode on numpy 2
def test_counts_check_agrees_with_pycocotools_format_on_mutated_strings():
    rng = np.random.default_rng(0)
    texts, pixels = [], []
    for _ in range(1500):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random((h, w)) < rng.random()
        chars = list(mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]
                     .decode("ascii"))
        for _ in range(int(rng.integers(0, 3))):
            at = int(rng.integers(0, len(chars) + 1))
            char = chr(int(rng.integers(40, 120)))
            if rng.random() < 0.5:
                chars.insert(at, char)
            elif chars:
                chars[min(at, len(chars) - 1)] = char
        texts.append("".join(chars))
        pixels.append(h * w)
    found = counts_problems(texts, pixels)
    expected = [_reference_counts_problem(t, n) for t, n in zip(texts, pixels)]
    assert sum(e is None for e in expected) > 200 and sum(e is not None for e in expected) > 200
    assert [f is None for f in found] == [e is None for e in expected]
    for text, n, problem in zip(texts, pixels, found):
        if problem is None:  # what passes decodes to a binary mask of the stated size
            rle = {"size": [1, n], "counts": text.encode("ascii")}
            assert mask_util.decode(rle).max() <= 1


# ------------------------------------------------------------------------------ writing


def test_writing_is_atomic_and_leaves_no_partial_file(tmp_path, entries, monkeypatch):
    out, archive = tmp_path / "test-results.json", tmp_path / "submission.zip"
    write_submission(entries, out, zip_path=archive)
    before = out.read_bytes(), archive.read_bytes()
    changed = [dict(e, score=0.5) for e in entries]

    def broken_writestr(self, *args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:  # fails while writing the zip, after the JSON
        patch.setattr(zipfile.ZipFile, "writestr", broken_writestr)
        with pytest.raises(OSError, match="disk full"):
            write_submission(changed, out, zip_path=archive)
    real_replace = os.replace
    calls = []

    def replace_once_then_fail(src, dst):
        calls.append(dst)
        if len(calls) > 1:
            raise OSError("interrupted")
        real_replace(src, dst)

    with monkeypatch.context() as patch:  # fails moving the second file into place
        patch.setattr(os, "replace", replace_once_then_fail)
        with pytest.raises(OSError, match="interrupted"):
            write_submission(changed, tmp_path / "other.json", zip_path=archive)
    with pytest.raises(ValueError):  # NaN is not JSON: nothing is written at all
        write_submission([dict(entries[0], score=float("nan"))], out)
    assert (out.read_bytes(), archive.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "other.json", "submission.zip", "test-results.json"]


# --------------------------------------------------------------------------------- CLI


def _tool():
    spec = importlib.util.spec_from_file_location(
        "check_submission_tool", REPO / "tools" / "check_submission.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_exit_codes(tmp_path, mapping_file, entries, capsys):
    tool = _tool()
    good = write_submission(entries, tmp_path / "good.json", zip_path=tmp_path / "good.zip")
    for path in good:
        assert tool.main([str(path), "--id-map", str(mapping_file)]) == 0
        assert "VALID" in capsys.readouterr().out
    bad = write_submission([dict(entries[0], category_id=3)], tmp_path / "bad.json")[0]
    assert tool.main([str(bad), "--id-map", str(mapping_file), "--num-classes", "2",
                      "--require-all"]) == 1
    out = capsys.readouterr().out
    assert "category_id 3 is outside 1..2" in out and "1 of 2 images have no entry" in out
    assert tool.main([str(tmp_path / "none.json"), "--id-map", str(mapping_file)]) == 2
    captured = capsys.readouterr()
    assert "none.json: submission file not found" in captured.err
    assert "Traceback" not in captured.err
    assert tool.main([str(good[0]), "--id-map", str(tmp_path / "no-ids.json")]) == 2
    assert "mapping file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        tool.main([str(good[0]), "--id-map", str(mapping_file), "--num-classes", "0"])
    assert exit_info.value.code == 2


def test_cli_runs_as_a_script(tmp_path, mapping_file, entries):
    """The one subprocess run: the file works as ``python tools/check_submission.py``."""
    path = write_submission([dict(entries[0], image_id=5)], tmp_path / "r.json")[0]
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "check_submission.py"), str(path),
         "--id-map", str(mapping_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "entry 0 (image_id 5): image_id 5 is not in the mapping file" in result.stdout


def test_max_dets_counts_per_image_and_category(entries):
    """The grader keeps the best 100 entries of each (image, category): 150 entries of one
    image split 75/75 over two classes all count; 101 of one class do not."""
    split = []
    for index in range(150):
        entry = copy.deepcopy(entries[0])
        entry["category_id"] = 1 + index % 2
        split.append(entry)
    report = _check(split)
    assert report.ok and not any("maxDets" in w for w in report.warnings)
    crowded = [copy.deepcopy(entries[0]) for _ in range(sub.COCO_MAX_DETS + 5)]
    (warning,) = [w for w in _check(crowded).warnings if "maxDets" in w]
    assert "1 (image, category) pairs in 1 images" in warning
    assert "5 entries will not count" in warning
