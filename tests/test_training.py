"""Training: epochs, per-epoch evaluation, checkpoints, resume after a kill, eval-only,
two processes on a CPU, AMP on a CPU, seeds, early stopping."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import QUICK_CONFIG, REPO, load_tool, run_train_net, train_args
from detectron2.utils.events import EventStorage

from seg_project.checkpoint import CellsCheckpointer, WeightsNotFoundError
from seg_project.config import get_seg_project_cfg, load_config, resolve_epochs
from seg_project.engine import setup_cfg
from seg_project.engine.hooks import BestCheckpointHook


def read_metrics(run_dir: Path) -> list:
    lines = (run_dir / "metrics.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def evaluated_iterations(run_dir: Path) -> list:
    return sorted(line["iteration"] for line in read_metrics(run_dir) if "segm/AP50" in line)


def trained_iterations(run_dir: Path) -> list:
    return sorted(line["iteration"] for line in read_metrics(run_dir) if "total_loss" in line)


def listing(folder: Path) -> dict:
    """Every file under ``folder`` with its size and mtime."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob("*"))}


def run_script(argv, timeout=600, **kwargs):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), *argv],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
                          **kwargs)


# ------------------------------------------------------------------ configuration
def test_epochs_resolve_to_iterations():
    cfg = load_config(REPO / "configs" / "mask_rcnn_R_50_FPN_cells.yaml")
    message = resolve_epochs(cfg, num_train_images=167)  # 80 % of the course's 209
    assert cfg.SOLVER.ITERS_PER_EPOCH == 84  # ceil(167 / 2)
    assert cfg.SOLVER.MAX_ITER == 100 * 84
    assert cfg.SOLVER.STEPS == (6720, 7560)  # 80 % and 90 %
    assert cfg.TEST.EVAL_PERIOD == 84 and cfg.SOLVER.CHECKPOINT_PERIOD == 84
    assert "8400" in message and "6720" in message

    cfg.TEST.EVAL_EVERY_EPOCHS, cfg.SOLVER.CHECKPOINT_EVERY_EPOCHS = 5, 10
    resolve_epochs(cfg, num_train_images=167)
    assert cfg.TEST.EVAL_PERIOD == 5 * 84 and cfg.SOLVER.CHECKPOINT_PERIOD == 10 * 84


def test_reference_recipe_and_ablation_configs():
    cfg = load_config(REPO / "configs" / "mask_rcnn_R_50_FPN_cells.yaml")
    assert cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.BASE_LR == 0.005
    assert cfg.SOLVER.MOMENTUM == 0.9 and cfg.SOLVER.WEIGHT_DECAY == 0.0005
    assert cfg.SOLVER.IMS_PER_BATCH == 2 and cfg.SOLVER.EPOCHS == 100
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2 and cfg.MODEL.RESNETS.DEPTH == 50
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 4 and cfg.INPUT.MASK_FORMAT == "bitmask"
    assert cfg.TEST.DETECTIONS_PER_IMAGE > 100 and cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST < 0.05
    assert cfg.MODEL.WEIGHTS.startswith("detectron2://COCO-InstanceSegmentation/")
    ablation = load_config(REPO / "configs" / "mask_rcnn_R_50_FPN_cells_no_scheduler.yaml")
    resolve_epochs(ablation, num_train_images=167)
    assert ablation.SOLVER.STEPS == () and ablation.SOLVER.BASE_LR == 0.005


def test_plain_iteration_configs_stay_unchanged():
    cfg = get_seg_project_cfg()
    cfg.SOLVER.EPOCHS, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 0, 1234, (1000,)
    cfg.SOLVER.IMS_PER_BATCH = 2
    resolve_epochs(cfg, num_train_images=10)
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.ITERS_PER_EPOCH) == (1234, (1000,), 5)


# ------------------------------------------------------------------ a 2-epoch run
def test_two_epoch_run_evaluates_every_epoch(trained_run):
    # 4 training images, batch 2: 2 iterations per epoch, 4 in all.
    assert trained_iterations(trained_run)[-1] == 3
    assert evaluated_iterations(trained_run) == [1, 3]  # after epoch 1 and after epoch 2
    evals = [line for line in read_metrics(trained_run) if "segm/AP50" in line]
    assert [line["epoch"] for line in evals] == [1.0, 2.0]
    assert all("bbox/AP50" in line and "segm/AP50-class1" in line for line in evals)
    for name in ("model_best.pth", "model_final.pth", "config.yaml", "cells_split.json"):
        assert (trained_run / name).is_file(), name
    assert (trained_run / "last_checkpoint").read_text() == "model_final.pth"
    written = load_config(trained_run / "config.yaml")
    assert (written.SOLVER.MAX_ITER, written.SOLVER.ITERS_PER_EPOCH) == (4, 2)
    split = json.loads((trained_run / "cells_split.json").read_text())
    assert len(split["train_names"]) == 4 and len(split["val_names"]) == 2
    assert not set(split["train_names"]) & set(split["val_names"])


def test_checkpoints_hold_optimizer_scheduler_and_iteration(trained_run):
    checkpoint = torch.load(trained_run / "model_final.pth", map_location="cpu",
                            weights_only=True)
    trainer_state = checkpoint["trainer"]
    assert trainer_state["iteration"] == 3
    assert trainer_state["_trainer"]["optimizer"]["state"], "no momentum buffers saved"
    assert "LRScheduler" in trainer_state["hooks"]
    assert trainer_state["scheduler"]["last_epoch"] == 4
    assert "stopped_early" not in trainer_state
    assert trainer_state["hooks"]["BestCheckpointHook"]["best_iteration"] in (1, 3)
    assert not list(trained_run.glob("*.tmp")), "a temporary checkpoint file was left behind"


def test_resume_after_a_kill_mid_epoch_ends_like_an_uninterrupted_run(
        synthetic_root, trained_run, tmp_path):
    """Kill the training process (SIGKILL) in the middle of epoch 2, then --resume."""
    argv = train_args(synthetic_root, tmp_path, epochs=2, **{"SOLVER.IMS_PER_BATCH": 1})
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    process = subprocess.Popen([sys.executable, str(REPO / "tools" / "train_net.py"), *argv],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    end_of_epoch_1 = tmp_path / "model_0000003.pth"  # 4 iterations per epoch
    deadline = time.time() + 300
    while not end_of_epoch_1.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert end_of_epoch_1.exists() and not (tmp_path / "model_final.pth").exists()
    # SIGKILL allows no clean-up: a temporary file of a write in progress may stay (the kill
    # often lands while last_checkpoint is written), never a partial file under a final name.
    for checkpoint in tmp_path.glob("model_*.pth"):
        torch.load(checkpoint, map_location="cpu", weights_only=True)
    (tmp_path / ".model_0000005.pth.planted.tmp").write_bytes(b"half a checkpoint")

    run_train_net(["--resume", *argv])
    assert not list(tmp_path.glob("*.tmp")), "--resume left a killed run's temporary files"
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert trained_iterations(tmp_path)[-1] == 7
    assert evaluated_iterations(tmp_path) == [3, 7]  # one per epoch, none repeated or lost
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["trainer"]["iteration"] == 7


def test_eval_only_prints_the_ap_table(synthetic_root, trained_run, tmp_path):
    """--eval-only prints the grader-exact COCO table, the high-cap table (a cap above the
    grader's 100) and the pathology table."""
    argv = train_args(synthetic_root, tmp_path, "--eval-only",
                      **{"MODEL.WEIGHTS": trained_run / "model_final.pth",
                         "TEST.DETECTIONS_PER_IMAGE": 200})
    result = run_script(argv)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "copypaste: Task: segm" in out and "copypaste: AP,AP50,AP75" in out
    assert "COCO AP, grader-exact" in out and "AP50-class1" in out
    assert "COCO AP, high cap (200 detections" in out and "AP50@200" in out
    assert "Pathology metrics" in out and "AJI+" in out and "mPQ" in out


def test_missing_weights_file_is_a_clear_error(tmp_path, monkeypatch):
    from detectron2.modeling import build_model

    cfg = load_config(QUICK_CONFIG)
    model = build_model(cfg)
    missing = tmp_path / "nope" / "model_final.pth"
    with pytest.raises(WeightsNotFoundError, match=str(missing)):
        CellsCheckpointer(model).load(str(missing))
    # A model-zoo URL while offline: the download fails; the error names the URL.
    checkpointer = CellsCheckpointer(model)

    def offline(path, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(checkpointer.path_manager, "get_local_path", offline)
    url = "https://dl.fbaipublicfiles.com/detectron2/x/model_final.pkl"
    with pytest.raises(WeightsNotFoundError, match="could not be downloaded"):
        checkpointer.load(url)


def test_resume_finds_the_newest_checkpoint_without_last_checkpoint(tmp_path):
    checkpointer = CellsCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path))
    assert not checkpointer.has_checkpoint()
    for name in ("model_0000009", "model_0000019", "model_best"):
        checkpointer.save(name, tag_last=False)
    assert checkpointer.has_checkpoint()
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000019.pth")
    checkpointer.save("model_final")
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_final.pth")


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    checkpointer = CellsCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.save("model_best")
    before = (tmp_path / "model_best.pth").read_bytes()
    real_save = torch.save

    def dies_mid_write(obj, file, *args, **kwargs):  # the checkpointer hands torch a file
        file.write(b"partial")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_best")
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "model_best.pth").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_best.pth"]


# ------------------------------------------------------------------ hooks
class _FakeTrainer:
    def __init__(self, max_iter):
        self.iter, self.max_iter, self.stop_requested = 0, max_iter, False
        self.storage = EventStorage(0)

    def request_stop(self, reason=""):
        self.stop_requested = True


class _RecordingCheckpointer:
    def __init__(self):
        self.saved = []

    def save(self, name, tag_last=True, **kwargs):
        self.saved.append((name, kwargs["iteration"], tag_last))


def test_best_checkpoint_and_early_stopping():
    checkpointer = _RecordingCheckpointer()
    hook = BestCheckpointHook(eval_period=10, checkpointer=checkpointer, metric="segm/AP50",
                              mode="max", patience=2, iters_per_epoch=10)
    trainer = _FakeTrainer(max_iter=100)
    hook.trainer = trainer
    for epoch, ap50 in enumerate([10.0, 30.0, 20.0, 30.0, 25.0], start=1):
        trainer.iter = trainer.storage.iter = epoch * 10 - 1
        trainer.storage.put_scalar("segm/AP50", ap50, smoothing_hint=False)
        hook.after_step()
        if trainer.stop_requested:
            break
    # Best at epochs 1 and 2 (a tie is no improvement), stop after 2 epochs without one.
    assert checkpointer.saved == [("model_best", 9, False), ("model_best", 19, False)]
    assert trainer.stop_requested and epoch == 4
    state = hook.state_dict()
    assert state == {"best_value": 30.0, "best_iteration": 19, "evals_without_improvement": 2}


def test_early_stopping_ends_training_with_a_final_checkpoint(synthetic_root, tmp_path,
                                                              capsys):
    # "epoch" is recorded at every evaluation and only grows: in "min" mode the first
    # evaluation is the best and the second does not improve, so patience 1 stops the run
    # after epoch 2 of 3, deterministically.
    argv = train_args(synthetic_root, tmp_path, epochs=3, **{
        "TEST.EARLY_STOP_PATIENCE": 1, "TEST.BEST_METRIC": "epoch",
        "TEST.BEST_METRIC_MODE": "min"})
    run_train_net(argv)
    assert evaluated_iterations(tmp_path) == [1, 3]
    assert trained_iterations(tmp_path)[-1] == 3
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["trainer"]["iteration"] == 3
    # The final checkpoint records the early stop ...
    stopped = final["trainer"]["stopped_early"]
    assert stopped["iteration"] == 3 and "epoch did not improve for 1 evaluations" in \
        stopped["reason"]
    best = torch.load(tmp_path / "model_best.pth", map_location="cpu", weights_only=True)
    assert best["iteration"] == 1
    # ... and --resume says so and does nothing: no training, nothing written or changed.
    before = listing(tmp_path)
    capsys.readouterr()
    assert load_tool("train_net").command(["--resume", *map(str, argv)]) == 0
    out = capsys.readouterr().out
    assert (f"{tmp_path / 'model_final.pth'}: this run stopped early at iteration 3 "
            "(epoch did not improve for 1 evaluations") in out
    assert "--resume has nothing to do" in out
    assert listing(tmp_path) == before


def test_resume_restores_optimizer_scheduler_and_scaler_without_the_installer_patch(
        synthetic_root, trained_run, tmp_path, monkeypatch):
    """Undo tools/install_detectron2.py's fix_trainer_checkpoints_optimizer: stock v0.6
    DefaultTrainer.state_dict is TrainerBase's (iteration and hooks only). CellsTrainer's
    own state still carries the optimizer, scheduler and grad scaler through --resume."""
    from detectron2.engine import DefaultTrainer, TrainerBase

    from seg_project.engine import CellsTrainer
    from seg_project.engine.mixed_precision import MixedPrecisionTrainer

    monkeypatch.setattr(DefaultTrainer, "state_dict", TrainerBase.state_dict)
    monkeypatch.setattr(DefaultTrainer, "load_state_dict", TrainerBase.load_state_dict)
    # A run killed after epoch 1: model_0000001.pth is the newest checkpoint.
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy2(trained_run / "model_0000001.pth", run / "model_0000001.pth")
    saved = torch.load(run / "model_0000001.pth", map_location="cpu",
                       weights_only=True)["trainer"]
    argv = train_args(synthetic_root, run, "--resume")
    cfg = setup_cfg(load_tool("train_net").build_parser().parse_args(map(str, argv)))
    trainer = CellsTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    buffers = trainer.optimizer.state_dict()["state"]
    assert buffers and set(buffers) == set(saved["_trainer"]["optimizer"]["state"])
    for index, state in saved["_trainer"]["optimizer"]["state"].items():
        assert torch.equal(buffers[index]["momentum_buffer"], state["momentum_buffer"])
    assert trainer.scheduler.state_dict() == saved["scheduler"]
    assert trainer.scheduler.last_epoch == 2
    # The grad scaler (CUDA AMP) goes the same way; a CPU GradScaler stands in for it.
    trainer._trainer = MixedPrecisionTrainer(trainer.model, [], trainer.optimizer, "float32")
    trainer._trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=64.0)
    state = trainer.state_dict()
    assert state["_trainer"]["grad_scaler"]["scale"] == 64.0
    assert "optimizer" in state["_trainer"] and "scheduler" in state
    trainer._trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    trainer.load_state_dict(state)
    assert trainer._trainer.grad_scaler.get_scale() == 64.0


# ------------------------------------------------------------------ devices and precision
def test_amp_on_cpu_trains_in_bfloat16(synthetic_root, trained_run, tmp_path, monkeypatch):
    """The forward pass of each step runs under bfloat16 autocast (the backbone's features
    are bfloat16), the weights stay float32, and the logged losses of the first step agree
    with a float32 forward pass on the same batch, weights and sampling (bfloat16 keeps 8
    bits of mantissa; see test_reliability.py's bound on the loss components)."""
    import copy
    import math

    from seg_project.engine import CellsTrainer, mixed_precision

    # As on a CPU with native bfloat16 (AVX512_BF16/AMX); tests/test_reliability.py covers
    # the float32 fallback.
    monkeypatch.setattr(mixed_precision, "native_cpu_bf16", lambda: (True, "AMX (fake)"))
    argv = train_args(synthetic_root, tmp_path, epochs=1, **{
        "SOLVER.AMP.ENABLED": True, "MODEL.WEIGHTS": trained_run / "model_final.pth"})
    cfg = setup_cfg(load_tool("train_net").build_parser().parse_args(argv))
    trainer = CellsTrainer(cfg)
    assert trainer._trainer.autocast_dtype == torch.bfloat16
    trainer.resume_or_load(resume=False)  # loads the weights file this test suite saved
    model = trainer.model
    start_weights = copy.deepcopy(model.state_dict())
    steps, feature_dtypes = [], []

    def keep_batch(module, args):
        if module.training:
            steps.append((copy.deepcopy(args[0]), torch.get_rng_state()))

    def keep_dtypes(module, args, features):
        if module.training:
            feature_dtypes.append({t.dtype for t in features.values()})

    hooks = [model.register_forward_pre_hook(keep_batch),
             model.backbone.register_forward_hook(keep_dtypes)]
    try:
        trainer.train()
    finally:
        for hook in hooks:
            hook.remove()
    assert evaluated_iterations(tmp_path) == [1]
    losses = [line["total_loss"] for line in read_metrics(tmp_path) if "total_loss" in line]
    assert losses and all(loss == loss and loss < 100 for loss in losses)  # finite
    assert len(steps) == 2 and feature_dtypes == [{torch.bfloat16}] * 2
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    logged = {name: trainer.storage.history(name).values()[0]
              for name in trainer.storage.histories() if name.startswith("loss_")}
    assert all(iteration == 0 and math.isfinite(value) for value, iteration in logged.values())
    # The same first step in float32: the weights before training, the same batch and the
    # same random sampling of anchors and RoIs.
    model.load_state_dict(start_weights)
    batch, rng_state = steps[0]
    torch.set_rng_state(rng_state)
    with EventStorage(0), torch.no_grad():
        full = {name: float(value) for name, value in model(batch).items()}
    assert set(full) == set(logged)
    for name, value in full.items():
        share = 0.10 if name in ("loss_cls", "loss_box_reg") else 0.05
        assert abs(logged[name][0] - value) <= share * abs(value) + 1e-3, (name, full, logged)
    total = trainer.storage.history("total_loss").values()[0][0]
    assert total == pytest.approx(sum(value for value, _ in logged.values()), rel=1e-5)
    assert total == pytest.approx(sum(full.values()), rel=0.03)  # measured 0.9 %


def test_two_processes_on_cpu(synthetic_root, tmp_path):
    result = run_script(["--num-gpus", "2", *train_args(synthetic_root, tmp_path, epochs=1)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert evaluated_iterations(tmp_path) == [1]  # batch 2 over 2 processes: 2 iterations
    assert (tmp_path / "model_final.pth").is_file()


def test_same_seed_same_first_losses(synthetic_root, tmp_path):
    first = []
    for name in ("a", "b"):
        out = tmp_path / name
        run_train_net(train_args(synthetic_root, out, epochs=0, **{
            "SEED": 7, "SOLVER.MAX_ITER": 1, "DATASETS.TEST": "()"}))
        first.append({k: v for k, v in read_metrics(out)[0].items() if k.startswith("loss_")})
    assert first[0] and first[0] == first[1]


def test_eval_only_with_test_time_augmentation(synthetic_root, trained_run, tmp_path):
    """The -TTA numbers are those of TTA's own results file (re-evaluated here), which holds
    detections of other views than the plain one and relates to the plain results as merging
    views must: the plain view (MIN_SIZE_TEST 64 is one of TEST.AUG.MIN_SIZES) is one of
    TTA's views, so each image's best plain detection survives the merge or was suppressed by
    a better one of its class overlapping it (IoU > NMS_THRESH_TEST 0.5)."""
    import math
    from collections import Counter

    import pycocotools.mask as mask_util
    from detectron2.data import MetadataCatalog
    from pycocotools.coco import COCO

    from seg_project.evaluation.predictions import evaluate_predictions

    result = run_train_net(train_args(synthetic_root, tmp_path, "--eval-only", **{
        "MODEL.WEIGHTS": trained_run / "model_final.pth", "TEST.AUG.ENABLED": True,
        "TEST.AUG.MIN_SIZES": (64, 80), "TEST.AUG.MAX_SIZE": 128}))
    assert {"bbox", "segm", "bbox-TTA", "segm-TTA"} <= set(result["cells_val"])
    assert "AP50" in result["cells_val"]["segm-TTA"]
    metrics = result["cells_val"]
    for task in ("bbox", "segm", "bbox-TTA", "segm-TTA"):
        assert {"AP", "AP50", "AP75"} <= set(metrics[task])
        assert all(math.isnan(v) or 0 <= v <= 100 for v in metrics[task].values()), task
    metadata = MetadataCatalog.get("cells_val")
    coco_gt = COCO(metadata.json_file)
    val_ids = set(coco_gt.getImgIds())
    assert len(val_ids) == 2
    predictions = {}
    for suffix, folder in (("", "inference"), ("-TTA", "inference_TTA")):
        entries = json.loads((tmp_path / folder / "cells_val" /
                              "coco_instances_results.json").read_text())
        counts = Counter(e["image_id"] for e in entries)
        assert set(counts) == val_ids and max(counts.values()) <= 100  # DETECTIONS_PER_IMAGE
        recomputed = evaluate_predictions(coco_gt, entries, metadata.thing_classes,
                                          high_cap=100, pathology_threshold=None)
        for task in ("bbox", "segm"):
            assert metrics[task + suffix] == pytest.approx(recomputed[task], nan_ok=True), task
        predictions[suffix] = entries
    plain, tta = predictions[""], predictions["-TTA"]
    # Flipped and rescaled views add detections that the plain view does not have.
    assert {e["score"] for e in tta} - {e["score"] for e in plain}
    for image_id in val_ids:
        best = max((e for e in plain if e["image_id"] == image_id), key=lambda e: e["score"])
        rivals = [e for e in tta if e["image_id"] == image_id and e["score"] >= best["score"]
                  - 1e-6 and e["category_id"] == best["category_id"]]
        overlaps = mask_util.iou([e["bbox"] for e in rivals], [best["bbox"]], [0])
        assert rivals and float(np.max(overlaps)) >= 0.5, (best, rivals)


def _figure_axes(figures, ylabel: str, title: str = ""):
    """The one axes among ``figures`` whose y label and title start with these."""
    found = [ax for fig in figures for ax in fig.axes
             if ax.get_ylabel().startswith(ylabel) and ax.get_title().startswith(title)]
    assert len(found) == 1, (ylabel, title, [(ax.get_ylabel(), ax.get_title())
                                             for fig in figures for ax in fig.axes])
    return found[0]


def _curve(run_dir: Path, key: str):
    """``(iterations, values)`` of ``key`` in a run's metrics.json."""
    rows = [line for line in read_metrics(run_dir) if key in line]
    return [row["iteration"] for row in rows], [row[key] for row in rows]


def test_curves_of_two_real_runs_with_and_without_scheduler(synthetic_root, trained_run,
                                                            tmp_path, monkeypatch):
    """The figures plot each run's logged values under its label, in its color: the total
    loss and the learning rate per iteration, segm and bbox AP50 per epoch."""
    from matplotlib.figure import Figure

    constant = tmp_path / "constant_lr"
    run_train_net(train_args(synthetic_root, constant, **{"SOLVER.STEP_FRACTIONS": "()"}))
    lrs = [line["lr"] for line in read_metrics(constant) if "lr" in line]
    assert len(set(lrs)) == 1  # no warmup, no steps: constant
    out = tmp_path / "curves"
    figures = []
    savefig = Figure.savefig

    def keep_figure(fig, *args, **kwargs):
        figures.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep_figure)
    assert load_tool("plot_curves").main([str(trained_run), str(constant), "--labels",
                                          "step LR", "constant LR", "--out", str(out)]) == 0
    for name in ("loss.png", "ap.png", "lr.png"):
        assert (out / name).stat().st_size > 10_000, name
    summary = (out / "summary.md").read_text()
    assert "step LR" in summary and "constant LR" in summary

    runs = {"step LR": trained_run, "constant LR": constant}
    assert _curve(trained_run, "lr")[1] == [0.01, 0.001]  # stepped down in the 2nd epoch
    loss_ax = _figure_axes(figures, "total loss")
    colors = {}
    for line in loss_ax.get_lines():
        if line.get_label() in runs:  # the bold curve (2 points: no smoothing)
            name = line.get_label()
            colors[name] = line.get_color()
            its, losses = _curve(runs[name], "total_loss")
            np.testing.assert_array_equal(line.get_xdata(), its)
            np.testing.assert_allclose(line.get_ydata(), losses)
    assert set(colors) == set(runs) and colors["step LR"] != colors["constant LR"]
    lr_ax = _figure_axes(figures, "learning rate")
    drawn = {line.get_label(): line for line in lr_ax.get_lines()}
    for name, run in runs.items():
        assert drawn[name].get_color() == colors[name]
        points = set(zip(drawn[name].get_xdata().tolist(), drawn[name].get_ydata().tolist()))
        assert set(zip(*_curve(run, "lr"))) <= points, name  # each logged rate is on its line
    ap50_ax = _figure_axes(figures, "AP50", title="AP50")  # not the per-class panels
    curves = {(line.get_color(), line.get_linestyle()): line for line in ap50_ax.get_lines()
              if line.get_linestyle() != "None"}  # not the stars marking the best
    assert len(curves) == 4
    for name, run in runs.items():
        for task, style in (("segm", "-"), ("bbox", "--")):
            line = curves[(colors[name], style)]
            its, values = _curve(run, f"{task}/AP50")
            assert its == [1, 3]
            np.testing.assert_array_equal(line.get_xdata(), [1, 2])  # epochs
            np.testing.assert_allclose(line.get_ydata(), values)


def test_native_scale_config_trains_on_crops_and_evaluates_in_tiles(synthetic_root, tmp_path):
    """The CPU recipe for crowded histology, end to end on the synthetic data: native scale,
    crops, orientations, stain jitter; evaluation in tiles (forced small here)."""
    config = REPO / "configs" / "mask_rcnn_R_18_FPN_cells_native_scale.yaml"
    cfg = load_config(config)
    assert cfg.INPUT.RESIZE_MODE == "scale" and cfg.INPUT.SCALE_TEST == 1.0
    assert cfg.INPUT.CROP.ENABLED and cfg.INPUT.ROT90.ENABLED and cfg.INPUT.STAIN_JITTER.ENABLED
    assert cfg.TEST.DETECTIONS_PER_IMAGE >= 2283  # CoNSeP's most crowded image
    assert cfg.MODEL.RPN.POST_NMS_TOPK_TEST >= cfg.TEST.DETECTIONS_PER_IMAGE
    assert cfg.TEST.TILE.SIZE > 0 and cfg.MODEL.WEIGHTS == ""
    # bfloat16 only where native (issue 21): "auto", never a forced bfloat16 on an AVX2 CPU.
    assert cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.AMP.CPU_DTYPE == "auto"
    sizes = [tifffile.imread(p).shape[:2] for p in synthetic_root.glob("train/*/image.tif")]
    assert min(max(s) for s in sizes) > 48  # every evaluated image needs tiles
    out = tmp_path / "native"
    argv = train_args(synthetic_root, out, "--config-file", str(config), epochs=1)
    argv += ["INPUT.CROP.SIZE", "(48, 48)", "SOLVER.IMS_PER_BATCH", "2", "TEST.TILE.SIZE", "48",
             "TEST.TILE.OVERLAP", "16"]
    run_train_net(argv)
    assert evaluated_iterations(out) == [1]
    log = (out / "log.txt").read_text()
    assert "RandomDihedral" in log and "RandomStainJitter" in log and "RandomScale" in log
