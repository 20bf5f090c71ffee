"""Epoch-aware training hooks: checkpoints, the best model, early stopping, epoch logging."""

import logging
import math
import os

from detectron2.engine import HookBase
from detectron2.engine.hooks import EvalHook
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, get_event_storage

from ..config import check_best_metric_mode
from ..utils.run_files import BEST_MODEL, FINAL_MODEL, PERIODIC_CHECKPOINT_RE

__all__ = [
    "BestCheckpointHook",
    "EpochCheckpointer",
    "EpochEvalHook",
    "EpochMetricPrinter",
    "EpochScalarHook",
]

logger = logging.getLogger(__name__)


def epoch_of(iteration: int, iters_per_epoch: int) -> float:
    """Epochs completed after ``iteration`` (0-based) finished."""
    return (iteration + 1) / iters_per_epoch


class EpochScalarHook(HookBase):
    """Records ``epoch`` (fractional, after each iteration) in the event storage, so that
    ``metrics.json`` lines carry it next to losses and evaluation results."""

    def __init__(self, iters_per_epoch: int):
        self._iters_per_epoch = iters_per_epoch

    def after_step(self):
        epoch = epoch_of(self.trainer.iter, self._iters_per_epoch)
        self.trainer.storage.put_scalar("epoch", epoch, smoothing_hint=False)


def is_eval_iteration(iteration: int, period: int, max_iter: int) -> bool:
    """Whether an evaluation follows ``iteration``: every ``period`` and after the last."""
    next_iter = iteration + 1
    return next_iter == max_iter or (period > 0 and next_iter % period == 0)


class EpochEvalHook(EvalHook):
    """Detectron2's ``EvalHook``, but the final evaluation also runs after the last
    iteration's step (not in ``after_train``): it is then recorded at that iteration (epoch E),
    written to ``metrics.json`` by the writers like every other, and part of the final
    checkpoint's state."""

    def after_step(self):
        if is_eval_iteration(self.trainer.iter, self._period, self.trainer.max_iter):
            self._do_eval()

    def after_train(self):
        del self._func  # as EvalHook: break the reference to the trainer


class EpochCheckpointer(HookBase):
    """Saves ``model_<iter>.pth`` every ``period`` iterations, keeping the newest ``keep``,
    and ``model_final.pth`` at the end (also when training stops early).

    Place it after the evaluation hooks, so that a checkpoint written at the end of an epoch
    already holds that epoch's evaluation state (best metric, early-stopping counter) and a
    resumed run neither repeats nor skips an evaluation.
    """

    def __init__(self, checkpointer, period: int, keep: int = 3):
        self._checkpointer = checkpointer
        self._period = period
        self._keep = max(1, keep)

    def after_step(self):
        iteration = self.trainer.iter
        if iteration + 1 >= self.trainer.max_iter:
            self._checkpointer.save(FINAL_MODEL, iteration=iteration)
        elif self._period > 0 and (iteration + 1) % self._period == 0:
            self._checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
            self._prune()

    def after_train(self):
        if getattr(self.trainer, "stop_requested", False):
            self._checkpointer.save(FINAL_MODEL, iteration=self.trainer.iter)

    def _prune(self):
        folder = self._checkpointer.save_dir
        periodic = sorted(name for name in os.listdir(folder) if PERIODIC_CHECKPOINT_RE.match(name))
        current = os.path.basename(self._checkpointer.get_checkpoint_file())
        for name in periodic[:-self._keep]:
            if name != current:
                os.remove(os.path.join(folder, name))


class BestCheckpointHook(HookBase):
    """After each evaluation: keep ``model_best.pth`` for the best ``metric`` so far and
    stop training after ``patience`` evaluations in a row without improvement.

    Place it right after :class:`EpochEvalHook` (same period). Its state (best value, its
    iteration, evaluations without improvement) is part of the trainer's checkpoints, so
    ``--resume`` continues it.
    """

    def __init__(self, eval_period: int, checkpointer, metric: str = "segm/AP50",
                 mode: str = "max", patience: int = 0, iters_per_epoch: int = 0):
        check_best_metric_mode(mode)
        self._period = eval_period
        self._checkpointer = checkpointer
        self._metric = metric
        self._mode = mode
        self._patience = patience
        self._iters_per_epoch = iters_per_epoch
        self.best_value = None
        self.best_iteration = None
        self.evals_without_improvement = 0
        self._warned = False

    def _when(self, iteration: int) -> str:
        if self._iters_per_epoch:
            return f"epoch {epoch_of(iteration, self._iters_per_epoch):g}"
        return f"iteration {iteration}"

    def _improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self._mode == "max" else value < self.best_value

    def _check(self):
        stop = False
        if comm.is_main_process():
            latest = self.trainer.storage.latest().get(self._metric)
            if latest is None:
                if not self._warned:
                    logger.warning(f"TEST.BEST_METRIC {self._metric} is not among the evaluation "
                                   "results; no model_best.pth will be written.")
                    self._warned = True
            elif latest[1] == self.trainer.iter:
                value, iteration = float(latest[0]), int(latest[1])
                if self._improves(value):
                    self.best_value, self.best_iteration = value, iteration
                    self.evals_without_improvement = 0
                    self._checkpointer.save(BEST_MODEL, tag_last=False, iteration=iteration)
                else:
                    self.evals_without_improvement += 1
                best = self.best_value if self.best_value is not None else float("nan")
                logger.info(f"{self._metric} = {value:.3f} at {self._when(iteration)}; best "
                            f"{best:.3f} at {self._when(self.best_iteration or 0)}")
                stop = 0 < self._patience <= self.evals_without_improvement
        if any(comm.all_gather(stop)) and not self.trainer.stop_requested:
            reason = (f"{self._metric} did not improve for {self._patience} evaluations (best "
                      f"{self.best_value} at {self._when(self.best_iteration or 0)})")
            logger.info(f"Early stopping: {reason}.")
            self.trainer.request_stop(reason)

    def after_step(self):
        if is_eval_iteration(self.trainer.iter, self._period, self.trainer.max_iter):
            self._check()

    def state_dict(self):
        return {"best_value": self.best_value, "best_iteration": self.best_iteration,
                "evals_without_improvement": self.evals_without_improvement}

    def load_state_dict(self, state_dict):
        self.best_value = state_dict["best_value"]
        self.best_iteration = state_dict["best_iteration"]
        self.evals_without_improvement = state_dict["evals_without_improvement"]


class _EpochPrefix(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"{self.extra['printer'].epoch_text()}{msg}", kwargs


class EpochMetricPrinter(CommonMetricPrinter):
    """Detectron2's console line (ETA, iteration, losses, time, lr) prefixed by
    ``epoch e/E``."""

    def __init__(self, max_iter: int, iters_per_epoch: int, window_size: int = 20):
        super().__init__(max_iter, window_size=window_size)
        self._iters_per_epoch = iters_per_epoch
        self._epochs = math.ceil(max_iter / iters_per_epoch) if iters_per_epoch else 0
        self.logger = _EpochPrefix(logging.getLogger("detectron2.utils.events"),
                                   {"printer": self})
        self._last_printed = None

    def write(self):
        # PeriodicWriter also writes in after_train, at the iteration it just printed (this
        # trainer's final iteration is not max_iter); printing it twice would divide by zero
        # in Detectron2's ETA estimate.
        iteration = get_event_storage().iter
        if iteration != self._last_printed:
            super().write()
            self._last_printed = iteration

    def epoch_text(self) -> str:
        if not self._iters_per_epoch:
            return ""
        epoch = min(get_event_storage().iter // self._iters_per_epoch + 1, self._epochs)
        return f"epoch {epoch}/{self._epochs}  "
