"""The training step with automatic mixed precision on CUDA and on CPUs.

Detectron2's ``AMPTrainer`` asserts CUDA. This step uses float16 autocast with a grad
scaler on CUDA, and on a CPU ``SOLVER.AMP.CPU_DTYPE``: bfloat16 autocast (no scaler needed:
bfloat16 has float32's range), or float32 (AMP off, said once in the log).
"""

import logging
import time

import torch
from detectron2.engine import SimpleTrainer

__all__ = ["MixedPrecisionTrainer"]

logger = logging.getLogger(__name__)


class MixedPrecisionTrainer(SimpleTrainer):
    """``SimpleTrainer`` whose forward pass runs under ``torch.autocast`` where that helps."""

    def __init__(self, model, data_loader, optimizer, cpu_dtype: str = "bfloat16"):
        """
        Args:
            model, data_loader, optimizer: as for ``SimpleTrainer``.
            cpu_dtype: "bfloat16" or "float32": what AMP means when the model is on a CPU.
        """
        super().__init__(model, data_loader, optimizer)
        on_cuda = any(p.is_cuda for p in model.parameters())
        self.device_type = "cuda" if on_cuda else "cpu"
        self.grad_scaler = torch.amp.GradScaler("cuda") if on_cuda else None
        if on_cuda:
            self.autocast_dtype = torch.float16
        elif cpu_dtype == "bfloat16":
            self.autocast_dtype = torch.bfloat16
        elif cpu_dtype == "float32":
            self.autocast_dtype = None
            logger.warning("SOLVER.AMP.ENABLED on a CPU with SOLVER.AMP.CPU_DTYPE float32: "
                           "training in full precision (float32).")
        else:
            raise ValueError(f"SOLVER.AMP.CPU_DTYPE must be bfloat16 or float32, got {cpu_dtype}")
        logger.info(f"Mixed precision: {self.device_type} "
                    f"{self.autocast_dtype or torch.float32}"
                    f"{' with a grad scaler' if self.grad_scaler else ''}")

    def run_step(self):
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(self.device_type, dtype=self.autocast_dtype,
                            enabled=self.autocast_dtype is not None):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                loss_dict = {"total_loss": loss_dict}
            losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
