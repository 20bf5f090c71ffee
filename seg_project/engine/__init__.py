"""Training: the trainer, its hooks, mixed precision, checkpointing and run setup."""

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
