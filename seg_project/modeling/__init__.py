"""Model parts registered with Detectron2 (importing this package registers them)."""

from .rpn import CellsRPN

__all__ = ["CellsRPN"]
