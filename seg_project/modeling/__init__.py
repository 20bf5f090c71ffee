"""Model parts registered with Detectron2 (importing this package registers them):

- :mod:`.rpn`: ``CellsRPN``, Detectron2's RPN with anchor labelling that scales to crowded
  images;
- :mod:`.sparse_matching`: that labelling, with IoU computed only where anchors and
  ground-truth boxes overlap.
"""

from .rpn import CellsRPN

__all__ = ["CellsRPN"]
