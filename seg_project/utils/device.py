"""Which device to run on: the one asked for, or the CPU when CUDA is asked for and absent."""

from typing import Optional, Tuple

__all__ = ["resolve_device"]


def resolve_device(requested: str) -> Tuple[str, Optional[str]]:
    """The device to use for ``requested`` ("cpu", "cuda", "cuda:1"...).

    Returns:
        tuple: ``(device, note)``: ``note`` says why it differs from ``requested`` (for the
        log), else None.
    """
    import torch

    if requested.startswith("cuda") and not torch.cuda.is_available():
        return "cpu", f"{requested} was asked for but no GPU is available: using the CPU."
    return requested, None
