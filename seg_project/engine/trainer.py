"""CellsTrainer: Detectron2's DefaultTrainer for the cell datasets, epoch by epoch."""

import contextlib
import logging
import os
import weakref

from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.utils import comm
from detectron2.utils.events import EventStorage, TensorboardXWriter
from detectron2.utils.logger import setup_logger

from ..checkpoint import CellsCheckpointer, config_asks
from ..data.mapper import CellsDatasetMapper
from ..evaluation.evaluator import CellsCOCOEvaluator
from ..inference.postprocess import RLEOutputModel
from ..inference.tiling import TiledInference
from ..utils.cli import as_user_error
from ..utils.run_files import INFERENCE_DIR, METRICS_FILE, TTA_INFERENCE_DIR
from .hooks import (
    BestCheckpointHook,
    EpochCheckpointer,
    EpochEvalHook,
    EpochMetricPrinter,
    EpochScalarHook,
)
from .mixed_precision import MixedPrecisionTrainer
from .report import choose_run_operating_point
from .write_errors import NamedJSONWriter

__all__ = ["CellsTrainer"]

logger = logging.getLogger(__name__)


class CellsTrainer(DefaultTrainer):
    """``DefaultTrainer`` with the project's data mapper, evaluator, checkpointer and hooks.

    - Evaluates ``DATASETS.TEST`` with :class:`CellsCOCOEvaluator` every ``TEST.EVAL_PERIOD``
      (one epoch when ``SOLVER.EPOCHS`` is set) and after the last iteration.
    - Keeps ``model_best.pth`` by ``TEST.BEST_METRIC``, ``model_final.pth``, and the newest
      ``SOLVER.CHECKPOINTS_TO_KEEP`` periodic checkpoints, all written atomically; stops
      early after ``TEST.EARLY_STOP_PATIENCE`` evaluations without improvement.
    - At the end, chooses the run's operating point (``TEST.OPERATING_POINT``): the score
      threshold of highest PQ on ``DATASETS.TEST[0]``, in ``operating_point.json``.
    - ``SOLVER.AMP.ENABLED`` works on CUDA (float16) and on CPUs (``SOLVER.AMP.CPU_DTYPE``).
    - Logs ``epoch e/E`` with Detectron2's ETA line, and ``epoch`` into ``metrics.json``.
    - Checkpoints hold the whole training state through this class's own
      :meth:`state_dict`: iteration, hook states (best model, early stopping, LR scheduler),
      the inner trainer's (optimizer, grad scaler) and the scheduler's, whatever Detectron2
      build is installed (stock v0.6 ``DefaultTrainer`` saves only the first two); an
      early-stopped run records that it stopped, and ``--resume`` then does nothing.
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with our inner trainer and checkpointer (it hard-codes
        # AMPTrainer, which asserts CUDA, and a checkpointer that writes in place).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = self.build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = CellsCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.stop_requested = False
        self.stop_reason = ""
        self.stopped_early = None  # what a loaded checkpoint recorded about an early stop
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ builders
    @staticmethod
    def build_step_trainer(cfg, model, data_loader, optimizer) -> SimpleTrainer:
        """The inner trainer that runs one iteration (``run_step``): ``SimpleTrainer``, or
        :class:`MixedPrecisionTrainer` with ``SOLVER.AMP.ENABLED`` (float16 on CUDA,
        ``SOLVER.AMP.CPU_DTYPE`` on a CPU)."""
        if cfg.SOLVER.AMP.ENABLED:
            return MixedPrecisionTrainer(model, data_loader, optimizer,
                                         cpu_dtype=cfg.SOLVER.AMP.CPU_DTYPE)
        return SimpleTrainer(model, data_loader, optimizer)

    # ------------------------------------------------------------------ checkpointed state
    def state_dict(self) -> dict:
        """The training state a checkpoint holds (its ``"trainer"`` entry).

        Restated here rather than inherited: stock Detectron2 v0.6 ``DefaultTrainer`` has only
        ``TrainerBase``'s iteration and hook states (``tools/install_detectron2.py`` patches in
        the inner trainer), so a checkpoint is the same with and without that patch.

        Returns:
            dict: ``iteration``, ``hooks`` (per stateful hook), ``_trainer`` (the optimizer and,
            with CUDA AMP, the grad scaler), ``scheduler``, and ``stopped_early``
            (``{"iteration", "reason"}``) once training stopped early.
        """
        ret = TrainerBase.state_dict(self)
        ret["_trainer"] = self._trainer.state_dict()
        ret["scheduler"] = self.scheduler.state_dict()
        if self.stop_requested:
            ret["stopped_early"] = {"iteration": int(self.iter), "reason": self.stop_reason}
        return ret

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` saved (checkpoints of either Detectron2 build)."""
        TrainerBase.load_state_dict(self, state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("The checkpoint holds no optimizer state: momentum restarts from "
                           "zero.")
        if "scheduler" in state_dict:
            self.scheduler.load_state_dict(state_dict["scheduler"])
        self.stopped_early = state_dict.get("stopped_early")

    def resume_or_load(self, resume: bool = True) -> None:
        """``--resume``: continue from the run's newest checkpoint (its predictors must fit
        the config); otherwise load ``MODEL.WEIGHTS``, where layers of another shape (another
        task's classes) start fresh, listed in one log line.

        Raises:
            WeightsError: an unreadable checkpoint, or one that does not fit the config.
        """
        checkpointer = self.checkpointer
        if resume and checkpointer.has_checkpoint():
            checkpointer.load(checkpointer.get_checkpoint_file(),
                              require_fit=config_asks(self.cfg))
            # The checkpoint stores the iteration that just finished.
            self.start_iter = self.iter + 1
        else:
            checkpointer.load(self.cfg.MODEL.WEIGHTS, checkpointables=[])

    @classmethod
    def build_train_loader(cls, cfg):
        """Detectron2's training loader with :class:`CellsDatasetMapper` (which takes pasted
        instances from the training set when ``INPUT.COPY_PASTE.ENABLED``)."""
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        mapper = CellsDatasetMapper(cfg, is_train=True, paste_sources=dataset)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name,
                                           mapper=CellsDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, INFERENCE_DIR, dataset_name)
        os.makedirs(output_folder, exist_ok=True)
        return CellsCOCOEvaluator.from_config(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate ``model`` on ``cfg.DATASETS.TEST``; masks are pasted as RLE crops
        (binarised at ``TEST.MASK_THRESHOLD``), images larger than ``TEST.TILE.SIZE`` are
        predicted in tiles."""
        if not isinstance(model, RLEOutputModel):
            model = RLEOutputModel(model, cfg.TEST.MASK_THRESHOLD, TiledInference.from_config(cfg))
        return super().test(cfg, model, evaluators)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate ``model`` wrapped in :class:`seg_project.inference.predictor.CellsTTA`
        (flips and ``TEST.AUG.MIN_SIZES`` or ``TEST.AUG.SCALES``); result keys end in
        ``-TTA``."""
        from ..inference.predictor import CellsTTA

        evaluators = [cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, TTA_INFERENCE_DIR,
                                                                  name))
                      for name in cfg.DATASETS.TEST]
        results = super().test(cfg, CellsTTA(cfg, model, mask_threshold=cfg.TEST.MASK_THRESHOLD),
                               evaluators)
        if len(cfg.DATASETS.TEST) == 1:
            results = {cfg.DATASETS.TEST[0]: results}
        return {name: {f"{task}-TTA": metrics for task, metrics in res.items()}
                for name, res in results.items()}

    def build_writers(self):
        iters_per_epoch = self.cfg.SOLVER.ITERS_PER_EPOCH
        return [
            EpochMetricPrinter(self.max_iter, iters_per_epoch),
            NamedJSONWriter(os.path.join(self.cfg.OUTPUT_DIR, METRICS_FILE)),
            TensorboardXWriter(self.cfg.OUTPUT_DIR),
        ]

    def build_hooks(self):
        cfg = self.cfg
        iters_per_epoch = cfg.SOLVER.ITERS_PER_EPOCH
        eval_period = cfg.TEST.EVAL_PERIOD

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret = [hooks.IterationTimer(), hooks.LRScheduler()]
        if iters_per_epoch:
            ret.append(EpochScalarHook(iters_per_epoch))
        if cfg.DATASETS.TEST:
            ret.append(EpochEvalHook(eval_period, test_and_save_results))
            ret.append(BestCheckpointHook(eval_period, self.checkpointer, cfg.TEST.BEST_METRIC,
                                          cfg.TEST.BEST_METRIC_MODE, cfg.TEST.EARLY_STOP_PATIENCE,
                                          iters_per_epoch))
        if comm.is_main_process():
            # Writers before the checkpointer: when a checkpoint exists, the log lines of
            # everything it holds (the epoch's evaluation included) are already on disk.
            period = min(20, iters_per_epoch) if iters_per_epoch else 20
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=period))
            ret.append(EpochCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD,
                                         keep=cfg.SOLVER.CHECKPOINTS_TO_KEEP))
        return ret

    # ------------------------------------------------------------------ training loop
    def request_stop(self, reason: str = "") -> None:
        """Finish the current iteration's hooks, then end training (early stopping); the
        checkpoints written from now on record that (and ``reason``)."""
        self.stop_requested = True
        self.stop_reason = reason

    def train(self):
        """Run training; like ``DefaultTrainer.train`` but able to stop early. A run that
        trained chooses its operating point at the end (:func:`choose_run_operating_point`:
        the score threshold of highest PQ on ``DATASETS.TEST[0]``, from the last evaluation's
        predictions).

        Returns:
            The last evaluation results (dict), if any evaluation ran.
        """
        if self.stopped_early:
            logger.info(f"Training stopped early at iteration "
                        f"{self.stopped_early.get('iteration')} "
                        f"({self.stopped_early.get('reason') or 'early stopping'}); nothing to "
                        "do.")
            return None
        if self.start_iter >= self.max_iter:
            logger.info(f"Training already finished ({self.max_iter} iterations); nothing to do.")
            return None
        # TrainerBase.train's loop cannot end before max_iter, so it is restated here with
        # the early-stopping check; hooks see the same calls in the same order.
        logger.info(f"Starting training from iteration {self.start_iter}")
        self.iter = self.start_iter
        with EventStorage(self.start_iter) as self.storage:
            try:
                self.before_train()
                for iteration in range(self.start_iter, self.max_iter):
                    self.iter = iteration
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if self.stop_requested:
                        break
                # Unlike TrainerBase, self.iter stays at the last iteration that ran (the final
                # evaluation already ran in its after_step, see EpochEvalHook).
            except BaseException as e:
                self._end_after_failure(e)
                raise
            self.after_train()
        choose_run_operating_point(self.cfg)
        return getattr(self, "_last_eval_results", None)

    def _end_after_failure(self, error: BaseException) -> None:
        """Log why training stopped (one line for an expected failure such as a full disk,
        else the traceback) and run the hooks' ``after_train``; a failure there (often the
        same full disk again) is logged in one line, so that ``error`` is what is reported."""
        # A failed write to log.txt (the same full disk) must not replace ``error`` either.
        with contextlib.suppress(OSError):
            if isinstance(error, Exception):
                message = as_user_error(error)
                if message is None:
                    logger.exception("Exception during training:")
                else:
                    logger.error(f"Training stopped at iteration {self.iter}: {message}")
        try:
            self.after_train()
        except Exception as later:  # noqa: BLE001 - the first failure is the one reported
            with contextlib.suppress(OSError):
                logger.error(f"Ending the training failed too: "
                             f"{as_user_error(later) or f'{type(later).__name__}: {later}'}")
