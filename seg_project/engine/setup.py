"""From command-line arguments to a ready config and run folder (used by tools/train_net.py)."""

import logging
import os

import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import default_setup
from detectron2.utils import comm

from ..config import get_seg_project_cfg, register_datasets_from_config, resolve_epochs
from ..data.catalog import write_split_file

__all__ = ["evaluate_weights", "finalize_config", "setup_cfg"]

logger = logging.getLogger("seg_project")


def finalize_config(cfg, eval_only: bool = False) -> list:
    """Make a merged config ready to run, in place (``cfg`` must not be frozen).

    - ``MODEL.DEVICE`` cuda without a GPU falls back to cpu.
    - The cells_* datasets are registered for ``DATASETS.CELLS``.
    - For training, ``SOLVER.EPOCHS`` is resolved against the training set's size (which
      loads, and so checks, the training data before anything else runs).

    Returns:
        list[str]: what was decided, for the log.
    """
    notes = []
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
        notes.append("MODEL.DEVICE is cuda but no GPU is available: using the CPU.")
    register_datasets_from_config(cfg)
    if not eval_only:
        num_images = sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TRAIN)
        notes.append(resolve_epochs(cfg, num_images))
    return notes


def setup_cfg(args):
    """Config file + ``KEY VALUE`` overrides -> finalized, frozen config; sets up logging and
    the output folder (``config.yaml`` with the resolved iterations, ``cells_split.json``).

    Args:
        args: Detectron2's ``default_argument_parser`` namespace.
    """
    cfg = get_seg_project_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    notes = finalize_config(cfg, eval_only=args.eval_only)
    cfg.freeze()
    default_setup(cfg, args)
    for note in notes:
        logger.info(note)
    if comm.is_main_process():
        split_file = write_split_file(cfg.OUTPUT_DIR,
                                      list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
        if split_file:
            logger.info(f"Train/val split written to {split_file}")
    if cfg.MODEL.DEVICE == "cpu" and comm.get_local_size() > 1:
        # Processes share the cores; more threads than cores only adds contention.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
    return cfg


def evaluate_weights(cfg, trainer_class=None):
    """Load ``MODEL.WEIGHTS`` and evaluate on ``DATASETS.TEST`` (also with test-time
    augmentation when ``TEST.AUG.ENABLED``); returns the results dict."""
    from .checkpointer import CellsCheckpointer
    from .trainer import CellsTrainer

    trainer_class = trainer_class or CellsTrainer
    model = trainer_class.build_model(cfg)
    CellsCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS,
                                                                     resume=False)
    results = trainer_class.test(cfg, model)
    if cfg.TEST.AUG.ENABLED:
        tta = trainer_class.test_with_TTA(cfg, model)
        if len(cfg.DATASETS.TEST) == 1:
            results = {cfg.DATASETS.TEST[0]: results}
        for name, metrics in tta.items():
            results[name].update(metrics)
    return results
