"""The training step with automatic mixed precision on CUDA and on CPUs.

Detectron2's ``AMPTrainer`` asserts CUDA. This step uses float16 autocast with a grad
scaler on CUDA. On a CPU, ``SOLVER.AMP.CPU_DTYPE`` decides (:func:`cpu_amp_dtype`):

- ``auto`` (default): bfloat16 autocast (no scaler needed: bfloat16 has float32's range)
  where the CPU computes bfloat16 natively, else float32, said once in the log;
- ``bfloat16``: bfloat16 autocast in any case (a warning where it is not native);
- ``float32``: full precision.

Native bfloat16 (:func:`native_cpu_bf16`) means an x86 CPU with AVX512_BF16 or AMX
(``torch.cpu._is_avx512_bf16_supported()`` / ``_is_amx_tile_supported()``), or an ARM CPU
whose bfloat16 extension oneDNN uses (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``).
Elsewhere (e.g. AVX2 or plain AVX-512) oneDNN emulates bfloat16 with conversions, and
autocast was measured 12x slower than float32 on an AVX2 CPU.
"""

import logging
import platform
import time
from typing import Optional, Tuple

import torch
from detectron2.engine import SimpleTrainer

from ..config import check_cpu_dtype

__all__ = ["MixedPrecisionTrainer", "cpu_amp_dtype", "native_cpu_bf16"]

logger = logging.getLogger(__name__)


def _probe(name: str) -> bool:
    function = getattr(torch.cpu, name, None)
    try:
        return bool(function()) if function is not None else False
    except Exception:  # noqa: BLE001 - a probe that fails means "no"
        return False


def native_cpu_bf16() -> Tuple[bool, str]:
    """Whether this CPU computes bfloat16 natively, and what was found.

    The rule: x86 with AVX512_BF16 or AMX, or ARM with the bfloat16 extension (as oneDNN
    reports it). AVX2 and AVX-512 without BF16 are not native.

    Returns:
        tuple: ``(native, description)``, e.g. ``(False, "AVX2, no AVX512_BF16 or AMX")``.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if _probe("_is_amx_tile_supported"):
        return True, f"{capability} with AMX"
    if _probe("_is_avx512_bf16_supported"):
        return True, f"{capability} with AVX512_BF16"
    if platform.machine().lower() in ("aarch64", "arm64"):
        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return True, f"{capability} with ARM BF16"
        except Exception:  # noqa: BLE001
            pass
        return False, f"{capability} without the ARM BF16 extension"
    return False, f"{capability}, no AVX512_BF16 or AMX"


def cpu_amp_dtype(requested: str = "auto") -> Tuple[torch.dtype, str]:
    """What ``SOLVER.AMP.ENABLED`` trains in on this CPU (also for benchmarks' reports).

    Args:
        requested: ``SOLVER.AMP.CPU_DTYPE``: "auto", "bfloat16" or "float32".

    Returns:
        tuple: ``(dtype, reason)``: ``torch.bfloat16`` or ``torch.float32``, and a one-line
        reason, e.g. ``"float32: CPU_DTYPE auto and this CPU has no native bfloat16 (AVX2, no
        AVX512_BF16 or AMX)"``.

    Raises:
        ConfigError: ``requested`` is none of the three.
    """
    check_cpu_dtype(requested)
    if requested == "float32":
        return torch.float32, "float32: SOLVER.AMP.CPU_DTYPE float32"
    native, found = native_cpu_bf16()
    if requested == "bfloat16":
        if native:
            return torch.bfloat16, f"bfloat16: SOLVER.AMP.CPU_DTYPE bfloat16, native ({found})"
        return torch.bfloat16, (f"bfloat16: SOLVER.AMP.CPU_DTYPE bfloat16, forced although "
                                f"this CPU has no native bfloat16 ({found}): expect it to be "
                                "slower than float32")
    if native:
        return torch.bfloat16, f"bfloat16: SOLVER.AMP.CPU_DTYPE auto, native ({found})"
    return torch.float32, (f"float32: SOLVER.AMP.CPU_DTYPE auto and this CPU has no native "
                           f"bfloat16 ({found})")


class MixedPrecisionTrainer(SimpleTrainer):
    """``SimpleTrainer`` whose forward pass runs under ``torch.autocast`` where that helps.

    Attributes:
        device_type: "cuda" or "cpu".
        autocast_dtype: the autocast dtype, or None when training in float32.
        grad_scaler: the CUDA grad scaler, or None.
        precision_reason: one line saying what precision is used and why.
    """

    def __init__(self, model, data_loader, optimizer, cpu_dtype: str = "auto"):
        """
        Args:
            model, data_loader, optimizer: as for ``SimpleTrainer``.
            cpu_dtype: "auto", "bfloat16" or "float32": what AMP means when the model is on a
                CPU (see :func:`cpu_amp_dtype`).
        """
        super().__init__(model, data_loader, optimizer)
        on_cuda = any(p.is_cuda for p in model.parameters())
        self.device_type = "cuda" if on_cuda else "cpu"
        self.grad_scaler = torch.amp.GradScaler("cuda") if on_cuda else None
        self.autocast_dtype: Optional[torch.dtype]
        if on_cuda:
            self.autocast_dtype = torch.float16
            self.precision_reason = "float16 with a grad scaler (CUDA)"
        else:
            dtype, self.precision_reason = cpu_amp_dtype(cpu_dtype)
            self.autocast_dtype = None if dtype == torch.float32 else dtype
            if self.autocast_dtype is None and cpu_dtype == "auto":
                logger.warning(f"SOLVER.AMP.ENABLED on this CPU: training in "
                               f"{self.precision_reason}; set SOLVER.AMP.CPU_DTYPE bfloat16 "
                               "to force bfloat16 autocast.")
            elif "forced" in self.precision_reason:
                logger.warning(f"SOLVER.AMP.ENABLED: {self.precision_reason}.")
        logger.info(f"Mixed precision: {self.device_type} {self.precision_reason}")

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
