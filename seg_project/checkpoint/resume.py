"""Where ``--resume`` continues from: the run's newest checkpoint, read and checked before
anything is written."""

import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

import torch

from ..utils.errors import WeightsError
from ..utils.run_files import PERIODIC_CHECKPOINT_RE
from .checkpointer import CellsCheckpointer, read_weights
from .fit import check_predictors

__all__ = ["ResumePoint", "find_resume_point"]


@dataclass
class ResumePoint:
    """The checkpoint ``--resume`` continues from, as read by :func:`find_resume_point`.

    Attributes:
        path: the checkpoint file.
        iteration: the last iteration it holds (0-based).
        stopped_early: what the trainer recorded when it stopped early (``iteration``,
            ``reason``), else None.
    """

    path: str
    iteration: int
    stopped_early: Optional[Dict] = None


def _older_checkpoints(folder: str, than: str) -> List[str]:
    """Periodic checkpoints of ``folder`` older than ``than``, newest first."""
    names = sorted((n for n in os.listdir(folder) if PERIODIC_CHECKPOINT_RE.match(n)),
                   reverse=True)
    base = os.path.basename(than)
    match = PERIODIC_CHECKPOINT_RE.match(base)
    if match:
        names = [n for n in names if n < base]
    return [os.path.join(folder, n) for n in names]


def _resume_advice(folder: str, broken: str) -> str:
    for candidate in _older_checkpoints(folder, broken):
        try:
            data = read_weights(candidate)
        except WeightsError:
            continue
        if "trainer" in data:
            return (f" The older checkpoint {candidate} is complete: delete {broken} (or move "
                    "it away) and --resume again to continue from it, or start a new run from "
                    f"its weights with MODEL.WEIGHTS {candidate}.")
    return (" No older complete checkpoint is there: start again without --resume (in a new "
            "OUTPUT_DIR), or from saved weights with MODEL.WEIGHTS.")


def find_resume_point(output_dir: str, expected: Mapping[str, object] = None,
                      asks: str = "") -> Optional[ResumePoint]:
    """Find and read the checkpoint ``--resume`` would continue from, writing nothing.

    Args:
        output_dir: the run folder (``OUTPUT_DIR``).
        expected: predictor shapes the config needs (see :func:`predictor_outputs`).
        asks: what the config asks for, for errors (see :func:`config_asks`).

    Returns:
        ResumePoint or None: None when the folder holds no checkpoint (a new run).

    Raises:
        WeightsError: the checkpoint is missing, unreadable, holds no training state or does
            not fit the config; the message names it and, if there is one, an older complete
            checkpoint and how to use it.
    """
    checkpointer = CellsCheckpointer(torch.nn.Module(), save_dir=output_dir)
    if not checkpointer.has_checkpoint():
        return None
    path = checkpointer.get_checkpoint_file()
    if not os.path.isfile(path):
        raise WeightsError(path, "is named by last_checkpoint (the checkpoint --resume "
                                 "continues from) but is missing." + _resume_advice(output_dir,
                                                                                   path))
    try:
        data = checkpointer._load_file(path)
    except WeightsError as e:
        raise WeightsError(path, f"{e.problem}; --resume cannot continue from it."
                           + _resume_advice(output_dir, path)) from None
    trainer = data.get("trainer")
    if not isinstance(trainer, Mapping) or "iteration" not in trainer:
        raise WeightsError(path, "holds no training state (iteration, optimizer): it is not a "
                                 "training checkpoint, and --resume cannot continue from it."
                           + _resume_advice(output_dir, path))
    if expected:
        check_predictors(data.get("model", {}), expected, path, asks)
    return ResumePoint(path, int(trainer["iteration"]), trainer.get("stopped_early"))
