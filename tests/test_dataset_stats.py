"""tools/dataset_stats.py: exact figures on CoNSeP, the table, and clean failures."""

import contextlib
import importlib.util
import io
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[1]
CONSEP = Path(__file__).resolve().parents[2] / "shared" / "data" / "consep"
TRAIN_COUNTS = {"class1": 371, "class2": 3941, "class3": 5537, "class4": 5706}
TEST_COUNTS = {"class1": 561, "class2": 1638, "class3": 3214, "class4": 3364}


def _load_tool():
    spec = importlib.util.spec_from_file_location("dataset_stats_tool",
                                                  REPO / "tools" / "dataset_stats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(scope="module")
def consep_json(tmp_path_factory):
    """The tool's --json output for CoNSeP train/ and test/, its exit code and its cache
    (capsys is per test; the conversion is done once)."""
    if not CONSEP.is_dir():
        pytest.skip(f"CoNSeP data not found at {CONSEP}")
    cache = tmp_path_factory.mktemp("cache")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = tool.main([str(CONSEP), "--split", "test", "--json", "--cache-dir", str(cache)])
    return code, json.loads(out.getvalue()), cache


def test_json_has_the_exact_consep_counts(consep_json):
    code, stats, _ = consep_json
    assert code == 0
    assert stats["images"] == 27 and stats["split"] == "train"
    assert stats["instances_per_class"] == TRAIN_COUNTS
    assert stats["instances"] == sum(TRAIN_COUNTS.values())
    assert stats["instances_per_image"] == {"min": 20, "median": 647.0, "max": 2283}
    assert stats["image_size"] == {"height": {"min": 1000, "max": 1000},
                                   "width": {"min": 1000, "max": 1000}}
    assert stats["empty_images"] == []
    areas = stats["instance_area_per_class"]
    assert set(areas) == set(TRAIN_COUNTS)
    assert all(a["min"] <= a["median"] <= a["max"] for a in areas.values())
    assert min(a["min"] for a in areas.values()) <= 3  # the 2-3 pixel specks are counted


def test_json_reports_every_split_under_splits(consep_json):
    _, stats, _ = consep_json
    assert list(stats["splits"]) == ["train", "test"]
    assert stats["splits"]["test"]["images"] == 14
    assert stats["splits"]["test"]["instances_per_class"] == TEST_COUNTS
    train = dict(stats["splits"]["train"])
    assert train.pop("folder") == str((CONSEP / "train").resolve())
    assert {k: stats[k] for k in train} == train  # top level == the train split


def test_table_from_the_warm_cache(consep_json, capsys):
    _, _, cache = consep_json
    assert tool.main([str(CONSEP), "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "| images" in out and "27" in out
    for name, count in TRAIN_COUNTS.items():
        line = next(row for row in out.splitlines() if row.startswith(f"| {name} instances"))
        assert f" {count} (" in line
    assert "test" not in out.splitlines()[2]  # only train/ was asked for


def test_table_lists_images_without_instances(tmp_path, capsys):
    train = tmp_path / "root" / "train"
    for name, mask in [("blank", np.zeros((8, 9), np.uint8)), ("cells", np.eye(8, 9, k=0))]:
        (train / name).mkdir(parents=True)
        tifffile.imwrite(train / name / "image.tif", np.zeros((8, 9), np.uint8))
        tifffile.imwrite(train / name / "class2.tif", mask.astype(np.uint8))
    assert tool.main([str(tmp_path / "root"), "--num-classes", "2", "--cache-dir", "off"]) == 0
    out = capsys.readouterr().out
    assert "train: images without instances: blank" in out
    assert "class3" not in out
    assert tool.main([str(tmp_path / "root"), "--num-classes", "2", "--json",
                      "--cache-dir", "off"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["empty_images"] == ["blank"]
    assert stats["instances_per_class"] == {"class1": 0, "class2": 1}
    assert stats["instance_area_per_class"]["class1"] is None


@pytest.mark.parametrize("where,words", [
    ("missing-root", ["dataset root not found"]),
    ("no-train", ["train", "dataset folder not found"]),
    ("corrupt-mask", ["class1.tif", "cannot read TIFF"]),
])
def test_bad_root_fails_cleanly_with_code_2(tmp_path, capsys, where, words):
    root = tmp_path / "root"
    if where != "missing-root":
        root.mkdir()
    if where == "corrupt-mask":
        (root / "train" / "a").mkdir(parents=True)
        tifffile.imwrite(root / "train" / "a" / "image.tif", np.zeros((4, 4), np.uint8))
        (root / "train" / "a" / "class1.tif").write_bytes(b"not a tiff at all")
    assert tool.main([str(root), "--cache-dir", "off"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    last = captured.err.splitlines()[-1]  # after the progress bar, if any
    assert last.startswith(f"error: {root}") and "Traceback" not in captured.err
    for word in words:
        assert word in last


def test_script_exit_code(tmp_path, monkeypatch, capsys):
    """Run as ``__main__`` (in-process): the exit code reaches the shell."""
    missing = tmp_path / "missing"
    monkeypatch.setattr(sys, "argv", ["dataset_stats.py", str(missing)])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / "tools" / "dataset_stats.py"), run_name="__main__")
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: {missing}: dataset root not found " \
                                      "(expected a folder holding train/)\n"
