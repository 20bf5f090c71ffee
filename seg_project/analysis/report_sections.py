"""The sections of the run report (:mod:`.report`) that need only the run folder's files:
the settings (``config.yaml``), the training curves and the final metrics (``metrics.json``).

Numbers of the final evaluation are printed with :func:`format_metric`: COCO AP values (in
percent, as Detectron2 logs them) with 2 decimals, pathology figures (fractions) with 4
decimals, an undefined value (NaN: no instance of a class in the split) as an em dash.
"""

import json
import logging
import math
import re
import tempfile
from html import escape
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..utils.run_files import BEST_MODEL, FINAL_MODEL, SPLIT_FILE
from ..utils.values import config_value, is_number
from .curves import RunCurves
from .report_html import Section, img_tag, paragraph, table

__all__ = [
    "COCO_COLUMNS",
    "PATHOLOGY_COLUMNS",
    "SETTINGS",
    "curves_section",
    "final_metrics_section",
    "format_metric",
    "last_evaluation",
    "settings_section",
    "strip_dataset_prefix",
]

logger = logging.getLogger(__name__)

EVAL_TASKS = ("segm", "bbox", "pathology")
COCO_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
PATHOLOGY_COLUMNS = ("PQ", "SQ", "DQ", "AJI", "AJI+", "Dice", "F1", "mPQ")
# The keys an evaluation logs beside its pathology metrics (which predictions they counted).
SETTING_COLUMNS = (("pathology/score_threshold", "score threshold"),
                   ("pathology/min_visible_fraction", "least visible fraction"),
                   ("pathology/max_mask_iou", "most mask IoU"))
UNDEFINED = "\u2014"
# (config key, what it is): the settings table.
SETTINGS = (
    ("MODEL.META_ARCHITECTURE", "model"),
    ("MODEL.BACKBONE.NAME", "backbone"),
    ("MODEL.RESNETS.DEPTH", "ResNet depth"),
    ("MODEL.RESNETS.NORM", "backbone norm"),
    ("MODEL.BACKBONE.FREEZE_AT", "frozen backbone stages"),
    ("MODEL.WEIGHTS", "initial weights"),
    ("MODEL.ROI_HEADS.NUM_CLASSES", "classes"),
    ("MODEL.DEVICE", "device"),
    ("INPUT.MIN_SIZE_TRAIN", "train input short side"),
    ("INPUT.MAX_SIZE_TRAIN", "train input max side"),
    ("INPUT.MIN_SIZE_TEST", "test input short side"),
    ("INPUT.MAX_SIZE_TEST", "test input max side"),
    ("SOLVER.BASE_LR", "base learning rate"),
    ("SOLVER.IMS_PER_BATCH", "images per batch"),
    ("SOLVER.EPOCHS", "epochs"),
    ("SOLVER.ITERS_PER_EPOCH", "iterations per epoch"),
    ("SOLVER.MAX_ITER", "iterations"),
    ("SOLVER.LR_SCHEDULER_NAME", "LR schedule"),
    ("SOLVER.STEPS", "LR steps (iterations)"),
    ("SOLVER.GAMMA", "LR step factor"),
    ("SOLVER.WARMUP_ITERS", "warmup iterations"),
    ("SOLVER.WEIGHT_DECAY", "weight decay"),
    ("SOLVER.CLIP_GRADIENTS.ENABLED", "gradient clipping"),
    ("SOLVER.AMP.ENABLED", "mixed precision (AMP)"),
    ("TEST.DETECTIONS_PER_IMAGE", "detections per image"),
    ("TEST.EVAL_PERIOD", "evaluation period (iterations)"),
    ("TEST.BEST_METRIC", "best-model metric"),
    ("TEST.PATHOLOGY.SCORE_THRESHOLD", "cells' score threshold (-1: operating point)"),
    ("TEST.INSTANCE_MAP.MIN_VISIBLE_FRACTION", "overlap rule: least visible fraction"),
    ("TEST.INSTANCE_MAP.MAX_MASK_IOU", "overlap rule: most mask IoU"),
    ("TEST.OPERATING_POINT.SCORE_THRESHOLD", "operating point (chosen)"),
    ("TEST.OPERATING_POINT.DATASET", "operating point chosen on"),
    ("TEST.AUG.ENABLED", "test-time augmentation"),
    ("DATASETS.CELLS.ROOT", "dataset root"),
    ("DATASETS.CELLS.CLASS_NAMES", "class names"),
    ("DATASETS.CELLS.VAL_FRACTION", "validation fraction"),
    ("DATASETS.CELLS.SPLIT_SEED", "split seed"),
    ("DATASETS.CELLS.VAL_LIST", "validation list"),
    ("DATASETS.TRAIN", "training sets"),
    ("DATASETS.TEST", "evaluation sets"),
)
_FIGURE_CAPTIONS = {
    "loss.png": "Training loss",
    "loss_components.png": "Loss components",
    "lr.png": "Learning rate",
    "ap.png": "Validation AP per evaluation",
    "ap50_per_class.png": "Validation AP50 per class",
    "pathology.png": "Validation pathology metrics (PQ, AJI, Dice, mPQ) per evaluation",
}
# segm/AP@1000, bbox/AP50@1000-<class>...: the high-cap figures and their cap.
_HIGH_CAP_KEY = re.compile(r"^(?:segm|bbox)/AP\d*@(\d+)(?:-|$)")


# ------------------------------------------------------------------------ numbers


def format_metric(key: str, value) -> str:
    """How the report prints a metric of the final evaluation.

    Args:
        key: its ``metrics.json`` key without a dataset prefix (``segm/AP50``,
            ``pathology/PQ``...).
        value: its value (None: not logged).

    Returns:
        str: "n/a" (not logged), an em dash (NaN), an integer count (``num_images``), 4
        decimals (pathology fractions) or 2 decimals (COCO AP in percent).
    """
    if value is None:
        return "n/a"
    value = float(value)
    if math.isnan(value):
        return UNDEFINED
    if key.endswith("num_images"):
        return str(int(value))
    if key.startswith("pathology/"):
        return f"{value:.4f}"
    return f"{value:.2f}"


def _is_eval_key(key: str) -> bool:
    return any(part in EVAL_TASKS for part in key.split("/")[:-1])


def last_evaluation(metrics_file) -> Optional[Dict[str, float]]:
    """The metrics of the last evaluation logged in a Detectron2 ``metrics.json``.

    The last line holding evaluation keys (``segm/...``, ``bbox/...``, ``pathology/...``,
    possibly behind a dataset prefix) gives the iteration; the evaluation keys of every line
    of that iteration are merged, later lines winning (a resumed run rewrites iterations).
    Unreadable lines are skipped.

    Args:
        metrics_file: the ``metrics.json`` file.

    Returns:
        dict or None: the evaluation keys with ``iteration`` (and ``epoch`` when logged), or
        None when no evaluation was logged.
    """
    records = []
    for line in Path(metrics_file).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and is_number(record.get("iteration")):
            records.append(record)
    evals = [r for r in records if any(_is_eval_key(k) for k in r)]
    if not evals:
        return None
    iteration = evals[-1]["iteration"]
    merged: Dict[str, float] = {"iteration": int(iteration)}
    for record in records:
        if record["iteration"] != iteration:
            continue
        for key, value in record.items():
            if (_is_eval_key(key) or key == "epoch") and (is_number(value) or value is None):
                merged[key] = float(value) if value is not None else math.nan
    return merged


def strip_dataset_prefix(evaluation: Dict[str, float], dataset: Optional[str]) -> Dict[str, float]:
    """The evaluation's keys as ``segm/AP50``...: Detectron2 prefixes them with the dataset's
    name (``cells_val/segm/AP50``) when several datasets are evaluated."""
    prefix = f"{dataset}/" if dataset else None
    if prefix and any(k.startswith(prefix) for k in evaluation):
        return {k[len(prefix):]: v for k, v in evaluation.items() if k.startswith(prefix)}
    return {k: v for k, v in evaluation.items() if k.split("/")[0] in EVAL_TASKS}


# ----------------------------------------------------------------------- settings


def _show(value) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "(none)"
    if value == "":
        return '""'
    return str(value)


def settings_section(run_dir: Path, config: Optional[Dict], config_problem: str) -> Section:
    """The settings table: the config's key settings, the split and the run's files,
    collapsed (the headline and metrics come first)."""
    section = Section("settings", "Settings",
                      collapsed=f"Show the {len(SETTINGS)} key settings of config.yaml and the "
                                "run's files")
    if config is None:
        section.missing = config_problem
    else:
        rows = [(label, key, _show(config_value(config, key))) for key, label in SETTINGS]
        section.body += table(["setting", "config key", "value"], rows, text_columns=3)
    split_file = run_dir / SPLIT_FILE
    rows = [("run folder", str(run_dir.resolve()))]
    if split_file.is_file():
        try:
            split = json.loads(split_file.read_text(encoding="utf-8"))
            rows += [("training images", str(len(split.get("train_names", [])))),
                     ("validation images", str(len(split.get("val_names", []))))]
        except (ValueError, AttributeError) as e:
            rows.append((SPLIT_FILE, f"unreadable ({e})"))
    for name in (f"{BEST_MODEL}.pth", f"{FINAL_MODEL}.pth"):
        path = run_dir / name
        rows.append((name, f"{path.stat().st_size / 2**20:.1f} MiB" if path.is_file()
                     else "not written"))
    section.body += "<h3>Run</h3>" + table(["item", "value"], rows, text_columns=2)
    return section


# ------------------------------------------------------------------------- curves


def curves_section(run: RunCurves, prefix: str, metric: str, mode: str) -> Section:
    """The training curves: :func:`seg_project.analysis.plots.plot_runs`'s figures and the
    pathology metrics per evaluation, embedded."""
    from .plots import plot_runs

    section = Section("curves", "Training curves")
    figures: List[Tuple[str, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="seg_project_report_") as tmp:
        if metric not in run.series:
            metric, mode = "segm/AP50", "max"
        for path in plot_runs([run], tmp, metric=metric, mode=mode):
            figures.append((_FIGURE_CAPTIONS.get(path.name, path.stem), path.read_bytes()))
    for caption, png in figures:
        section.body += (f"<figure>{img_tag(png, caption)}<figcaption>"
                         f"{paragraph(caption)}</figcaption></figure>\n")
    if not figures:
        section.missing = "metrics.json holds none of the plotted series"
    elif not any(k.startswith(f"{prefix}segm/") for k in run.series):
        section.notes.append("No evaluation in metrics.json: AP curves are missing.")
    if run.iters_per_epoch is None:
        section.notes.append("Epoch length unknown: curves are per iteration.")
    return section


# ------------------------------------------------------------------ final metrics


def _cell(metrics: Dict[str, float], key: str) -> Tuple[str, Dict[str, object]]:
    return format_metric(key, metrics.get(key)), {"data-key": key}


def _coco_tables(metrics: Dict[str, float], class_names: Sequence[str]) -> str:
    tasks = [t for t in ("segm", "bbox") if any(k.startswith(f"{t}/") for k in metrics)]
    if not tasks:
        return paragraph("No COCO AP in the last evaluation.", "note")
    out = []
    rows, attrs = [], []
    for task in tasks:
        cells = [_cell(metrics, f"{task}/{name}") for name in COCO_COLUMNS]
        rows.append([task] + [c[0] for c in cells])
        attrs.append([None] + [c[1] for c in cells])
    out.append("<h3>COCO AP, grader-exact (at most 100 detections per image and class; "
               "percent)</h3>")
    out.append(table(["task", *COCO_COLUMNS], rows, attrs, table_id="coco-ap"))
    caps = sorted({int(m.group(1)) for m in map(_HIGH_CAP_KEY.match, metrics) if m})
    cap_columns = [f"{name}@{cap}" for cap in caps for name in ("AP", "AP50", "AP75")]
    if cap_columns:
        rows, attrs = [], []
        for task in tasks:
            cells = [_cell(metrics, f"{task}/{name}") for name in cap_columns]
            rows.append([task] + [c[0] for c in cells])
            attrs.append([None] + [c[1] for c in cells])
        out.append("<h3>COCO AP, high cap (not what the grader scores; percent)</h3>")
        out.append(table(["task", *cap_columns], rows, attrs, table_id="coco-ap-high-cap"))
    names = ["AP", "AP50"] + [f"AP50@{cap}" for cap in caps]
    columns = [(task, name) for task in tasks for name in names
               if any(f"{task}/{name}-{c}" in metrics for c in class_names)]
    if columns:
        rows, attrs = [], []
        for class_name in class_names:
            cells = [_cell(metrics, f"{task}/{name}-{class_name}") for task, name in columns]
            rows.append([class_name] + [c[0] for c in cells])
            attrs.append([None] + [c[1] for c in cells])
        out.append("<h3>COCO AP per class (percent)</h3>")
        out.append(table(["class", *[f"{t} {n}" for t, n in columns]], rows, attrs,
                         table_id="coco-ap-per-class"))
    return "\n".join(out)


def _pathology_tables(metrics: Dict[str, float], class_names: Sequence[str],
                      setting: str) -> str:
    if not any(k.startswith("pathology/") for k in metrics):
        return paragraph("No pathology metrics in the last evaluation "
                         "(TEST.PATHOLOGY.ENABLED off?).", "note")
    keys = ["pathology/num_images"] + [f"pathology/{n}" for n in PATHOLOGY_COLUMNS]
    cells = [_cell(metrics, key) for key in keys]
    out = [f"<h3>Pathology metrics (fractions; {escape(setting)})</h3>",
           table(["images", *PATHOLOGY_COLUMNS], [[c[0] for c in cells]],
                 [[c[1] for c in cells]], text_columns=0, table_id="pathology")]
    counted = [(key, label) for key, label in SETTING_COLUMNS if key in metrics]
    if counted:  # what the evaluation logged beside the metrics
        cells = [_cell(metrics, key) for key, _ in counted]
        out.append(table([label for _, label in counted], [[c[0] for c in cells]],
                         [[c[1] for c in cells]], text_columns=0,
                         table_id="pathology-setting"))
    rows, attrs = [], []
    for class_name in class_names:
        cells = [_cell(metrics, f"pathology/{n}-{class_name}") for n in ("PQ", "F1")]
        rows.append([class_name] + [c[0] for c in cells])
        attrs.append([None] + [c[1] for c in cells])
    if rows:
        out.append(table(["class", "PQ", "F1"], rows, attrs, table_id="pathology-per-class"))
    return "\n".join(out)


def final_metrics_section(evaluation: Optional[Dict[str, float]], metrics: Dict[str, float],
                          class_names: Sequence[str], best_line: str,
                          pathology_setting: str = "") -> Section:
    """The final evaluation's tables: COCO AP (overall, high cap, per class) and the
    pathology metrics (overall, per class) with the predictions they counted.

    Args:
        evaluation: :func:`last_evaluation`'s record (None: no evaluation was logged).
        metrics: its metrics without the dataset prefix (:func:`strip_dataset_prefix`).
        class_names: the classes, in order.
        best_line: a sentence on the best evaluation ("" for none).
        pathology_setting: which predictions the pathology metrics counted
            (:func:`seg_project.evaluation.pathology.setting_text`).
    """
    section = Section("final-metrics", "Final metrics")
    if evaluation is None:
        section.missing = ("metrics.json holds no evaluation (TEST.EVAL_PERIOD 0, or the run "
                           "stopped before its first evaluation)")
        return section
    epoch = evaluation.get("epoch")
    when = f"iteration {evaluation['iteration']}"
    if epoch is not None and math.isfinite(epoch):
        when += f" (epoch {epoch:g})"
    section.notes.append(f"The last evaluation in metrics.json, at {when}. "
                         f"{UNDEFINED} = undefined (no instance of the class on either side).")
    if best_line:
        section.notes.append(best_line)
    section.body = (_coco_tables(metrics, class_names) + "\n"
                    + _pathology_tables(metrics, class_names, pathology_setting))
    return section
