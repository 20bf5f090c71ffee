"""Hostile and careless input to the tools (issue 19): each case checks the exit status, the
one line printed (no traceback) and that nothing was written, or that the outputs of an
earlier run are kept unchanged (file listings with sizes and mtimes).

Prediction: every test image is read before any inference (a bad 5th image leaves no label
TIFF of the first four); a Ctrl-C ends with status 130 and keeps no new output; a full disk
names the file that could not be written. Datasets: a header declaring 40,000 x 40,000 pixels
is refused before anything is allocated. Writing: an ``OSError`` names the target file, and
staged outputs are moved into place together.
"""

import errno
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import QUICK_CONFIG, load_tool, tiny_opts
from test_bad_input import forged_tiff
from test_reliability import error_line, listing

from seg_project.utils.atomic_files import OutputStaging, write_bytes
from seg_project.utils.cli import EXIT_INTERRUPTED, run_tool

predict_tool = load_tool("predict")
dataset_stats_tool = load_tool("dataset_stats")
EXPORTS = ["--format", "coco", "geojson", "label-tiff", "course"]


def _predict_argv(synthetic_root, trained_run, images, out, *extra):
    return ["--images", str(images), *extra, "--config-file", str(QUICK_CONFIG), "--weights",
            str(trained_run / "model_final.pth"), "--out", str(out), "--score-threshold", "0",
            *tiny_opts(synthetic_root, out)]


def _refuse_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the images were checked")


@pytest.fixture
def test_folder(synthetic_root, tmp_path):
    """A copy of the synthetic test images (3), to which a test adds a bad one."""
    folder = tmp_path / "images"
    shutil.copytree(synthetic_root / "test_release", folder)
    return folder


# ------------------------------------------------------------------ checked before work


@pytest.mark.parametrize("bad,problem", [
    (np.zeros((64, 64, 5), np.uint8), "unsupported image shape (64, 64, 5)"),
    (np.zeros((64, 64, 4), np.uint8), "CMYK TIFF"),
    (None, "cannot read TIFF"),
], ids=["5-channels", "cmyk", "truncated"])
def test_a_bad_last_image_stops_predict_before_the_model_and_any_output(
        synthetic_root, trained_run, test_folder, tmp_path, capsys, monkeypatch, bad, problem):
    bad_path = test_folder / "zz_last.tif"
    if bad is None:  # a readable header, pixel data cut off
        tifffile.imwrite(bad_path, np.full((64, 64, 3), 7, np.uint8), compression="zlib")
        bad_path.write_bytes(bad_path.read_bytes()[:-40])
    else:
        tifffile.imwrite(bad_path, bad, photometric="separated" if "CMYK" in problem else None,
                         planarconfig="contig")
    monkeypatch.setattr("seg_project.inference.predictor.Predictor", _refuse_model)
    out = tmp_path / "out"
    argv = _predict_argv(synthetic_root, trained_run, test_folder, out, *EXPORTS)
    assert predict_tool.main(argv) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {bad_path}: ") and problem in line, line
    assert not out.exists()


def test_dataset_stats_refuses_a_40000_by_40000_header_before_allocating(tmp_path, capsys,
                                                                          monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", no_decoding)
    folder = tmp_path / "root" / "train" / "a"
    folder.mkdir(parents=True)
    image = forged_tiff(folder / "image.tif", 40000, 40000)
    cache = tmp_path / "cache"
    assert dataset_stats_tool.main([str(tmp_path / "root"), "--cache-dir", str(cache)]) == 2
    assert error_line(capsys.readouterr().err) == (
        f"error: {image}: declares 1,600,000,000 pixels (shape (40000, 40000, 3)), more than "
        "the limit of 268,435,456 (SEG_PROJECT_MAX_PIXELS sets it)")
    assert listing(cache) is None


# ------------------------------------------------------------------ interrupted runs


def _interrupt_after(monkeypatch, images: int):
    """Make the predictor raise KeyboardInterrupt (a Ctrl-C) after ``images`` images."""
    from seg_project.inference.predictor import Predictor

    real = Predictor.predict_files

    def interrupted(self, paths, batch_size=1):
        for done, item in enumerate(real(self, paths, batch_size)):
            if done == images:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(Predictor, "predict_files", interrupted)


def test_ctrl_c_in_predict_exits_130_and_keeps_no_new_output(synthetic_root, trained_run,
                                                             tmp_path, capsys, monkeypatch):
    images = synthetic_root / "test_release"
    out = tmp_path / "new" / "out"
    _interrupt_after(monkeypatch, 2)
    argv = _predict_argv(synthetic_root, trained_run, images, out, *EXPORTS)
    assert predict_tool.main(argv) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith(
        f"\ninterrupted: {out}: no new output was kept\n")  # after the progress bar
    assert not (tmp_path / "new").exists()  # the folders the run made are gone again


def test_ctrl_c_in_predict_keeps_the_earlier_outputs_unchanged(synthetic_root, trained_run,
                                                               tmp_path, capsys, monkeypatch):
    images = synthetic_root / "test_release"
    out = tmp_path / "out"
    argv = _predict_argv(synthetic_root, trained_run, images, out, *EXPORTS, "--zip")
    assert predict_tool.main(argv) == 0
    before = listing(out)
    assert len(before) > 3 * 4  # coco, zip, and per image geojson, 2 label TIFFs, a folder
    _interrupt_after(monkeypatch, 2)
    assert predict_tool.main(["--overwrite", *argv]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith(
        f"\ninterrupted: {out}: no new output was kept\n")
    assert listing(out) == before


# ------------------------------------------------------------------ full disk


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")  # as a failing write() raises it


@pytest.mark.parametrize("fmt", ["coco", "course"])
def test_a_full_disk_in_predict_names_the_file_being_written(synthetic_root, trained_run,
                                                             tmp_path, capsys, monkeypatch, fmt):
    images = synthetic_root / "test_release"
    first = sorted(images.glob("*.tif"))[0]
    out = tmp_path / "out"
    if fmt == "coco":
        monkeypatch.setattr(Path, "write_bytes", _no_space)
        target = out / "test-results.json"
    else:
        def copy_no_space(source, destination, **kwargs):  # as shutil's sendfile copy says it
            raise OSError(errno.ENOSPC, "No space left on device", str(source), None,
                          str(destination))

        monkeypatch.setattr(shutil, "copyfile", copy_no_space)
        target = out / "course" / first.stem / "image.tif"
    argv = _predict_argv(synthetic_root, trained_run, images, out, "--format", fmt)
    assert predict_tool.main(argv) == 2
    assert error_line(capsys.readouterr().err) == f"error: {target}: No space left on device"
    assert not out.exists()


def test_a_failed_write_names_its_target_not_the_temporary_file(tmp_path, capsys,
                                                                monkeypatch):
    target = tmp_path / "sub" / "table.csv"

    def fail_on_temp(self, data):
        raise OSError(errno.EACCES, "Permission denied", str(self))  # names the temporary file

    monkeypatch.setattr(Path, "write_bytes", fail_on_temp)
    assert run_tool(lambda argv: write_bytes(target, b"x"), []) == 2
    assert error_line(capsys.readouterr().err) == f"error: {target}: Permission denied"
    assert os.listdir(tmp_path / "sub") == []  # no temporary file left
    source = tmp_path / "missing.tif"
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: shutil.copyfile(source, self))
    with pytest.raises(FileNotFoundError) as info:  # a source that cannot be read stays named
        write_bytes(target, b"x")
    assert info.value.filename == str(source)


# ------------------------------------------------------------------ staged outputs


def test_staged_outputs_are_moved_together_and_a_ctrl_c_waits_for_the_last(tmp_path,
                                                                          monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.json").write_text("old")
    os.chmod(out / "b.json", 0o640)
    real_replace = os.replace
    moved = []

    def replace_then_ctrl_c(source, target):
        if not moved:
            os.kill(os.getpid(), signal.SIGINT)  # pressed while the first file is moved
        real_replace(source, target)
        moved.append(Path(target).name)

    with pytest.raises(KeyboardInterrupt):
        with OutputStaging(out) as staging:
            for name in ("a.json", "b.json", "c/d.json"):
                write_bytes(staging.folder / name, name.encode())
            (out / "stale.json").write_text("stale")
            monkeypatch.setattr(os, "replace", replace_then_ctrl_c)
            staging.commit(remove=[out / "stale.json"])
    assert staging.committed and moved == ["a.json", "b.json", "d.json"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "a.json", "b.json", "c", "c/d.json"]
    assert (out / "b.json").read_text() == "b.json"
    assert (out / "b.json").stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode


def test_staged_outputs_leave_nothing_without_a_commit(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError):
        with OutputStaging(out) as staging:
            write_bytes(staging.folder / "x.json", b"x")
            raise RuntimeError("failed before the end")
    assert not (tmp_path / "a").exists()
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "old.json").write_text(json.dumps([]))
    before = listing(tmp_path / "keep")
    with OutputStaging(tmp_path / "keep") as staging:
        write_bytes(staging.folder / "old.json", b"new")
    assert listing(tmp_path / "keep") == before
