"""How images are resized for the model: to a fixed short side, or by a fixed pixel scale.

Detectron2 resizes every image to a short side of ``INPUT.MIN_SIZE_*`` whatever the size of its
cells: on the course data the same cell is enlarged 2x on a median test image and shrunk on the
largest. Pathology models work at a fixed pixel scale instead. ``INPUT.RESIZE_MODE`` picks:

- ``"short_side"`` (Detectron2's behaviour and the default): ``ResizeShortestEdge`` with
  ``INPUT.MIN_SIZE_TRAIN`` / ``MAX_SIZE_TRAIN`` / ``MIN_SIZE_TRAIN_SAMPLING`` and
  ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``.
- ``"scale"``: every image is multiplied by a factor, so a cell has the same size in pixels
  whatever the image's size. Training draws the factor from ``INPUT.SCALE_TRAIN`` (one of the
  values with ``MIN_SIZE_TRAIN_SAMPLING`` "choice", uniform between two with "range": the
  multi-scale training of the fixed-scale recipe); inference uses ``INPUT.SCALE_TEST``. A factor
  of 1 leaves the image as it is (native scale); images larger than ``TEST.TILE.SIZE`` are then
  predicted in tiles (:mod:`seg_project.inference.tiling`).
"""

from typing import List, Sequence

import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import NoOpTransform

__all__ = ["RESIZE_MODES", "RandomScale", "build_resize", "scaled_size", "tta_resizes"]

RESIZE_MODES = ("short_side", "scale")


def scaled_size(height: int, width: int, scale: float) -> tuple:
    """``(height, width)`` of an image multiplied by ``scale`` (at least 1 pixel each)."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


class RandomScale(T.Augmentation):
    """Resize an image by a factor drawn from ``scales`` (aspect ratio kept).

    A factor of exactly 1 gives a ``NoOpTransform``: nothing is resampled.
    """

    def __init__(self, scales: Sequence[float], sample_style: str = "choice",
                 interp=None):
        """
        Args:
            scales: the factors; with ``sample_style="range"``, the two ends of a range.
            sample_style: "choice" (one of ``scales``) or "range" (uniform between them).
            interp: PIL interpolation of the image (default bilinear).
        """
        super().__init__()
        scales = [float(s) for s in scales]
        if not scales or min(scales) <= 0:
            raise ValueError(f"scales must be positive numbers, got {scales}")
        if sample_style not in ("choice", "range"):
            raise ValueError(f"sample_style must be 'choice' or 'range', got {sample_style!r}")
        if sample_style == "range" and len(scales) != 2:
            raise ValueError(f"a scale range needs two values (low, high), got {scales}")
        from PIL import Image

        self._init({"scales": scales, "sample_style": sample_style,
                    "interp": Image.BILINEAR if interp is None else interp})

    def get_transform(self, image: np.ndarray):
        if self.sample_style == "range":
            scale = float(np.random.uniform(self.scales[0], self.scales[1]))
        else:
            scale = float(np.random.choice(self.scales))
        height, width = image.shape[:2]
        new_h, new_w = scaled_size(height, width, scale)
        if (new_h, new_w) == (height, width):
            return NoOpTransform()
        return T.ResizeTransform(height, width, new_h, new_w, self.interp)


def build_resize(cfg, is_train: bool) -> T.Augmentation:
    """The resize of ``INPUT.RESIZE_MODE`` for training or inference.

    Args:
        cfg: a config with seg_project's keys.
        is_train: training (``*_TRAIN`` keys, random) or inference (``*_TEST`` keys, fixed).

    Returns:
        T.Augmentation: ``ResizeShortestEdge`` or :class:`RandomScale`.
    """
    mode = cfg.INPUT.RESIZE_MODE
    if mode not in RESIZE_MODES:
        raise ValueError(f"INPUT.RESIZE_MODE must be one of {RESIZE_MODES}, got {mode!r}")
    if mode == "scale":
        if is_train:
            return RandomScale(cfg.INPUT.SCALE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
        return RandomScale([cfg.INPUT.SCALE_TEST])
    if is_train:
        return T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
    return T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")


def tta_resizes(cfg) -> List[T.Augmentation]:
    """The resizes of test-time augmentation, one per view scale.

    ``"short_side"``: a short side of each of ``TEST.AUG.MIN_SIZES`` (at most
    ``TEST.AUG.MAX_SIZE``). ``"scale"``: ``INPUT.SCALE_TEST`` times each of
    ``TEST.AUG.SCALES``.
    """
    if cfg.INPUT.RESIZE_MODE == "scale":
        return [RandomScale([cfg.INPUT.SCALE_TEST * s]) for s in cfg.TEST.AUG.SCALES]
    return [T.ResizeShortestEdge(size, cfg.TEST.AUG.MAX_SIZE) for size in cfg.TEST.AUG.MIN_SIZES]
