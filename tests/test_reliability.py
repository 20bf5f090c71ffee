"""Bad input stops every tool early, as one line, with nothing written.

Each case checks the exit status (2), the message (``error: <file or key>: <problem>``, no
traceback) and that the run or output folder was not created or changed (file listings with
sizes and mtimes). Also: the error style itself (``SEG_PROJECT_DEBUG``, ``--debug``,
unexpected errors), CPU AMP's choice of precision, and the detection-cap report.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import QUICK_CONFIG, REPO, load_tool, tiny_opts, train_args

from seg_project.data.catalog import register_cells_splits, split_train_val
from seg_project.engine import mixed_precision
from seg_project.inference.capacity import count_capped, detection_cap_message, most_capped
from seg_project.utils.cli import config_error, run_tool
from seg_project.utils.errors import ConfigError, DatasetError, WeightsError

train_net = load_tool("train_net")
predict_tool = load_tool("predict")
visualize_tool = load_tool("visualize")

ASKS = ("a 4-class model (MODEL.ROI_HEADS.NUM_CLASSES 4; DATASETS.CELLS.CLASS_NAMES class1, "
        "class2, class3, class4)")


# ------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True)
def _default_registration():
    """Runs here register the cells_* datasets for other roots; put the default back."""
    yield
    register_cells_splits()


def listing(folder: Path):
    """Every file under ``folder`` with its size and mtime (None if the folder is missing)."""
    folder = Path(folder)
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def error_line(err: str) -> str:
    """The one ``error:`` line of a tool's stderr (asserting there is exactly one and no
    traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def train(capsys, argv):
    """tools/train_net.py in this process: (exit status, the error line or "", stdout)."""
    code = train_net.command([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, (error_line(captured.err) if code == 2 else ""), captured.out


def clone_run(src: Path, dst: Path, skip=()) -> Path:
    """A copy of a run folder; checkpoints are hard links (never written in place: saves
    rename a new file over them), everything else is copied."""
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if path.name in skip or path.is_dir():
            continue
        if path.suffix == ".pth":
            try:
                os.link(path, dst / path.name)
                continue
            except OSError:
                pass
        shutil.copy2(path, dst / path.name)
    return dst


def replace_bytes(path: Path, data: bytes) -> None:
    """Give ``path`` new content without touching a file it may be hard-linked to."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def val_names(root: Path) -> list:
    return split_train_val(root / "train", 0.34, 0)["val"]


@pytest.fixture
def bad_val_root(synthetic_root, tmp_path) -> tuple:
    """A copy of the synthetic dataset whose first validation folder has a mask with a
    negative id; returns (root, the bad mask)."""
    root = tmp_path / "cells"
    shutil.copytree(synthetic_root, root)
    mask_path = root / "train" / val_names(root)[0] / "class1.tif"
    shape = tifffile.imread(mask_path).shape
    mask = np.zeros(shape, np.int32)
    mask[2:5, 2:5] = 1
    mask[0, 0] = -1
    mask_path.unlink()
    tifffile.imwrite(mask_path, mask)
    return root, mask_path


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """An existing run folder with a file in it (so that "nothing changed" is checkable)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("an earlier file\n")
    return out


def _sliced(state: dict, classes: int) -> dict:
    """A 4-class model's state with predictors cut down to ``classes`` classes."""
    out = dict(state)
    cls, bbox = "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred"
    mask = "roi_heads.mask_head.predictor"
    for suffix in ("weight", "bias"):
        out[f"{cls}.{suffix}"] = state[f"{cls}.{suffix}"][:classes + 1].clone()
        out[f"{bbox}.{suffix}"] = state[f"{bbox}.{suffix}"][:4 * classes].clone()
        out[f"{mask}.{suffix}"] = state[f"{mask}.{suffix}"][:classes].clone()
    return out


@pytest.fixture(scope="module")
def other_weights(trained_run, tmp_path_factory) -> dict:
    """Weights files that do not fit the 4-class config: a 2-class model, and the 4-class
    model without its mask predictor."""
    folder = tmp_path_factory.mktemp("other_weights")
    state = torch.load(trained_run / "model_final.pth", map_location="cpu",
                       weights_only=True)["model"]
    two = folder / "model_2class.pth"
    torch.save({"model": _sliced(state, 2)}, two)
    no_mask = folder / "model_no_mask_predictor.pth"
    torch.save({"model": {k: v for k, v in state.items()
                          if not k.startswith("roi_heads.mask_head.predictor")}}, no_mask)
    return {"2-class": two, "no-mask": no_mask}


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    replace_bytes(path, data[:len(data) // 2])


def _random(path: Path) -> None:
    replace_bytes(path, np.random.default_rng(0).bytes(5000))


def _empty(path: Path) -> None:
    replace_bytes(path, b"")


def _text(path: Path) -> None:
    replace_bytes(path, b"MODEL:\n  WEIGHTS: not a checkpoint\n")


DAMAGES = {"truncated": _truncated, "random-bytes": _random, "empty": _empty, "text": _text}
UNREADABLE = "cannot be read as a weights file (corrupt, truncated or not a checkpoint): "
DAMAGE_WORDS = {
    "truncated": UNREADABLE + "PytorchStreamReader failed reading zip archive: failed finding "
                              "central directory",
    "random-bytes": UNREADABLE + "neither a PyTorch checkpoint (zip archive) nor a pickle",
    "empty": "is empty (0 bytes): not a weights file",
    "text": UNREADABLE + "neither a PyTorch checkpoint (zip archive) nor a pickle",
}


@pytest.fixture
def broken_weights(trained_run, tmp_path, request) -> Path:
    path = tmp_path / "weights" / "model_final.pth"
    path.parent.mkdir()
    shutil.copy2(trained_run / "model_final.pth", path)
    DAMAGES[request.param](path)
    return path


# ------------------------------------------------------------------ 1. data checked first
def test_bad_validation_mask_stops_training_before_any_output(bad_val_root, run_dir, capsys):
    root, mask = bad_val_root
    before = listing(run_dir)
    code, error, _ = train(capsys, train_args(root, run_dir))
    assert code == 2
    assert error.startswith(f"error: {mask}: mask holds negative values")
    assert listing(run_dir) == before  # no config.yaml, log.txt, metrics.json, events, split


def test_bad_validation_mask_in_a_new_run_folder_creates_nothing(bad_val_root, tmp_path,
                                                                 capsys):
    root, mask = bad_val_root
    out = tmp_path / "new_run"
    code, error, _ = train(capsys, train_args(root, out))
    assert code == 2 and str(mask) in error
    assert not out.exists()


def test_eval_only_checks_the_test_data_before_the_weights(bad_val_root, tmp_path, capsys):
    root, mask = bad_val_root
    out = tmp_path / "eval"
    # The weights file does not exist either: the data error comes first (the model and its
    # weights are never loaded).
    code, error, _ = train(capsys, train_args(root, out, "--eval-only", **{
        "MODEL.WEIGHTS": tmp_path / "missing.pth"}))
    assert code == 2 and error.startswith(f"error: {mask}: mask holds negative values")
    assert not out.exists()


def test_empty_train_folder_is_named(tmp_path, capsys):
    root = tmp_path / "cells"
    (root / "train").mkdir(parents=True)
    out = tmp_path / "run"
    code, error, _ = train(capsys, train_args(root, out))
    assert code == 2
    assert error.startswith(f"error: {root / 'train'}: holds no image folders")
    assert "validation" not in error
    assert not out.exists()


def test_unregistered_dataset_is_a_config_error(synthetic_root, tmp_path, capsys):
    out = tmp_path / "run"
    code, error, _ = train(capsys, train_args(synthetic_root, out, **{
        "DATASETS.TEST": "('cells_vall',)"}))
    assert code == 2
    assert error.startswith("error: DATASETS.TEST: dataset 'cells_vall' is not registered")
    assert not out.exists()


# ------------------------------------------------------------------ 5. config keys and values
@pytest.mark.parametrize("override,expected", [
    (["SOLVER.EPOCS", "3"], "error: SOLVER.EPOCS: no such config key (did you mean "
                            "SOLVER.EPOCHS?)"),
    (["SOLVER.EPOCHS", "abc"], "error: SOLVER.EPOCHS: expects a value of int (like 16), got abc"),
    (["SOLVER.AMP.CPU_DTYPE", "bf16"], "error: SOLVER.AMP.CPU_DTYPE: must be one of auto, "
                                       "bfloat16, float32, got 'bf16'"),
    (["DATASETS.CELLS.CLASS_NAMES", "('a', 'b')"], "error: DATASETS.CELLS.CLASS_NAMES: has 2 "
                                                   "names but MODEL.ROI_HEADS.NUM_CLASSES is 4"),
    (["SOLVER.EPOCHS"], "error: KEY VALUE overrides: must come in pairs, got an odd number"),
], ids=["misspelled-key", "wrong-type", "bad-amp-dtype", "class-names", "odd-overrides"])
def test_bad_config_override(synthetic_root, run_dir, capsys, override, expected):
    before = listing(run_dir)
    argv = ["--config-file", QUICK_CONFIG, "OUTPUT_DIR", run_dir,
            "DATASETS.CELLS.ROOT", synthetic_root, *override]
    code, error, _ = train(capsys, argv)
    assert code == 2 and error.startswith(expected), error
    assert listing(run_dir) == before


def test_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    code, error, _ = train(capsys, ["--config-file", missing])
    assert code == 2 and error == f"error: {missing}: config file not found"


def test_misspelled_key_in_the_config_file(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(f'_BASE_: "{QUICK_CONFIG}"\nSOLVER:\n  EPOCS: 3\n')
    code, error, _ = train(capsys, ["--config-file", config])
    assert code == 2
    assert error.startswith(f"error: {config}: SOLVER.EPOCS: no such config key")


def test_output_dir_that_is_a_file(synthetic_root, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("a file, not a folder\n")
    before = out.stat().st_mtime_ns
    code, error, _ = train(capsys, train_args(synthetic_root, out))
    assert code == 2
    assert error == (f"error: OUTPUT_DIR: {out}: the run folder is an existing file, not a "
                     "folder")
    assert out.read_text() == "a file, not a folder\n" and out.stat().st_mtime_ns == before


def test_several_processes_check_in_the_parent_before_starting_workers(synthetic_root,
                                                                       tmp_path, capsys,
                                                                       monkeypatch):
    def no_launch(*args, **kwargs):
        raise AssertionError("workers were started")

    monkeypatch.setattr("detectron2.engine.launch", no_launch)
    out = tmp_path / "run"
    code, error, _ = train(capsys, ["--num-gpus", "2", *train_args(synthetic_root, out),
                                    "SOLVER.EPOCS", "3"])
    assert code == 2 and error.startswith("error: SOLVER.EPOCS: no such config key")
    assert not out.exists()


def test_worker_process_exits_2_with_one_line(capsys):
    """What a spawned worker does with an expected error (the parent then exits 2)."""
    class Args:
        debug = False
        config_file = "/nonexistent/config.yaml"
        opts = []
        eval_only = resume = False

    with pytest.raises(SystemExit) as info:
        train_net._worker(Args())
    assert info.value.code == 2
    assert error_line(capsys.readouterr().err) == ("error: /nonexistent/config.yaml: config "
                                                   "file not found")

    class Exited(Exception):
        exit_code = 2

    Exited.__name__ = "ProcessExitedException"

    def spawned_worker_failed(argv):
        raise Exited("process 0 terminated with exit code 2")

    assert run_tool(spawned_worker_failed, []) == 2


# ------------------------------------------------------------------ 3. weights that do not fit
def test_eval_only_refuses_weights_of_another_class_count(synthetic_root, other_weights,
                                                          run_dir, capsys):
    weights = other_weights["2-class"]
    before = listing(run_dir)
    code, error, _ = train(capsys, train_args(synthetic_root, run_dir, "--eval-only", **{
        "MODEL.WEIGHTS": weights}))
    assert code == 2
    assert error.startswith(f"error: {weights}: holds a 2-class model, but the config asks "
                            f"for {ASKS}: roi_heads.box_predictor.cls_score has 3 outputs, "
                            "the model needs 5")
    assert "roi_heads.mask_head.predictor has 2 outputs, the model needs 4" in error
    assert listing(run_dir) == before


def test_eval_only_refuses_weights_without_a_mask_predictor(synthetic_root, other_weights,
                                                            tmp_path, capsys):
    weights = other_weights["no-mask"]
    out = tmp_path / "run"
    code, error, _ = train(capsys, train_args(synthetic_root, out, "--eval-only", **{
        "MODEL.WEIGHTS": weights}))
    assert code == 2
    assert error.startswith(f"error: {weights}: does not fit the config's model, {ASKS}: "
                            "roi_heads.mask_head.predictor is missing. Use the config")
    assert not out.exists()


def test_predict_refuses_weights_of_another_class_count(synthetic_root, other_weights,
                                                        tmp_path, capsys):
    weights, out = other_weights["2-class"], tmp_path / "submission"
    argv = ["--config-file", str(QUICK_CONFIG), "--weights", str(weights), "--images",
            str(synthetic_root / "test_release"), "--out", str(out),
            *tiny_opts(synthetic_root, out)]
    assert predict_tool.main(argv) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith(f"error: {weights}: holds a 2-class model, but the config asks "
                            f"for {ASKS}")
    assert not out.exists()


def test_visualize_refuses_weights_of_another_class_count(synthetic_root, other_weights,
                                                          tmp_path, capsys):
    weights, out = other_weights["2-class"], tmp_path / "pictures"
    argv = ["--config-file", str(QUICK_CONFIG), "--weights", str(weights), "--images",
            str(synthetic_root / "test_release"), "--out", str(out),
            "DATASETS.CELLS.ROOT", str(synthetic_root)]
    assert visualize_tool.main(argv) == 2
    error = error_line(capsys.readouterr().err)
    assert error.startswith(f"error: {weights}: holds a 2-class model")
    assert not out.exists()


def test_training_from_another_tasks_weights_lists_the_fresh_layers(other_weights):
    import logging

    from detectron2.modeling import build_model

    from seg_project.checkpoint import CellsCheckpointer
    from seg_project.config import load_config

    cfg = load_config(QUICK_CONFIG)
    model = build_model(cfg)
    fresh_cls = model.roi_heads.box_predictor.cls_score.weight.detach().clone()
    checkpointer = CellsCheckpointer(model)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    level = checkpointer.logger.level
    checkpointer.logger.addHandler(handler)
    checkpointer.logger.setLevel(logging.INFO)
    try:
        checkpointer.load(str(other_weights["2-class"]))
    finally:
        checkpointer.logger.removeHandler(handler)
        checkpointer.logger.setLevel(level)
    lines = [r.getMessage() for r in records if "start fresh" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in records]
    assert lines[0] == (
        f"Layers that start fresh, not loaded from {other_weights['2-class']}: "
        "roi_heads.box_predictor.cls_score (3 outputs in the file, 5 here); "
        "roi_heads.box_predictor.bbox_pred (8 outputs in the file, 16 here); "
        "roi_heads.mask_head.predictor (2 outputs in the file, 4 here)")
    assert not [r for r in records if "Skip loading parameter" in r.getMessage()]
    assert torch.equal(model.roi_heads.box_predictor.cls_score.weight, fresh_cls)
    saved = torch.load(other_weights["2-class"], weights_only=True)["model"]
    assert torch.equal(model.backbone.bottom_up.stem.conv1.weight,
                       saved["backbone.bottom_up.stem.conv1.weight"])
    # The same file for inference: refused.
    with pytest.raises(WeightsError, match="holds a 2-class model"):
        CellsCheckpointer(build_model(cfg)).load_for_inference(str(other_weights["2-class"]))


# ------------------------------------------------------------------ 4. unreadable weights
@pytest.mark.parametrize("broken_weights", list(DAMAGES), indirect=True)
def test_eval_only_with_unreadable_weights(synthetic_root, broken_weights, tmp_path, capsys,
                                           request):
    out = tmp_path / "run"
    code, error, _ = train(capsys, train_args(synthetic_root, out, "--eval-only", **{
        "MODEL.WEIGHTS": broken_weights}))
    damage = request.node.callspec.params["broken_weights"]
    assert code == 2
    assert error == f"error: {broken_weights}: {DAMAGE_WORDS[damage]}"
    assert not out.exists()


@pytest.mark.parametrize("broken_weights", ["truncated"], indirect=True)
def test_training_from_unreadable_weights_writes_nothing(synthetic_root, broken_weights,
                                                         run_dir, capsys):
    before = listing(run_dir)
    code, error, _ = train(capsys, train_args(synthetic_root, run_dir, **{
        "MODEL.WEIGHTS": broken_weights}))
    assert code == 2
    assert error.startswith(f"error: {broken_weights}: cannot be read as a weights file "
                            "(corrupt, truncated or not a checkpoint)")
    assert listing(run_dir) == before


@pytest.mark.parametrize("broken_weights", ["truncated"], indirect=True)
def test_predict_with_unreadable_weights(synthetic_root, broken_weights, tmp_path, capsys):
    out = tmp_path / "submission"
    argv = ["--config-file", str(QUICK_CONFIG), "--weights", str(broken_weights), "--images",
            str(synthetic_root / "test_release"), "--out", str(out),
            *tiny_opts(synthetic_root, out)]
    assert predict_tool.main(argv) == 2
    assert error_line(capsys.readouterr().err).startswith(
        f"error: {broken_weights}: cannot be read as a weights file")
    assert not out.exists()


def test_missing_weights_for_training(synthetic_root, run_dir, tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    before = listing(run_dir)
    code, error, _ = train(capsys, train_args(synthetic_root, run_dir, **{
        "MODEL.WEIGHTS": missing}))
    assert code == 2 and error == f"error: {missing}: MODEL.WEIGHTS file not found"
    assert listing(run_dir) == before


def test_resume_from_a_truncated_checkpoint_names_it_and_the_older_one(
        synthetic_root, trained_run, tmp_path, capsys):
    run = clone_run(trained_run, tmp_path / "run", skip=("model_best.pth",))
    _truncated(run / "model_final.pth")
    before = listing(run)
    code, error, _ = train(capsys, train_args(synthetic_root, run, "--resume"))
    assert code == 2
    assert error.startswith(f"error: {run / 'model_final.pth'}: cannot be read as a weights "
                            "file (corrupt, truncated or not a checkpoint)")
    assert "--resume cannot continue from it" in error
    older = run / "model_0000001.pth"
    assert f"The older checkpoint {older} is complete: delete {run / 'model_final.pth'}" in error
    assert f"MODEL.WEIGHTS {older}" in error
    assert listing(run) == before  # no config.yaml, cells_split.json, log or events written


def test_resume_from_a_broken_checkpoint_without_an_older_one(synthetic_root, trained_run,
                                                              tmp_path, capsys):
    run = clone_run(trained_run, tmp_path / "run",
                    skip=("model_best.pth", "model_0000001.pth"))
    _random(run / "model_final.pth")
    before = listing(run)
    code, error, _ = train(capsys, train_args(synthetic_root, run, "--resume"))
    assert code == 2 and error.startswith(f"error: {run / 'model_final.pth'}: ")
    assert "No older complete checkpoint" in error
    assert listing(run) == before


def test_resume_refuses_a_checkpoint_of_another_class_count(synthetic_root, trained_run,
                                                            other_weights, tmp_path, capsys):
    run = clone_run(trained_run, tmp_path / "run", skip=("model_best.pth",))
    checkpoint = torch.load(trained_run / "model_0000001.pth", weights_only=True)
    checkpoint["model"] = _sliced(checkpoint["model"], 2)
    (run / "model_final.pth").unlink()
    (run / "last_checkpoint").unlink()
    replace_bytes(run / "model_0000001.pth", b"")
    torch.save(checkpoint, run / "model_0000001.pth")
    before = listing(run)
    code, error, _ = train(capsys, train_args(synthetic_root, run, "--resume"))
    assert code == 2
    assert error.startswith(f"error: {run / 'model_0000001.pth'}: holds a 2-class model")
    assert listing(run) == before


# ------------------------------------------------------------------ 2. output paths first
def _refuse_inference(*args, **kwargs):
    raise AssertionError("the model was loaded before the output path was checked")


def test_predict_out_naming_a_file_fails_before_inference(synthetic_root, trained_run,
                                                          tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("seg_project.inference.predictor.Predictor", _refuse_inference)
    out = tmp_path / "out"
    out.write_text("a file\n")
    before = listing(tmp_path)
    argv = ["--config-file", str(QUICK_CONFIG), "--weights", str(trained_run / "model_final.pth"),
            "--images", str(synthetic_root / "test_release"), "--out", str(out)]
    assert predict_tool.main(argv) == 2
    assert error_line(capsys.readouterr().err) == (
        f"error: {out}: is a file, not a folder: cannot create the submission file "
        f"{out / 'test-results.json'}")
    assert listing(tmp_path) == before


def test_predict_existing_zip_fails_before_inference(synthetic_root, trained_run, tmp_path,
                                                     capsys, monkeypatch):
    monkeypatch.setattr("seg_project.inference.predictor.Predictor", _refuse_inference)
    out = tmp_path / "out"
    out.mkdir()
    (out / "test-results.zip").write_bytes(b"zip")
    argv = ["--config-file", str(QUICK_CONFIG), "--weights", str(trained_run / "model_final.pth"),
            "--images", str(synthetic_root / "test_release"), "--out", str(out), "--zip"]
    assert predict_tool.main(argv) == 2
    assert error_line(capsys.readouterr().err) == (
        f"error: {out / 'test-results.zip'}: the submission file exists; pass --overwrite to "
        "replace it")


def test_visualize_out_naming_a_file_fails_before_inference(synthetic_root, trained_run,
                                                            tmp_path, capsys, monkeypatch):
    from seg_project.inference import predictor

    monkeypatch.setattr(predictor, "Predictor", _refuse_inference)
    out = tmp_path / "pictures"
    out.write_text("a file\n")
    before = listing(tmp_path)
    argv = ["--config-file", str(QUICK_CONFIG), "--weights", str(trained_run / "model_final.pth"),
            "--images", str(synthetic_root / "test_release"), "--out", str(out)]
    assert visualize_tool.main(argv) == 2
    assert error_line(capsys.readouterr().err) == (
        f"error: {out}: the picture folder is an existing file, not a folder")
    assert listing(tmp_path) == before


def test_visualize_data_out_naming_a_file(synthetic_root, tmp_path, capsys):
    out = tmp_path / "pictures"
    out.write_text("a file\n")
    assert load_tool("visualize_data").main([str(synthetic_root), "--out", str(out)]) == 2
    assert error_line(capsys.readouterr().err) == (
        f"error: {out}: the picture folder is an existing file, not a folder")
    assert out.read_text() == "a file\n"


# ------------------------------------------------------------------ 5. the error style
def test_debug_shows_the_traceback(synthetic_root, tmp_path, monkeypatch):
    argv = [str(a) for a in train_args(synthetic_root, tmp_path / "run")] + ["SOLVER.EPOCS", "3"]
    with pytest.raises(ConfigError, match="SOLVER.EPOCS"):
        train_net.command(["--debug", *argv])
    with pytest.raises(ConfigError, match="SOLVER.EPOCS"):
        train_net.command([*argv, "--debug"])  # after the overrides too
    monkeypatch.setenv("SEG_PROJECT_DEBUG", "1")
    with pytest.raises(ConfigError, match="SOLVER.EPOCS"):
        train_net.command(argv)
    with pytest.raises(DatasetError):
        predict_tool.main(["--config-file", str(QUICK_CONFIG), "--weights", "w.pth",
                           "--images", str(tmp_path / "none"), "--out", str(tmp_path / "o")])


def test_unexpected_errors_keep_their_traceback():
    def bug(argv):
        return 1 // 0

    with pytest.raises(ZeroDivisionError):
        run_tool(bug, [])

    def key_bug(argv):
        return {}["missing"]

    with pytest.raises(KeyError):
        run_tool(key_bug, [])


def test_config_errors_are_recognised():
    error = config_error(AssertionError("Non-existent key: A.B"))
    assert (error.path, error.problem) == ("A.B", "no such config key")
    error = config_error(KeyError("Non-existent config key: A.C"))
    assert (error.path, error.problem) == ("A.C", "no such config key")
    error = config_error(ValueError("Type mismatch (<class 'float'> vs. <class 'str'>) with "
                                    "values (0.5 vs. x) for config key: A.D"))
    assert str(error) == "A.D: expects a value of float (like 0.5), got x"
    error = config_error(KeyError("Key MODEL.X was renamed to MODEL.Y; please update your "
                                  "config."))
    assert str(error) == "MODEL.X: this config key was renamed to MODEL.Y"
    assert config_error(KeyError("boxes")) is None
    assert config_error(ValueError("something else")) is None


def test_check_submission_unreadable_input_exits_2(tmp_path, capsys):
    tool = load_tool("check_submission")
    missing = tmp_path / "ids.json"
    assert tool.main([str(tmp_path / "none.json"), "--id-map", str(missing)]) == 2
    assert error_line(capsys.readouterr().err) == f"error: {missing}: mapping file not found"


def test_train_net_script_prints_one_line_and_exits_2(synthetic_root, tmp_path):
    out = tmp_path / "run"
    argv = [str(a) for a in train_args(synthetic_root, out)] + ["SOLVER.EPOCS", "3"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("SEG_PROJECT_DEBUG", None)
    result = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), *argv],
                            capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == ("error: SOLVER.EPOCS: no such config key (did "
                                              "you mean SOLVER.EPOCHS?)")
    assert "Traceback" not in result.stderr
    assert not out.exists()


# ------------------------------------------------------------------ 6. CPU AMP
def _fake_cpu(monkeypatch, native: bool):
    found = "AVX512 with AVX512_BF16 (fake)" if native else "AVX2, no AVX512_BF16 or AMX (fake)"
    monkeypatch.setattr(mixed_precision, "native_cpu_bf16", lambda: (native, found))


def test_cpu_amp_dtype_rule(monkeypatch):
    _fake_cpu(monkeypatch, native=False)
    assert mixed_precision.cpu_amp_dtype("auto") == (
        torch.float32, "float32: SOLVER.AMP.CPU_DTYPE auto and this CPU has no native bfloat16 "
                       "(AVX2, no AVX512_BF16 or AMX (fake))")
    dtype, reason = mixed_precision.cpu_amp_dtype("bfloat16")
    assert dtype == torch.bfloat16 and "forced" in reason
    assert mixed_precision.cpu_amp_dtype("float32")[0] == torch.float32
    _fake_cpu(monkeypatch, native=True)
    assert mixed_precision.cpu_amp_dtype("auto")[0] == torch.bfloat16
    dtype, reason = mixed_precision.cpu_amp_dtype("bfloat16")
    assert dtype == torch.bfloat16 and "forced" not in reason
    assert mixed_precision.cpu_amp_dtype("float32")[0] == torch.float32
    with pytest.raises(ConfigError, match="SOLVER.AMP.CPU_DTYPE"):
        mixed_precision.cpu_amp_dtype("float16")


def _cpuinfo_flags() -> set:
    """The CPU flags Linux lists in /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags")
            for flag in line.split(":", 1)[1].split()}


def test_native_bf16_probe_reports_the_capability(monkeypatch):
    import platform

    native, found = mixed_precision.native_cpu_bf16()
    assert isinstance(native, bool)
    capability = torch.backends.cpu.get_cpu_capability()
    assert capability in found
    # On x86, the probe agrees with the flags of the kernel's CPU list.
    flags = _cpuinfo_flags()
    if platform.machine().lower() in ("x86_64", "amd64") and flags:
        assert native == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}), (found, flags)
    # Each capability, faked both ways (an x86 CPU; then an ARM one).
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")

    def fake(amx, avx512_bf16):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        return mixed_precision.native_cpu_bf16()

    assert fake(False, False) == (False, f"{capability}, no AVX512_BF16 or AMX")
    assert fake(False, True) == (True, f"{capability} with AVX512_BF16")
    assert fake(True, False) == (True, f"{capability} with AMX")
    assert fake(True, True) == (True, f"{capability} with AMX")

    def broken():
        raise RuntimeError("no cpuinfo")

    fake(False, False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken)
    assert mixed_precision.native_cpu_bf16()[0] is False  # a probe that fails means "no"
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    for arm_bf16 in (False, True):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported",
                            lambda value=arm_bf16: value)
        assert fake(False, False)[0] is arm_bf16


def test_cpu_amp_falls_back_to_float32_without_native_bf16(synthetic_root, tmp_path,
                                                           monkeypatch):
    import logging

    from seg_project.engine import CellsTrainer, setup_cfg

    _fake_cpu(monkeypatch, native=False)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    amp_logger = logging.getLogger(mixed_precision.__name__)
    amp_logger.addHandler(handler)
    try:
        argv = train_args(synthetic_root, tmp_path, epochs=1, **{"SOLVER.AMP.ENABLED": True})
        cfg = setup_cfg(train_net.build_parser().parse_args([str(a) for a in argv]))
        trainer = CellsTrainer(cfg)
    finally:
        amp_logger.removeHandler(handler)
    assert cfg.SOLVER.AMP.CPU_DTYPE == "auto"
    assert trainer._trainer.autocast_dtype is None
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert warnings == ["SOLVER.AMP.ENABLED on this CPU: training in float32: "
                        "SOLVER.AMP.CPU_DTYPE auto and this CPU has no native bfloat16 (AVX2, "
                        "no AVX512_BF16 or AMX (fake)); set SOLVER.AMP.CPU_DTYPE bfloat16 to "
                        "force bfloat16 autocast."]
    log = (tmp_path / "log.txt").read_text()
    assert log.count("training in float32") == 1  # said once, in the run's log


@pytest.mark.skipif(not mixed_precision.native_cpu_bf16()[0],
                    reason="this CPU has no native bfloat16 (AVX512_BF16/AMX/ARM BF16): "
                           f"{mixed_precision.native_cpu_bf16()[1]}")
def test_bfloat16_and_float32_losses_agree(synthetic_root, trained_run):
    """One batch, the same weights and sampling: bfloat16 autocast changes the RPN and mask
    losses by at most 5 %, the box head's by at most 10 % and the total by at most 2 %
    (bfloat16 keeps 8 bits of mantissa). The box head's losses move most: bfloat16 perturbs
    the proposals, which can swap a few of the RoIs sampled for it. Measured with forced
    bfloat16 on the synthetic data, depending on the fixture's weights: loss_cls 1.0-2.5 %,
    loss_box_reg 0.02-5.2 %, the others under 0.05 %, the total under 0.3 %."""
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from seg_project.checkpoint import CellsCheckpointer
    from seg_project.config import load_config, register_datasets_from_config
    from seg_project.data.mapper import CellsDatasetMapper

    cfg = load_config(QUICK_CONFIG, tiny_opts(synthetic_root, trained_run))
    register_datasets_from_config(cfg)
    model = build_model(cfg)
    CellsCheckpointer(model).load(str(trained_run / "model_final.pth"))
    model.train()
    mapper = CellsDatasetMapper(cfg, is_train=True)
    torch.manual_seed(0)
    batch = [mapper(record) for record in DatasetCatalog.get("cells_train")[:2]]

    def losses(dtype):
        torch.manual_seed(0)
        with EventStorage(0), torch.no_grad(), torch.autocast(
                "cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            return {k: float(v) for k, v in model(batch).items()}

    full, half = losses(torch.float32), losses(torch.bfloat16)
    assert set(full) == set(half)
    for name in full:
        share = 0.10 if name in ("loss_cls", "loss_box_reg") else 0.05
        assert abs(half[name] - full[name]) <= share * abs(full[name]) + 1e-3, (name, full, half)
    assert abs(sum(half.values()) - sum(full.values())) <= 0.02 * sum(full.values())


# ------------------------------------------------------------------ 8. the detection cap
def test_count_capped():
    assert count_capped([5, 10, 3], cap=100) is None
    assert count_capped([], cap=100) is None
    assert count_capped([100, 10, 3], cap=100) == (
        "1 of 3 images reached TEST.DETECTIONS_PER_IMAGE (100 detections)")
    message = count_capped([100, 100, 3], cap=100)
    assert message.startswith("2 of 3 images reached TEST.DETECTIONS_PER_IMAGE (100 "
                              "detections): most did")
    assert most_capped([100, 100, 3], 100) and not most_capped([100, 1, 3], 100)
    assert detection_cap_message is count_capped


# ------------------------------------------------------------------ smaller pieces
def test_resume_of_a_finished_run_does_nothing(synthetic_root, trained_run, tmp_path, capsys):
    run = clone_run(trained_run, tmp_path / "run", skip=("model_best.pth",))
    before = listing(run)
    code, _, out = train(capsys, train_args(synthetic_root, run, "--resume"))
    assert code == 0
    assert (f"{run / 'model_final.pth'}: training already finished (4 iterations); --resume "
            "has nothing to do") in out
    assert listing(run) == before


def test_last_checkpoint_naming_a_missing_file(tmp_path):
    from seg_project.checkpoint import find_resume_point

    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(WeightsError) as info:
        find_resume_point(str(tmp_path))
    assert info.value.path == str(tmp_path / "model_0000009.pth")
    assert "named by last_checkpoint" in info.value.problem
    assert find_resume_point(str(tmp_path / "empty")) is None


def test_output_path_checks(tmp_path):
    from seg_project.utils.paths import check_output_dir, check_output_file

    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert check_output_file(tmp_path / "new" / "deeper" / "r.json") == \
        tmp_path / "new" / "deeper" / "r.json"
    with pytest.raises(DatasetError, match="exists; pass --overwrite"):
        check_output_file(a_file)
    assert check_output_file(a_file, overwrite=True) == a_file
    with pytest.raises(DatasetError, match="is an existing folder"):
        check_output_file(tmp_path, overwrite=True)
    with pytest.raises(DatasetError) as info:
        check_output_file(a_file / "sub" / "r.json", what="submission file")
    assert info.value.path == str(a_file) and "is a file, not a folder" in info.value.problem
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    with pytest.raises(DatasetError, match="is an existing file, not a folder"):
        check_output_dir(a_file)
    assert not (tmp_path / "new").exists() and not (tmp_path / "a").exists()  # nothing made


def test_unwritable_output_is_an_expected_error(capsys):
    def denied(argv):
        raise PermissionError(13, "Permission denied", "/srv/out/test-results.json")

    assert run_tool(denied, []) == 2
    assert error_line(capsys.readouterr().err) == ("error: /srv/out/test-results.json: "
                                                   "Permission denied")
