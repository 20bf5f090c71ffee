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
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import QUICK_CONFIG, REPO, load_tool, tiny_opts, train_args
from test_bad_input import forged_tiff
from test_reliability import error_line, listing

from seg_project.utils.atomic_files import OutputStaging, write_bytes
from seg_project.utils.cli import EXIT_INTERRUPTED, run_tool
from seg_project.utils.run_files import LOCK_FILE

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


@pytest.fixture
def ctrl_c_raises():
    """Python's own Ctrl-C handler for the test: a process started in the background by a
    non-interactive shell (``cmd &``) begins with SIGINT ignored, and Python then keeps it so."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_staged_outputs_are_moved_together_and_a_ctrl_c_waits_for_the_last(tmp_path,
                                                                          monkeypatch,
                                                                          ctrl_c_raises):
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.json").write_text("old")
    os.chmod(out / "b.json", 0o640)
    real_replace = os.replace
    moved = []

    def replace_then_ctrl_c(source, target):
        if not moved:
            # pressed while the first file is moved; raised in this thread (os.kill may hand
            # it to another of the process's threads, whose handler then runs later)
            signal.raise_signal(signal.SIGINT)
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


# ------------------------------------------------------------------ evaluate.py

evaluate_tool = load_tool("evaluate")
train_net = load_tool("train_net")


def _val_results(trained_run) -> list:
    """The training run's predictions on cells_val (valid COCO result entries)."""
    path = trained_run / "inference" / "cells_val" / "coco_instances_results.json"
    entries = json.loads(path.read_text())
    assert entries
    return entries


def _evaluate(synthetic_root, results, *extra) -> int:
    return evaluate_tool.main([str(results), "--gt", str(synthetic_root / "train"), *extra])


@pytest.mark.parametrize("case", ["missing", "mask-size", "score-low", "score-high",
                                  "unknown-image", "not-json"])
def test_evaluate_refuses_a_bad_results_file_with_one_line(synthetic_root, trained_run,
                                                           tmp_path, capsys, case):
    entries = _val_results(trained_run)
    first = entries[0]
    height, width = first["segmentation"]["size"]
    where = f"entry 0 (image_id {first['image_id']})"
    source = f"the ground truth ({synthetic_root / 'train'})"
    results = tmp_path / "results.json"
    problem = {
        "missing": "file not found",
        "mask-size": (f"{where}: segmentation size [{height + 1}, {width}] differs from the "
                      f"image's size [{height}, {width}] in {source}"),
        "score-low": f"{where}: score -0.5 is outside [0, 1]",
        "score-high": f"{where}: score 7.5 is outside [0, 1]",
        "unknown-image": f"entry 0 (image_id 123456789): image_id 123456789 is not in {source}",
        "not-json": "not valid JSON: the list is not closed (truncated?)",
    }[case]
    if case == "mask-size":
        first["segmentation"]["size"] = [height + 1, width]
    elif case.startswith("score"):
        first["score"] = -0.5 if case == "score-low" else 7.5
    elif case == "unknown-image":
        first["image_id"] = 123456789
    if case == "not-json":
        results.write_text(json.dumps(entries)[:-1])
    elif case != "missing":
        results.write_text(json.dumps(entries))
    before = listing(tmp_path)
    assert _evaluate(synthetic_root, results) == 2
    assert error_line(capsys.readouterr().err) == f"error: {results}: {problem}"
    assert listing(tmp_path) == before


def test_evaluate_reads_only_the_entries_a_figure_counts_with_the_same_coco_numbers(
        synthetic_root, trained_run, tmp_path, capsys):
    """Entries beyond the best max(high cap, 100) of an image and class never count in COCO
    AP: read one at a time, they are left out (memory stays bounded) and every COCO figure
    equals the one computed on all of them."""
    from seg_project.evaluation.predictions import evaluate_predictions
    from seg_project.evaluation.results_file import ground_truth, read_best_entries

    entries = _val_results(trained_run)
    pair = (entries[0]["image_id"], entries[0]["category_id"])
    in_pair = sum((e["image_id"], e["category_id"]) == pair for e in entries)
    extra = 150  # as many as 100 + 50 beyond the cap, at the lowest score (ties among them)
    entries += [dict(entries[0], score=0.0) for _ in range(extra)]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(entries))
    left_out = in_pair + extra - 100
    kept, dropped = read_best_entries(results, 100)
    assert 0 < in_pair < 100 and all(e["score"] > 0 for e in entries[:-extra])
    # the model's entries are kept; of the equal scores, the earliest (as COCOeval ranks them)
    assert dropped == left_out and kept == entries[:len(entries) - left_out]
    assert _evaluate(synthetic_root, results, "--json", "--high-cap", "100",
                     "--pathology-threshold", "0.5") == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["input"]["entries"] == len(entries)
    assert metrics["input"]["left_out"] == left_out
    coco_gt, names = ground_truth(synthetic_root / "train", [f"class{k}" for k in range(1, 5)])
    full = evaluate_predictions(coco_gt, entries, names, high_cap=100, pathology_threshold=None)
    for task in ("segm", "bbox"):
        for key, value in full[task].items():
            assert metrics[task][key] == (None if value != value else pytest.approx(value)), key


# ------------------------------------------------------------------ concurrent runs


@pytest.fixture
def lock_holder(tmp_path):
    """Start a process that holds a folder's run lock until the test ends; returns a
    function of the folder giving the process."""
    held = []

    def hold(folder: Path) -> subprocess.Popen:
        code = ("import sys\n"
                "from seg_project.utils.run_lock import run_folder_lock\n"
                f"with run_folder_lock({str(folder)!r}):\n"
                "    print('held', flush=True)\n"
                "    sys.stdin.read()\n")
        process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
        held.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in held:
        process.communicate("", timeout=30)


def _run_copy(trained_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


def test_a_second_run_into_a_used_folder_is_refused_and_changes_nothing(
        synthetic_root, trained_run, tmp_path, capsys, lock_holder):
    run = _run_copy(trained_run, tmp_path)
    planted = run / ".model_0000001.pth.planted.tmp"  # --resume would delete it, unlocked
    planted.write_bytes(b"the other run's checkpoint, being written")
    holder = lock_holder(run)
    before = listing(run)
    owner = json.loads((run / LOCK_FILE).read_text())
    for extra in ([], ["--resume"], ["--eval-only", "MODEL.WEIGHTS",
                                     str(trained_run / "model_final.pth")]):
        assert train_net.command(train_args(synthetic_root, run, *extra, epochs=3)) == 2
        assert error_line(capsys.readouterr().err) == (
            f"error: {run}: another run is using this run folder (pid {holder.pid} on host "
            f"{socket.gethostname()}, started {owner['started']}): wait for it to end, or "
            "choose another OUTPUT_DIR")
        assert listing(run) == before


def test_a_stale_lock_is_taken_over_with_a_note_and_the_lock_is_released(
        synthetic_root, trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead = {"pid": int(finished.stdout), "host": socket.gethostname(),
            "started": "2020-01-01 00:00:00"}
    (run / LOCK_FILE).write_text(json.dumps(dead))
    assert train_net.command(train_args(synthetic_root, run, "--eval-only", "MODEL.WEIGHTS",
                                        str(trained_run / "model_final.pth"))) == 0
    capsys.readouterr()
    assert (f"Took over {run / LOCK_FILE}: its run (pid {dead['pid']} on host "
            f"{dead['host']}, started {dead['started']}) is no longer running"
            ) in (run / "log.txt").read_text()
    assert not (run / LOCK_FILE).exists()


def test_a_lock_of_another_host_is_not_taken_over(synthetic_root, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere",
                                             "started": "2020-01-01 00:00:00"}))
    before = listing(run)
    assert train_net.command(train_args(synthetic_root, run)) == 2
    assert error_line(capsys.readouterr().err) == (
        f"error: {run}: another run is using this run folder (pid 1 on host elsewhere, "
        f"started 2020-01-01 00:00:00) (on another host: if that run is gone, delete "
        f"{run / LOCK_FILE}): wait for it to end, or choose another OUTPUT_DIR")
    assert listing(run) == before


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError("a bug")],
                         ids=["ctrl-c", "error"])
def test_the_lock_is_released_when_a_run_stops(synthetic_root, trained_run, tmp_path,
                                               capsys, monkeypatch, stop):
    run = tmp_path / "run"
    seen = []

    def stopped(cfg, *args, **kwargs):
        seen.append((run / LOCK_FILE).is_file())
        raise stop

    monkeypatch.setattr("seg_project.engine.evaluate_weights", stopped)
    argv = train_args(synthetic_root, run, "--eval-only", "MODEL.WEIGHTS",
                      str(trained_run / "model_final.pth"))
    if isinstance(stop, RuntimeError):
        with pytest.raises(RuntimeError, match="a bug"):  # a bug keeps its traceback
            train_net.command(argv)
    else:
        assert train_net.command(argv) == EXIT_INTERRUPTED
    capsys.readouterr()
    assert seen == [True] and not (run / LOCK_FILE).exists()


# ------------------------------------------------------------------ full disk in training


class _FullFile:
    """A file on a full disk: every write fails as the OS says it (no file named)."""

    def __init__(self, name: str = ""):
        self.name = name

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass


@pytest.mark.parametrize("target", ["metrics.json", "log.txt", "checkpoint"])
def test_a_full_disk_in_training_is_one_line_naming_the_file(
        synthetic_root, tmp_path, capsys, monkeypatch, target):
    run = tmp_path / "run"
    if target == "metrics.json":
        from detectron2.utils.events import JSONWriter

        monkeypatch.setattr(JSONWriter, "write", _no_space)
        named = run / "metrics.json"
    elif target == "log.txt":
        import detectron2.utils.logger as d2_logger

        monkeypatch.setattr(d2_logger, "_cached_log_stream", _FullFile)
        named = run / "log.txt"
    else:
        import seg_project.checkpoint.checkpointer as checkpointer

        monkeypatch.setattr(checkpointer, "open", lambda path, mode: _FullFile(path),
                            raising=False)
        named = run / "model_final.pth"
    code = train_net.command(train_args(synthetic_root, run, epochs=1,
                                        **{"TEST.EVAL_PERIOD": 0, "DATASETS.TEST": "()"}))
    captured = capsys.readouterr()
    assert code == 2
    assert error_line(captured.err) == f"error: {named}: No space left on device"
    assert "Traceback" not in captured.out
    assert not list(run.glob("*.pth")) and not list(run.glob(".*.tmp"))
    assert not (run / LOCK_FILE).exists()
