"""From command-line arguments to a ready config and run folder (used by tools/train_net.py).

A run is prepared in two steps so that bad input never leaves a trace in ``OUTPUT_DIR``:

1. :func:`plan_run` reads and checks everything the run will use and writes nothing: the
   config (keys and values), every dataset of ``DATASETS.TRAIN`` and ``DATASETS.TEST``, the
   weights (read safely, fitting the model; for ``--eval-only`` also the config's classes) or
   the checkpoint that ``--resume`` continues from (readable, fitting, and whether anything is
   left to do).
2. :func:`start_run` sets up logging and the run folder (``config.yaml``, ``log.txt``,
   ``cells_split.json``).

:func:`setup_cfg` does both.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import (
    CellsCheckpointer,
    ResumePoint,
    config_asks,
    find_resume_point,
    predictor_outputs,
    read_weights,
)
from ..config import check_config, load_config, register_datasets_from_config, resolve_epochs
from ..data.catalog import write_split_file
from ..data.intensity import IntensityRule, read_intensity_rule_file, write_intensity_rule_file
from ..data.score_threshold import resolve_score_threshold
from ..data.stats import compute_intensity_rule
from ..utils.atomic_files import naming_target, remove_stale_temporaries
from ..utils.device import resolve_device
from ..utils.errors import ConfigError, DatasetError
from ..utils.run_files import (
    CONFIG_FILE,
    INTENSITY_RULE_FILE,
    LAST_CHECKPOINT_FILE,
    LOG_FILE,
    REPORT_FILE,
    SPLIT_FILE,
)
from .write_errors import log_write_errors_unreported, stop_on_log_write_errors

__all__ = [
    "RunPlan",
    "check_weights",
    "evaluate_weights",
    "finalize_config",
    "model_skeleton",
    "plan_run",
    "setup_cfg",
    "start_run",
    "validate_datasets",
]

logger = logging.getLogger("seg_project")

# What a run writes into its folder through temporary files (utils/atomic_files).
RUN_FOLDER_WRITES = ("model_*.pth", LAST_CHECKPOINT_FILE, INTENSITY_RULE_FILE, SPLIT_FILE,
                     REPORT_FILE)


def _check_split_folder(name: str) -> None:
    """A clear error for a cells_* split whose ``train/`` folder is missing or empty (the
    split itself would only say that no folder was chosen for it)."""
    metadata = MetadataCatalog.get(name)
    if not metadata.get("split", None) or metadata.get("evaluator_type", "") != "coco":
        return
    folder = metadata.get("image_root", "")
    if not folder:
        return
    if not os.path.isdir(folder):
        raise DatasetError(folder, f"dataset folder not found (dataset {name}; set "
                                   "DATASETS.CELLS.ROOT to a dataset root in the course layout)")
    if not any(entry.is_dir() and not entry.name.startswith(".")
               for entry in os.scandir(folder)):
        raise DatasetError(folder, f"holds no image folders (<name>/image.tif, classN.tif), so "
                                   f"dataset {name} is empty; check DATASETS.CELLS.ROOT")


def validate_datasets(names: Sequence[str], key: str = "DATASETS") -> List[Dict]:
    """Read (and so check) every dataset in ``names``; writes nothing but the conversion cache.

    Args:
        names: registered dataset names.
        key: the config key they come from, named when one is not registered.

    Returns:
        list[dict]: the records of all of them (each dataset once).

    Raises:
        ConfigError: a name that is not registered.
        DatasetError: a missing or empty folder, or any bad file (naming it and the problem).
    """
    records: List[Dict] = []
    for name in dict.fromkeys(names):
        if name not in DatasetCatalog.list():
            known = ", ".join(sorted(n for n in DatasetCatalog.list() if n.startswith("cells")))
            raise ConfigError(key, f"dataset {name!r} is not registered (this project's: "
                                   f"{known})")
        _check_split_folder(name)
        records += DatasetCatalog.get(name)
    return records


def finalize_config(cfg, eval_only: bool = False) -> list:
    """Make a merged config ready to run, in place (``cfg`` must not be frozen); reads and
    checks every dataset the run will use, and writes nothing.

    - Config values that would fail later are checked
      (:func:`seg_project.config.check_config`).
    - ``MODEL.DEVICE`` cuda without a GPU falls back to cpu.
    - The cells_* datasets are registered for ``DATASETS.CELLS``; every dataset of
      ``DATASETS.TEST`` (and, for training, ``DATASETS.TRAIN``) is loaded, so bad data stops
      the run here, naming the file.
    - For training, ``SOLVER.EPOCHS`` is resolved against the training set's size.

    Returns:
        list[str]: what was decided, for the log.

    Raises:
        ConfigError, DatasetError: see above.
    """
    notes = []
    check_config(cfg, eval_only)
    cfg.MODEL.DEVICE, note = resolve_device(cfg.MODEL.DEVICE)
    if note:
        notes.append(f"MODEL.DEVICE {note}")
    register_datasets_from_config(cfg)
    if not eval_only:
        train_records = validate_datasets(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
        notes.append(resolve_epochs(cfg, len(train_records)))
    else:
        train_records = None
    validate_datasets(cfg.DATASETS.TEST, "DATASETS.TEST")
    notes += _resolve_intensity_rule(cfg, train_records)
    return notes


def _resolve_intensity_rule(cfg, train_records: Optional[List[Dict]]) -> List[str]:
    """Fill ``INPUT.INTENSITY_RANGE`` when empty: from the training images (``train_records``
    given: training), or from the ``intensity_rule.json`` beside ``MODEL.WEIGHTS``
    (evaluation)."""
    try:
        rule = IntensityRule.from_config(cfg.INPUT.INTENSITY_RANGE)
    except ValueError as e:
        raise ConfigError("INPUT.INTENSITY_RANGE", str(e)) from None
    if rule is not None:
        return []
    if train_records is None:
        rule = read_intensity_rule_file(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else None
        source = "beside MODEL.WEIGHTS"
    else:
        rule = compute_intensity_rule(r["file_name"] for r in train_records)
        source = "from the training images"
    if rule is None:
        return []
    cfg.INPUT.INTENSITY_RANGE = rule.to_config()
    return [f"INPUT.INTENSITY_RANGE {rule.to_config()} ({source}): 16-bit/float values in "
            "this range map linearly to 0..255"]


@dataclass
class RunPlan:
    """A checked run, before anything is written (see :func:`plan_run`).

    Attributes:
        cfg: the finalized, frozen config.
        notes: what was decided, for the log.
        resume_from: the checkpoint ``--resume`` continues from, if any.
        nothing_to_do: set when ``--resume`` finds a finished or early-stopped run: why there
            is nothing to do (the run folder is then left as it is).
    """

    cfg: object
    notes: List[str] = field(default_factory=list)
    resume_from: Optional[ResumePoint] = None
    nothing_to_do: Optional[str] = None


def model_skeleton(cfg):
    """The config's model with its parameters on the meta device: the names and shapes of
    its weights, built in a fraction of a second without memory for them."""
    from detectron2.modeling import build_model

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg)


def check_weights(cfg, eval_only: bool = False) -> None:
    """Read ``MODEL.WEIGHTS`` (downloading a URL) and check it against the config's model
    (:meth:`CellsCheckpointer.fitted_state`), before anything is written.

    The weights must hold some of the model's tensors; for evaluation the box and mask
    predictors must also fit the config's classes (for training, layers of another shape
    start fresh).

    Raises:
        WeightsNotFoundError: missing file or failed download.
        WeightsError: unreadable, weights of another model, or (``eval_only``) predictors
            that do not fit the config.
        ConfigError: ``eval_only`` without ``MODEL.WEIGHTS``.
    """
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        if eval_only:
            raise ConfigError("MODEL.WEIGHTS", "is empty: --eval-only needs the weights to "
                                               "evaluate")
        return
    checkpoint = read_weights(weights)
    CellsCheckpointer(model_skeleton(cfg)).fitted_state(
        checkpoint, weights, config_asks(cfg) if eval_only else None)


def plan_run(args) -> RunPlan:
    """Read and check everything a ``tools/train_net.py`` run will use; write nothing.

    Args:
        args: Detectron2's ``default_argument_parser`` namespace (``config_file``, ``opts``,
            ``eval_only``, ``resume``).

    Returns:
        RunPlan: the frozen config and what to do.

    Raises:
        UserInputError: (``ConfigError``, ``DatasetError``, ``WeightsError``) naming the key or
            file and the problem.
    """
    cfg = load_config(args.config_file, args.opts)
    notes = finalize_config(cfg, eval_only=args.eval_only)
    cfg.freeze()
    plan = RunPlan(cfg, notes)
    if args.eval_only:
        check_weights(cfg, eval_only=True)
        return plan
    if args.resume:
        point = find_resume_point(cfg.OUTPUT_DIR, predictor_outputs(cfg), config_asks(cfg))
        if point is not None:
            plan.resume_from = point
            if point.stopped_early:
                reason = point.stopped_early.get("reason") or "early stopping"
                plan.nothing_to_do = (
                    f"{point.path}: this run stopped early at iteration "
                    f"{point.stopped_early.get('iteration', point.iteration)} ({reason}); "
                    "--resume has nothing to do. To train on, start a new run (another "
                    f"OUTPUT_DIR) with MODEL.WEIGHTS {point.path}.")
            elif point.iteration + 1 >= cfg.SOLVER.MAX_ITER:
                plan.nothing_to_do = (
                    f"{point.path}: training already finished ({cfg.SOLVER.MAX_ITER} "
                    "iterations); --resume has nothing to do (raise SOLVER.EPOCHS or "
                    "SOLVER.MAX_ITER to train longer).")
            return plan
    check_weights(cfg)
    return plan


def start_run(plan: RunPlan, args):
    """Set up logging and the run folder of a checked run: ``config.yaml`` (with the resolved
    iterations), ``log.txt``, ``cells_split.json``.

    Returns:
        the frozen config.
    """
    cfg = plan.cfg
    # A full disk names the file: config.yaml here, log.txt from the first line logged after.
    with log_write_errors_unreported(), naming_target(os.path.join(cfg.OUTPUT_DIR,
                                                                     CONFIG_FILE)):
        default_setup(cfg, args)
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="seg_project",
                     abbrev_name="seg")
    if comm.is_main_process():
        stop_on_log_write_errors(os.path.join(cfg.OUTPUT_DIR, LOG_FILE))
    for note in plan.notes:
        logger.info(note)
    if plan.resume_from is not None:
        logger.info(f"Resuming from {plan.resume_from.path} (iteration "
                    f"{plan.resume_from.iteration})")
        if comm.is_main_process():
            stale = remove_stale_temporaries(cfg.OUTPUT_DIR, RUN_FOLDER_WRITES)
            if stale:
                logger.info(f"Removed {len(stale)} temporary file(s) that the interrupted run "
                            f"left: {', '.join(p.name for p in stale)}")
    if comm.is_main_process():
        split_file = write_split_file(cfg.OUTPUT_DIR,
                                      list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
        if split_file:
            logger.info(f"Train/val split written to {split_file}")
        if not args.eval_only:  # beside the checkpoints, for predict.py with any config
            write_intensity_rule_file(cfg.OUTPUT_DIR,
                                      IntensityRule.from_config(cfg.INPUT.INTENSITY_RANGE))
    if cfg.MODEL.DEVICE == "cpu" and comm.get_local_size() > 1:
        # Processes share the cores; more threads than cores only adds contention.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
    return cfg


def setup_cfg(args):
    """Config file + ``KEY VALUE`` overrides -> finalized, frozen config; checks the data and
    weights first (:func:`plan_run`), then sets up logging and the output folder
    (:func:`start_run`).

    Args:
        args: Detectron2's ``default_argument_parser`` namespace.

    Raises:
        UserInputError: bad config, data or weights (nothing is written then).
    """
    return start_run(plan_run(args), args)


def evaluate_weights(cfg, trainer_class=None):
    """Load ``MODEL.WEIGHTS`` (its predictors must fit the config's classes) and evaluate on
    ``DATASETS.TEST`` (also with test-time augmentation when ``TEST.AUG.ENABLED``); returns
    the results dict. The pathology metrics count the cells at the weights' operating point
    (``operating_point.json`` beside them) unless the config sets a threshold."""
    from .trainer import CellsTrainer

    trainer_class = trainer_class or CellsTrainer
    threshold = resolve_score_threshold(cfg=cfg, weights_or_dir=cfg.MODEL.WEIGHTS)
    logger.info(f"Pathology metrics of the cells with {threshold.describe()}")
    if threshold.value != cfg.TEST.PATHOLOGY.SCORE_THRESHOLD:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.TEST.PATHOLOGY.SCORE_THRESHOLD = threshold.value
        cfg.freeze()
    model = trainer_class.build_model(cfg)
    CellsCheckpointer(model, save_dir=cfg.OUTPUT_DIR).load_for_inference(cfg.MODEL.WEIGHTS,
                                                                         config_asks(cfg))
    results = trainer_class.test(cfg, model)
    if cfg.TEST.AUG.ENABLED:
        tta = trainer_class.test_with_TTA(cfg, model)
        if len(cfg.DATASETS.TEST) == 1:
            results = {cfg.DATASETS.TEST[0]: results}
        for name, metrics in tta.items():
            results[name].update(metrics)
    return results
