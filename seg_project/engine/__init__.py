"""Training, one job per module:

- :mod:`.setup`: from the command line to a checked config and a started run folder
  (:func:`plan_run`, :func:`start_run`), and ``--eval-only`` (:func:`evaluate_weights`);
- :mod:`.trainer`: :class:`CellsTrainer`, Detectron2's ``DefaultTrainer`` epoch by epoch;
- :mod:`.hooks`: epoch checkpoints, the best model, early stopping, epoch logging;
- :mod:`.mixed_precision`: the training step with AMP on CUDA and on CPUs;
- :mod:`.report`: the run's report, written when training ends;
- :mod:`.write_errors`: a failed write (a full disk) to ``metrics.json`` or ``log.txt`` stops
  the run with one error naming the file.

Checkpoints are read and written by :mod:`seg_project.checkpoint` (shared with inference).
"""

from .setup import evaluate_weights, finalize_config, plan_run, setup_cfg, start_run
from .trainer import CellsTrainer

__all__ = [
    "CellsTrainer",
    "evaluate_weights",
    "finalize_config",
    "plan_run",
    "setup_cfg",
    "start_run",
]
