"""Copy-paste augmentation for instance segmentation (Ghiasi et al., "Simple Copy-Paste is a
Strong Data Augmentation Method for Instance Segmentation", CVPR 2021), on
:class:`~seg_project.data.cropped_masks.CroppedMasks`.

A training image (already resized, cropped, flipped and reoriented by the mapper) receives
instances of another training image (augmented the same way, independently): a random subset
of the source's whole instances (those that do not touch its border), each pasted at a random
place, on top of what is there, in order. The image's pixels under each pasted mask are
replaced by the source's pixels under it. Instances covered by a later paste keep their visible
part only, their box becomes the tight box of that part, and those left with fewer pixels than
``min_instance_area`` (or none) are dropped; instances nothing covers keep their box.

Geometry, exact at any scale: a pasted instance is rasterized on the image's pixel grid (an
image pixel belongs to it when its centre falls in a set pixel of its crop) and added as a crop
at scale 1; a pixel of an existing crop is covered when its centre falls in a covered image
pixel (the rule :meth:`CroppedMasks.crop` uses for a crop window). At scale 1, the native-scale
recipe's case, this is bit for bit what painting full-size masks gives
(tests/test_copy_paste.py checks it against such a dense reference).

The random draws (:meth:`CopyPaste.draw`) are separate from their application
(:meth:`CopyPaste.paste`), so a test can apply one draw twice.
"""

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from .cropped_masks import CroppedMasks

__all__ = ["CopyPaste", "PasteDraw"]


@dataclass(frozen=True)
class PasteDraw:
    """What one copy-paste pastes, drawn at random by :meth:`CopyPaste.draw`.

    Attributes:
        indices: source instances, in paste order (later ones lie on top).
        positions: ``(x, y)`` image pixel of the top-left corner of each pasted instance's
            rasterized box in the target image.
    """

    indices: Tuple[int, ...]
    positions: Tuple[Tuple[int, int], ...]


class CopyPaste:
    """Paste instances of a source training image into a target training image."""

    def __init__(self, max_instances: int, min_instance_area: int = 0):
        """
        Args:
            max_instances: at most this many instances are pasted (the count is drawn
                uniformly from 1..max_instances, and capped by what the source has).
            min_instance_area: instances left with fewer visible pixels than this after the
                paste are dropped (``INPUT.MIN_INSTANCE_AREA``; empty ones always are).
        """
        if max_instances < 1:
            raise ValueError(f"max_instances must be at least 1, got {max_instances}")
        self.max_instances = int(max_instances)
        self.min_instance_area = int(min_instance_area)

    # ------------------------------------------------------------------ random draws
    def draw(self, target_size: Tuple[int, int], source_size: Tuple[int, int],
             source_masks: CroppedMasks) -> PasteDraw:
        """Choose the source instances and where they go (``np.random``, like Detectron2's
        augmentations).

        Args:
            target_size: ``(height, width)`` of the target image.
            source_size: ``(height, width)`` of the source image.
            source_masks: the source's instance masks.

        Returns:
            The draw; empty when the source has no whole instance that fits the target.
        """
        boxes = [box for box, _ in rasterize(source_masks)]
        height, width = target_size
        candidates = [i for i, (x0, y0, x1, y1) in enumerate(boxes)
                      if x1 > x0 and _inside((x0, y0, x1, y1), source_size, margin=1)
                      and x1 - x0 <= width and y1 - y0 <= height]
        if not candidates:
            return PasteDraw((), ())
        count = int(np.random.randint(1, min(self.max_instances, len(candidates)) + 1))
        chosen = np.random.permutation(candidates)[:count]
        positions = []
        for i in chosen:
            x0, y0, x1, y1 = boxes[i]
            positions.append((int(np.random.randint(0, width - (x1 - x0) + 1)),
                              int(np.random.randint(0, height - (y1 - y0) + 1))))
        return PasteDraw(tuple(int(i) for i in chosen), tuple(positions))

    def __call__(self, image: np.ndarray, instances: Instances, source_image: np.ndarray,
                 source_instances: Instances) -> Tuple[np.ndarray, Instances]:
        """Draw and paste (see :meth:`paste`)."""
        draw = self.draw(image.shape[:2], source_image.shape[:2], source_instances.gt_masks)
        return self.paste(image, instances, source_image, source_instances, draw)

    # ------------------------------------------------------------------ application
    def paste(self, image: np.ndarray, instances: Instances, source_image: np.ndarray,
              source_instances: Instances, draw: PasteDraw) -> Tuple[np.ndarray, Instances]:
        """Paste the drawn source instances into the image.

        Args:
            image: ``HxWxC`` target image (not modified).
            instances: the target's ``gt_boxes``, ``gt_classes`` and ``gt_masks``
                (:class:`CroppedMasks`).
            source_image: the source image, in the same channel order and dtype.
            source_instances: the source's instances (as ``instances``).
            draw: what to paste where (:meth:`draw`).

        Returns:
            The new image and instances: the target's that remain, then the pasted ones.
        """
        if not draw.indices:
            return image, instances
        height, width = image.shape[:2]
        source_masks = source_instances.gt_masks[torch.as_tensor(draw.indices)]
        pieces = rasterize(source_masks)
        image = image.copy()
        # Image pixels: painted in paste order, so a later paste shows where pastes overlap.
        offsets = []
        for j, ((x0, y0, x1, y1), piece) in enumerate(pieces):
            tx, ty = draw.positions[j]
            window = (slice(ty, ty + (y1 - y0)), slice(tx, tx + (x1 - x0)))
            image[window][piece] = source_image[y0:y1, x0:x1][piece]
            offsets.append((tx, ty))
        # Masks: each paste loses what later pastes cover; ``covered`` ends as their union.
        covered = np.zeros((height, width), dtype=bool)
        crops = [None] * len(pieces)
        for j in reversed(range(len(pieces))):
            (x0, y0, x1, y1), piece = pieces[j]
            tx, ty = offsets[j]
            window = (slice(ty, ty + (y1 - y0)), slice(tx, tx + (x1 - x0)))
            crops[j] = piece & ~covered[window]
            covered[window] |= piece
        pasted = Instances((height, width))
        pasted.gt_masks = CroppedMasks.from_crops(crops, offsets)
        pasted.gt_classes = source_instances.gt_classes[torch.as_tensor(draw.indices)]
        pasted.gt_boxes = pasted.gt_masks.get_bounding_boxes()

        before = instances.gt_masks.pixel_counts()
        kept_masks = instances.gt_masks.occlude(torch.from_numpy(covered))
        after = kept_masks.pixel_counts()
        boxes = instances.gt_boxes.tensor.clone()
        changed = after != before
        if changed.any():
            boxes[changed] = kept_masks[changed].get_bounding_boxes().tensor
        kept = Instances((height, width))
        kept.gt_masks = kept_masks
        kept.gt_classes = instances.gt_classes
        kept.gt_boxes = Boxes(boxes)
        keep = ~changed | ((after > 0) & (after >= self.min_instance_area))
        kept = kept[keep]
        pasted_counts = pasted.gt_masks.pixel_counts()
        pasted = pasted[(pasted_counts > 0) & (pasted_counts >= self.min_instance_area)]
        return image, Instances.cat([kept, pasted]) if len(pasted) else kept


def rasterize(masks: CroppedMasks) -> List[Tuple[Tuple[int, int, int, int], np.ndarray]]:
    """Each mask on the image's pixel grid: its tight integer box ``(x0, y0, x1, y1)``
    (end-exclusive) and the ``bool`` pixels inside it.

    An image pixel belongs to a mask when its centre falls in a set pixel of the mask's crop
    (at scale 1 with whole-number origins: exactly the crop's pixels). Empty masks give the
    box ``(0, 0, 0, 0)`` and an empty array.
    """
    out = []
    for i in range(len(masks)):
        crop = masks.tensor[i].numpy()
        ox, oy = masks.origin[i].double().tolist()
        sx, sy = masks.scale[i].double().tolist()
        rows, cols = crop.shape
        # Image pixels X whose centre X + 0.5 lies in [ox, ox + cols * sx).
        xs = np.arange(int(np.ceil(ox - 0.5)), int(np.ceil(ox + cols * sx - 0.5)))
        ys = np.arange(int(np.ceil(oy - 0.5)), int(np.ceil(oy + rows * sy - 0.5)))
        cx = np.clip(np.floor((xs + 0.5 - ox) / sx).astype(np.int64), 0, cols - 1)
        cy = np.clip(np.floor((ys + 0.5 - oy) / sy).astype(np.int64), 0, rows - 1)
        dense = crop[np.ix_(cy, cx)]
        rows_any, cols_any = dense.any(axis=1), dense.any(axis=0)
        if not rows_any.any():
            out.append(((0, 0, 0, 0), np.zeros((0, 0), dtype=bool)))
            continue
        r0, r1 = np.flatnonzero(rows_any)[[0, -1]]
        c0, c1 = np.flatnonzero(cols_any)[[0, -1]]
        box = (int(xs[c0]), int(ys[r0]), int(xs[c1]) + 1, int(ys[r1]) + 1)
        out.append((box, dense[r0:r1 + 1, c0:c1 + 1]))
    return out


def _inside(box, size, margin: int) -> bool:
    """Whether ``box`` lies inside an image of ``size`` without touching its border."""
    x0, y0, x1, y1 = box
    height, width = size
    return x0 >= margin and y0 >= margin and x1 <= width - margin and y1 <= height - margin
