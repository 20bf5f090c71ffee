"""The names of the files and folders in a run folder (``OUTPUT_DIR``), spelled once.

``tools/train_net.py`` writes them; prediction, the report, the curves and the benchmarks read
them. Checkpoints are saved as ``<name>.pth``.
"""

import re
from pathlib import Path

__all__ = [
    "BEST_MODEL",
    "CONFIG_FILE",
    "FINAL_MODEL",
    "INFERENCE_DIR",
    "INTENSITY_RULE_FILE",
    "LAST_CHECKPOINT_FILE",
    "LOCK_FILE",
    "LOG_FILE",
    "METRICS_FILE",
    "OPERATING_POINT_FILE",
    "PERIODIC_CHECKPOINT_RE",
    "REPORT_FILE",
    "RESULTS_FILE",
    "SPLIT_FILE",
    "TTA_INFERENCE_DIR",
    "results_file",
]

# The resolved config of the run (written by Detectron2's default_setup).
CONFIG_FILE = "config.yaml"
# The run's log (Detectron2's setup_logger).
LOG_FILE = "log.txt"
# Training and evaluation scalars, one JSON object per line (Detectron2's JSONWriter).
METRICS_FILE = "metrics.json"
# The train/val split: the folder names of each (seg_project.data.catalog.write_split_file).
SPLIT_FILE = "cells_split.json"
# How 16-bit and float images map to uint8, beside the weights (seg_project.data.intensity).
INTENSITY_RULE_FILE = "intensity_rule.json"
# The score threshold chosen on the evaluation split, beside the weights
# (seg_project.evaluation.operating_point, read by seg_project.data.score_threshold).
OPERATING_POINT_FILE = "operating_point.json"
# The name of the checkpoint --resume continues from (the file fvcore's Checkpointer reads).
LAST_CHECKPOINT_FILE = "last_checkpoint"
# The checkpoint of the best evaluation (TEST.BEST_METRIC), saved as model_best.pth.
BEST_MODEL = "model_best"
# The checkpoint after the last iteration, saved as model_final.pth.
FINAL_MODEL = "model_final"
# Periodic checkpoints: model_<iteration, 7 digits>.pth.
PERIODIC_CHECKPOINT_RE = re.compile(r"^model_(\d{7})\.pth$")
# The evaluation's outputs, one folder per dataset: inference/<dataset>/.
INFERENCE_DIR = "inference"
# The same with test-time augmentation: inference_TTA/<dataset>/.
TTA_INFERENCE_DIR = "inference_TTA"
# An evaluation's predictions (COCO result entries), in inference/<dataset>/.
RESULTS_FILE = "coco_instances_results.json"
# The run's HTML report (seg_project.analysis.report).
REPORT_FILE = "report.html"
# Held by the run that uses the folder: its pid, host and start time
# (seg_project.utils.run_lock).
LOCK_FILE = ".lock"


def results_file(run_dir, dataset: str) -> Path:
    """``<run_dir>/inference/<dataset>/coco_instances_results.json``: the predictions of the
    run's evaluation of ``dataset``."""
    return Path(run_dir) / INFERENCE_DIR / dataset / RESULTS_FILE
