"""Reading, fitting and writing weights, and resume points: used by training and inference.

- :mod:`.fit`: whether a checkpoint's class-dependent layers fit a config
  (:func:`~.fit.predictor_outputs`, :func:`~.fit.check_predictors`, :func:`~.fit.config_asks`);
- :mod:`.checkpointer`: :class:`~.checkpointer.CellsCheckpointer` (atomic saves, clear errors
  about weights files) and :func:`~.checkpointer.read_weights`;
- :mod:`.resume`: :func:`~.resume.find_resume_point`, the checkpoint ``--resume`` continues
  from, read and checked before anything is written;
- :mod:`.safe_load`: :func:`~.safe_load.read_weights_file`, every weights file read without
  running code it may hold (``SEG_PROJECT_TRUSTED_WEIGHTS`` names the user's trusted
  exceptions).
"""

from .checkpointer import CellsCheckpointer, WeightsNotFoundError, read_weights
from .fit import PREDICTOR_LAYERS, check_predictors, config_asks, predictor_outputs
from .resume import ResumePoint, find_resume_point
from .safe_load import TRUSTED_WEIGHTS_ENV, read_weights_file

__all__ = [
    "PREDICTOR_LAYERS",
    "TRUSTED_WEIGHTS_ENV",
    "CellsCheckpointer",
    "ResumePoint",
    "WeightsNotFoundError",
    "check_predictors",
    "config_asks",
    "find_resume_point",
    "predictor_outputs",
    "read_weights",
    "read_weights_file",
]
