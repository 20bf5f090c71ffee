"""Tests of seg_project.analysis and tools/plot_curves.py on synthetic Detectron2 runs: a
saved one (tests/fixtures/curves/step) and runs with broken metrics files made here."""

import csv
import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.image import imread

from seg_project.analysis.plots import load_run, plot_runs, read_run_config, smooth, summarize_runs
from seg_project.data.image_io import DatasetError

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "plot_curves.py"
# A clean run with a step LR, saved as Detectron2's JSONWriter writes metrics.json: one JSON
# object per line (keys sorted), a training line every 5 iterations (losses, lr, epoch...), the
# evaluation after each epoch merged into the line of its iteration (segm/AP50, bbox/AP,
# per-class segm/AP50-<class>...), the last two lines out of order (JSONWriter does not sort
# the iterations of one write); its config.yaml has SOLVER.ITERS_PER_EPOCH. It was generated
# once with the records below (_records with STEP_AP50, a 20-iteration warmup and steps at
# 160 and 180, the last total_loss set to STEP_FINAL_LOSS), values rounded to 4 decimals.
STEP_RUN = Path(__file__).resolve().parent / "fixtures" / "curves" / "step"
ITERS_PER_EPOCH = 10
EPOCHS = 20
MAX_ITER = ITERS_PER_EPOCH * EPOCHS
CLASSES = ("epithelial", "inflammatory")

# segm/AP50 after each epoch. Step LR: best 70 at epoch 17, final 68.
STEP_AP50 = [10, 20, 30, 38, 44, 49, 53, 56, 58, 60, 61, 62, 63, 64, 65, 66, 70, 69, 68, 68]
# Constant LR: best 55 at epoch 12 (tie at epoch 16: the earlier one counts), final 50.
CONST_AP50 = [8, 18, 27, 35, 40, 44, 47, 50, 52, 53, 54, 55, 54, 52, 53, 55, 51, 50, 51, 50]
# The first attempt of the constant run, killed after iteration 149, logged 99 for epochs
# 11..15; the run resumed from iteration 100 rewrote them (the later values must win).
ABANDONED_AP50 = CONST_AP50[:10] + [99] * 10
STEP_FINAL_LOSS = 0.5


def _loss(it, lr_scale, rng):
    return 0.5 + 2.5 * np.exp(-it / (40 * lr_scale)) + rng.normal(0, 0.08)


def _train_record(it, lr, total, epoch=True):
    parts = {"loss_cls": 0.25 * total, "loss_box_reg": 0.3 * total, "loss_mask": 0.3 * total,
             "loss_rpn_cls": 0.1 * total, "loss_rpn_loc": 0.05 * total}
    record = {"iteration": it, "total_loss": total, "lr": lr, "time": 0.2, "data_time": 0.01,
              "eta_seconds": (MAX_ITER - it) * 0.2, **parts}
    if epoch:
        record["epoch"] = (it + 1) / ITERS_PER_EPOCH
    return record


def _eval_record(it, ap50, epoch=True):
    record = {"iteration": it, "segm/AP50": ap50, "segm/AP": ap50 / 2, "segm/AP75": ap50 / 3,
              "bbox/AP50": ap50 - 5, "bbox/AP": ap50 / 2 - 3}
    for n, name in enumerate(CLASSES):
        record[f"segm/AP50-{name}"] = ap50 - 10 * n
        record[f"segm/AP-{name}"] = ap50 / 2 - 5 * n
    if epoch:
        record["epoch"] = (it + 1) / ITERS_PER_EPOCH
    return record


def _records(iterations, ap50, lr_of, lr_scale, seed):
    """Training lines every 5 iterations and an evaluation at the end of every epoch (merged
    into the training line of the same iteration, as Detectron2 writes them)."""
    rng = np.random.default_rng(seed)
    for it in iterations:
        record = {}
        if it % 5 == 4:
            record.update(_train_record(it, lr_of(it), _loss(it, lr_scale, rng)))
        if (it + 1) % ITERS_PER_EPOCH == 0:
            record.update(_eval_record(it, float(ap50[(it + 1) // ITERS_PER_EPOCH - 1])))
        if record:
            yield record


def _line(record):
    return json.dumps(record, sort_keys=True)


def make_resumed_run(root: Path) -> Path:
    """A constant-LR run killed after iteration 149 (mid-line), resumed from iteration 100,
    killed again mid-line after the last iteration. Its config.yaml has no epoch length, so
    epochs come from the "epoch" values of metrics.json."""
    run = root / "constant"
    run.mkdir(parents=True)

    def constant_lr(it):
        return 0.01

    abandoned = list(_records(range(150), ABANDONED_AP50, constant_lr, 3.0, seed=1))
    resumed = list(_records(range(100, MAX_ITER), CONST_AP50, constant_lr, 1.5, seed=2))
    text = "".join(_line(r) + "\n" for r in abandoned)
    text += _line(resumed[0])[:25]  # killed while writing: no newline, the resume appends
    text += "".join(_line(r) + "\n" for r in resumed)
    text += "\n" + _line(_train_record(MAX_ITER + 4, 0.01, 0.1))[:30]  # killed again
    (run / "metrics.json").write_text(text)
    (run / "config.yaml").write_text("SOLVER:\n  BASE_LR: 0.01\n  ITERS_PER_EPOCH: 0\n"
                                     f"  MAX_ITER: {MAX_ITER}\n")
    return run


def plot_curves_main():
    spec = importlib.util.spec_from_file_location("plot_curves", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _pixels_of_color(image, color, tolerance=0.04):
    return int((np.abs(image[..., :3] - np.asarray(color)) < tolerance).all(axis=-1).sum())


def _read_summary(out: Path):
    with open(out / "summary.csv", newline="") as f:
        return {row["run"]: row for row in csv.DictReader(f)}


def test_main_writes_figures_and_summary(tmp_path, capsys):
    constant = make_resumed_run(tmp_path / "runs")
    out = tmp_path / "figures" / "scheduler"
    rc = plot_curves_main()([str(STEP_RUN), str(constant / "metrics.json"), "--out", str(out),
                             "--labels", "step LR", "constant LR"])
    assert rc == 0
    blue, orange = colormaps["tab10"].colors[:2]
    for name in ("loss.png", "loss_components.png", "lr.png", "ap.png", "ap50_per_class.png"):
        image = imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 400, name
        assert image[..., :3].std() > 0.05, f"{name} looks blank"
        # Each run's curves are drawn, in the same color in every figure.
        for run, color in (("step LR", blue), ("constant LR", orange)):
            assert _pixels_of_color(image, color) > 300, f"{name}: no {run} curve"
    assert not list(out.glob("*.tmp")), "temporary files were left behind"

    rows = _read_summary(out)
    assert set(rows) == {"step LR", "constant LR"}
    step_row, const_row = rows["step LR"], rows["constant LR"]
    assert (float(step_row["best"]), float(step_row["best_epoch"])) == (70, 17)
    assert int(step_row["best_iteration"]) == 17 * ITERS_PER_EPOCH - 1
    assert float(step_row["final"]) == 68 and float(step_row["final_epoch"]) == EPOCHS
    assert float(step_row["final_total_loss"]) == STEP_FINAL_LOSS
    assert int(step_row["evaluations"]) == EPOCHS and int(step_row["max_iter"]) == MAX_ITER
    assert (float(const_row["best"]), float(const_row["best_epoch"])) == (55, 12)
    assert float(const_row["final"]) == 50 and int(const_row["iterations"]) == MAX_ITER

    printed = capsys.readouterr().out
    assert "| step LR" in printed and "| constant LR" in printed
    assert "(epochs from metrics.json 'epoch')" in printed
    md = (out / "summary.md").read_text()
    assert md.splitlines()[0].startswith("| run") and "| 70 " in md


def test_resumed_run_keeps_last_occurrence_sorted(tmp_path, caplog):
    run_dir = make_resumed_run(tmp_path)
    with caplog.at_level(logging.WARNING, logger="seg_project.analysis.plots"):
        run = load_run(run_dir)
    assert run.name == "constant"
    assert run.iters_per_epoch == pytest.approx(ITERS_PER_EPOCH)
    assert run.epoch_source == "metrics.json 'epoch'"
    its, ap50 = run.series["segm/AP50"]
    assert np.all(np.diff(its) > 0)
    assert its.tolist() == [e * ITERS_PER_EPOCH - 1 for e in range(1, EPOCHS + 1)]
    assert ap50.tolist() == CONST_AP50  # epochs 11..15 ran twice: the resumed values won
    loss_its, _ = run.series["total_loss"]
    assert np.all(np.diff(loss_its) > 0) and loss_its[-1] == MAX_ITER - 1
    assert len(loss_its) == len(set(loss_its.tolist())) == MAX_ITER // 5
    messages = caplog.text
    assert "truncated last line" in messages
    assert "truncated record followed by an intact one" in messages
    assert "blank line(s) skipped" in messages


def test_summary_best_is_earliest_and_min_mode():
    run = load_run(STEP_RUN)
    for its, _ in run.series.values():
        assert np.all(np.diff(its) > 0)
    (row,) = summarize_runs([run], "segm/AP50")
    assert row["best"] == 70 and row["best_epoch"] == 17
    (row,) = summarize_runs([run], "total_loss", mode="min")
    assert row["best"] == pytest.approx(np.min(run.series["total_loss"][1]))
    with pytest.raises(ValueError, match="segm/AP5'.*segm/AP50"):
        summarize_runs([run], "segm/AP5")


def test_unknown_epoch_length_falls_back_to_iterations(tmp_path, caplog):
    run_dir = tmp_path / "plain"
    run_dir.mkdir()
    lines = [_train_record(it, 0.02, 1.0 / (it + 1), epoch=False) for it in range(4, 100, 5)]
    lines += [_eval_record(49, 30.0, epoch=False), _eval_record(99, 40.0, epoch=False)]
    (run_dir / "metrics.json").write_text("".join(_line(r) + "\n" for r in lines))
    with caplog.at_level(logging.WARNING, logger="seg_project.analysis.plots"):
        run = load_run(run_dir)
    assert run.iters_per_epoch is None and run.to_epoch([9]) is None
    assert "epoch length unknown" in caplog.text
    (row,) = summarize_runs([run])
    assert row["best_iteration"] == 99 and row["best_epoch"] is None
    written = plot_runs([run], tmp_path / "out")
    assert {p.name for p in written} == {"loss.png", "loss_components.png", "lr.png", "ap.png",
                                         "ap50_per_class.png"}


def test_figures_without_data_are_skipped(tmp_path):
    run_dir = tmp_path / "train_only"
    run_dir.mkdir()
    lines = [{"iteration": it, "total_loss": 2 - it / 100, "lr": 0.01} for it in range(19, 200, 20)]
    (run_dir / "metrics.json").write_text("".join(_line(r) + "\n" for r in lines))
    (run_dir / "config.yaml").write_text("SOLVER:\n  MAX_ITER: 200\n  EPOCHS: 4\n")
    run = load_run(run_dir)
    assert run.iters_per_epoch == 50 and "MAX_ITER / EPOCHS" in run.epoch_source
    written = plot_runs([run], tmp_path / "out")
    assert [p.name for p in written] == ["loss.png", "lr.png"]


def test_missing_or_bad_inputs_give_clear_errors(tmp_path, capsys):
    main = plot_curves_main()
    out = tmp_path / "out"
    assert main([str(tmp_path / "no_such_run"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no_such_run: no such run folder" in err and "Traceback" not in err

    (tmp_path / "empty_run").mkdir()
    assert main([str(tmp_path / "empty_run"), "--out", str(out)]) == 2
    assert "no metrics.json in it" in capsys.readouterr().err

    assert main([str(STEP_RUN), "--out", str(out), "--labels", "a", "b"]) == 2
    assert "2 labels for 1 runs" in capsys.readouterr().err
    assert main([str(STEP_RUN), "--out", str(out), "--metric", "segm/AP5"]) == 2
    assert "segm/AP5" in capsys.readouterr().err
    assert not out.exists(), "nothing is written when the input is bad"

    garbage = tmp_path / "garbage" / "metrics.json"
    garbage.parent.mkdir()
    garbage.write_text("not json\n[1, 2]\n")
    with pytest.raises(DatasetError, match="no Detectron2 metrics record"):
        load_run(garbage)
    bad_yaml = tmp_path / "config.yaml"
    bad_yaml.write_text("SOLVER: [unclosed\n")
    with pytest.raises(DatasetError, match="config.yaml: is not a readable YAML"):
        read_run_config(bad_yaml)


def test_smooth_is_a_centered_moving_median():
    values = np.ones(100)
    values[50] = 100.0
    values[10] = np.nan
    smoothed = smooth(values, window=5)
    assert smoothed.shape == values.shape
    np.testing.assert_array_equal(smoothed, np.ones(100))
    ramp = np.arange(200, dtype=float)
    np.testing.assert_allclose(smooth(ramp, 21)[10:-10], ramp[10:-10])
    np.testing.assert_array_equal(smooth(np.array([3.0, 1.0]), 20), [3.0, 1.0])


def test_script_reports_a_missing_run_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "missing"),
                             "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert "missing: no such run folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_pathology_metrics_are_drawn_per_epoch(tmp_path):
    """plot_curves draws PQ, AJI, Dice and mPQ per epoch (pathology.png) beside AP when the
    evaluations logged them; the figure shows the logged values."""
    run_dir = tmp_path / "with_pathology"
    run_dir.mkdir()
    lines = []
    for epoch in range(1, 6):
        it = epoch * ITERS_PER_EPOCH - 1
        record = _eval_record(it, 10.0 * epoch)
        record.update({"pathology/PQ": 0.1 * epoch, "pathology/AJI": 0.12 * epoch,
                       "pathology/Dice": 0.15 * epoch, "pathology/mPQ": 0.08 * epoch})
        lines.append(record)
    (run_dir / "metrics.json").write_text("".join(_line(r) + "\n" for r in lines))
    (run_dir / "config.yaml").write_text(f"SOLVER:\n  ITERS_PER_EPOCH: {ITERS_PER_EPOCH}\n")
    run = load_run(run_dir)
    assert run.series["pathology/PQ"][1].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    written = {p.name: p for p in plot_runs([run], tmp_path / "out")}
    assert "pathology.png" in written and "ap.png" in written
    image = imread(written["pathology.png"])
    assert image.shape[0] > 400 and image[..., :3].std() > 0.05  # drawn, not blank
    # without pathology keys there is no pathology figure
    assert "pathology.png" not in {p.name for p in plot_runs([load_run(STEP_RUN)],
                                                               tmp_path / "out2")}


def test_lr_is_drawn_as_steps_through_every_logged_point():
    """A schedule's steps show as steps (each logged rate held until the next log), never as
    ramps joining two logged points."""
    from seg_project.analysis.plots import lr_figure, run_colors

    run = load_run(STEP_RUN)
    its, lr = run.series["lr"]
    assert len(np.unique(lr)) >= 3  # warmup and two steps
    line = lr_figure([run], run_colors(1)).axes[0].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), its)  # every logged point
    np.testing.assert_array_equal(line.get_ydata(), lr)
    vertices = line.get_path().vertices
    moves = np.diff(vertices, axis=0)
    assert not np.any((moves[:, 0] != 0) & (moves[:, 1] != 0))  # no ramp anywhere
    # The rate logged at a point holds until the next one, then changes there.
    change = int(np.flatnonzero(np.diff(lr))[-1])
    assert [its[change + 1], lr[change]] in vertices.tolist()
    assert lr_figure([], []) is None
