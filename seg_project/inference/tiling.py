"""Tiled inference: images larger than ``TEST.TILE.SIZE`` are predicted in overlapping tiles.

At a fixed pixel scale (``INPUT.RESIZE_MODE "scale"``) a large image stays large: a whole-slide
region of 4000 x 4000 pixels holds tens of thousands of nuclei, more than one forward pass can
propose and more memory than one pass should take. :class:`TiledInference` cuts the (resized)
image into ``SIZE x SIZE`` tiles overlapping by ``TEST.TILE.OVERLAP`` pixels, runs the model's
raw inference on them ``TEST.TILE.BATCH_SIZE`` at a time, and merges the detections:

1. **Core rule.** The overlap between two neighbouring tiles is split in the middle; each tile
   owns the *core* on its side, and the cores partition the image. A detection is kept only by
   the tile whose core holds its box centre. When the overlap is at least a cell's diameter,
   that tile sees the whole cell, so every cell is kept once, with its whole mask; slivers of
   cells cut by a tile's edge have their centre near that edge, inside the neighbour's core,
   and are dropped.
2. **Cross-tile NMS.** A cell whose centre the two tiles place on different sides of the
   core boundary survives in both. The kept detections go through the model's per-class box NMS
   (``MODEL.ROI_HEADS.NMS_THRESH_TEST``); copies touching their tile's inner edge (cut) lose to
   whole copies whatever their scores. Detections within one tile already passed that NMS, so
   only cross-tile duplicates are removed.
3. The best ``TEST.DETECTIONS_PER_IMAGE`` by score are kept.

The RPN's test budgets (``MODEL.RPN.PRE_NMS_TOPK_TEST``, ``POST_NMS_TOPK_TEST``) and the ROI
heads' detections are per forward pass, that is per tile: a config meant for tiles sizes them for
one tile's cells, and smaller tiles of the same image want proportionally smaller budgets (the
box and mask heads' time grows with proposals x tiles).

With a Detectron2 model (``roi_heads.mask_on``) the tiles are first searched for boxes only;
the mask head then runs on the merged detections, each in the tile whose core holds its centre
(the tile that kept it), so it never works on copies the merge drops.

Masks are the mask head's box-relative ``M x M`` probabilities, so moving a box into the image's
coordinates moves its mask with it; they are pasted once, after the merge
(:func:`seg_project.inference.postprocess.postprocess_to_rle`). An image that fits one tile is
predicted whole, exactly as without tiling.

The same object serves evaluation (:class:`~seg_project.inference.postprocess.RLEOutputModel`),
``tools/predict.py`` and ``tools/visualize.py``
(:class:`~seg_project.inference.predictor.Predictor`) and test-time augmentation
(:class:`~seg_project.inference.predictor.CellsTTA`).
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.structures import Boxes, Instances
from torchvision.ops import batched_nms

__all__ = ["Tile", "TiledInference", "tile_starts", "tile_grid"]


@dataclass(frozen=True)
class Tile:
    """One tile: the pixels ``[y0, y1) x [x0, x1)`` it covers and the core it owns
    (``[core_y0, core_y1) x [core_x0, core_x1)``, unbounded on the image's outer sides)."""

    x0: int
    y0: int
    x1: int
    y1: int
    core_x0: float
    core_y0: float
    core_x1: float
    core_y1: float


def tile_starts(length: int, size: int, overlap: int) -> List[int]:
    """Start offsets of tiles of ``size`` covering ``[0, length)``, overlapping by at least
    ``overlap`` and spread evenly (the last tile ends at ``length``)."""
    if length <= size:
        return [0]
    count = -(-(length - overlap) // (size - overlap))  # ceil; at least 2 as length > size
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def _cores(starts: Sequence[int], size: int) -> List[tuple]:
    """Core interval of each tile along one axis: split each overlap in the middle."""
    bounds = [(starts[i] + size + starts[i + 1]) / 2 for i in range(len(starts) - 1)]
    lows = [-float("inf")] + bounds
    highs = bounds + [float("inf")]
    return list(zip(lows, highs))


def tile_grid(height: int, width: int, size: int, overlap: int) -> List[Tile]:
    """The tiles of an image of ``height x width``, row by row."""
    ys, xs = tile_starts(height, size, overlap), tile_starts(width, size, overlap)
    y_cores, x_cores = _cores(ys, size), _cores(xs, size)
    return [Tile(x0, y0, min(x0 + size, width), min(y0 + size, height),
                 cx0, cy0, cx1, cy1)
            for y0, (cy0, cy1) in zip(ys, y_cores)
            for x0, (cx0, cx1) in zip(xs, x_cores)]


def _moved(instances: Instances, dx: float, dy: float, image_size) -> Instances:
    """``instances`` with their boxes moved by ``(dx, dy)``, in an image of ``image_size``."""
    out = Instances(image_size)
    for name, value in instances.get_fields().items():
        out.set(name, value)
    boxes = instances.pred_boxes.tensor
    out.pred_boxes = Boxes(boxes + boxes.new_tensor([dx, dy, dx, dy]))
    return out


def _in_core(centers: torch.Tensor, tile: Tile) -> torch.Tensor:
    """Which ``(N, 2)`` image-coordinate points lie in the tile's core."""
    return ((centers[:, 0] >= tile.core_x0) & (centers[:, 0] < tile.core_x1)
            & (centers[:, 1] >= tile.core_y0) & (centers[:, 1] < tile.core_y1))


class TiledInference:
    """Raw Mask R-CNN inference of images of any size, in tiles where they are large.

    Args:
        tile_size: tile side in model pixels (after the resize); larger images are tiled.
        overlap: pixels shared by neighbouring tiles (at least a cell's diameter).
        batch_size: tiles per forward pass.
        max_detections: detections kept per image after the merge.
        nms_thresh: box IoU of the cross-tile per-class NMS.
    """

    def __init__(self, tile_size: int, overlap: int = 64, batch_size: int = 4,
                 max_detections: int = 1000, nms_thresh: float = 0.5):
        if tile_size <= 0:
            raise ValueError(f"TEST.TILE.SIZE must be positive to tile, got {tile_size}")
        if not 0 <= overlap < tile_size:
            raise ValueError(f"TEST.TILE.OVERLAP must be in [0, TEST.TILE.SIZE), got {overlap} "
                             f"with SIZE {tile_size}")
        if batch_size < 1:
            raise ValueError(f"TEST.TILE.BATCH_SIZE must be at least 1, got {batch_size}")
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.batch_size = int(batch_size)
        self.max_detections = int(max_detections)
        self.nms_thresh = float(nms_thresh)

    @classmethod
    def from_config(cls, cfg) -> Optional["TiledInference"]:
        """The tiler of ``TEST.TILE``, or None when ``TEST.TILE.SIZE`` is 0 (no tiling)."""
        tile = cfg.TEST.TILE
        if tile.SIZE <= 0:
            return None
        return cls(tile.SIZE, tile.OVERLAP, tile.BATCH_SIZE, cfg.TEST.DETECTIONS_PER_IMAGE,
                   cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST)

    def needs_tiles(self, image: torch.Tensor) -> bool:
        """Whether a ``C x H x W`` image is larger than one tile."""
        return max(image.shape[-2:]) > self.tile_size

    def inference(self, model, batched_inputs: List[Dict],
                  detected_instances: Optional[List[Instances]] = None) -> List[Instances]:
        """``model.inference(batched_inputs, detected_instances, do_postprocess=False)``, tiled.

        Args:
            model: a GeneralizedRCNN (not wrapped in DDP).
            batched_inputs: dicts with ``image`` (``C x H x W``, already resized).
            detected_instances: boxes whose masks to predict (the second pass of test-time
                augmentation), one ``Instances`` per input; None detects.

        Returns:
            list[Instances]: raw detections per input at its ``H x W``, masks box-relative.
        """
        if detected_instances is None:
            detected_instances = [None] * len(batched_inputs)
        outputs: List[Optional[Instances]] = [None] * len(batched_inputs)
        whole = [i for i, x in enumerate(batched_inputs) if not self.needs_tiles(x["image"])]
        for start in range(0, len(whole), self.batch_size):
            chunk = whole[start:start + self.batch_size]
            given = [detected_instances[i] for i in chunk]
            results = model.inference([batched_inputs[i] for i in chunk],
                                      None if given[0] is None else given,
                                      do_postprocess=False)
            for i, result in zip(chunk, results):
                outputs[i] = result
        for i, inputs in enumerate(batched_inputs):
            if outputs[i] is None:
                given = detected_instances[i]
                outputs[i] = (self._detect(model, inputs["image"]) if given is None
                              else self._predict_given(model, inputs["image"], given))
        return outputs

    def _tile_inputs(self, image: torch.Tensor, tiles: Sequence[Tile]) -> List[Dict]:
        return [{"image": image[:, t.y0:t.y1, t.x0:t.x1], "height": t.y1 - t.y0,
                 "width": t.x1 - t.x0} for t in tiles]

    def _detect(self, model, image: torch.Tensor) -> Instances:
        height, width = image.shape[-2:]
        tiles = tile_grid(height, width, self.tile_size, self.overlap)
        # Boxes first, masks after the merge: the mask head, the costliest part of a crowded
        # image's inference, then runs once per kept cell, not on every tile's every detection.
        heads = getattr(model, "roi_heads", None)
        masks_after_merge = bool(getattr(heads, "mask_on", False))
        kept, cut = [], []
        try:
            if masks_after_merge:
                heads.mask_on = False
            for start in range(0, len(tiles), self.batch_size):
                chunk = tiles[start:start + self.batch_size]
                results = model.inference(self._tile_inputs(image, chunk), do_postprocess=False)
                for tile, result in zip(chunk, results):
                    moved, touches_edge = self._into_image(result, tile, (height, width))
                    kept.append(moved)
                    cut.append(touches_edge)
        finally:
            if masks_after_merge:
                heads.mask_on = True
        merged = self._merge(Instances.cat(kept), torch.cat(cut))
        if not masks_after_merge:
            return merged
        if len(merged) == 0:  # nothing to predict a mask for
            merged.pred_masks = merged.pred_boxes.tensor.new_zeros((0, 1, 1, 1))
            return merged
        return self._predict_given(model, image, merged)

    @staticmethod
    def _into_image(result: Instances, tile: Tile, image_size) -> tuple:
        """The tile's detections whose centre lies in its core, in image coordinates, and
        whether each touches one of the tile's inner edges (is cut by the tile)."""
        boxes = result.pred_boxes.tensor
        centers = boxes.new_tensor([tile.x0, tile.y0]) + result.pred_boxes.get_centers()
        in_core = _in_core(centers, tile)
        height, width = image_size
        tile_h, tile_w = tile.y1 - tile.y0, tile.x1 - tile.x0
        touches = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
        if tile.x0 > 0:
            touches |= boxes[:, 0] <= 1
        if tile.y0 > 0:
            touches |= boxes[:, 1] <= 1
        if tile.x1 < width:
            touches |= boxes[:, 2] >= tile_w - 1
        if tile.y1 < height:
            touches |= boxes[:, 3] >= tile_h - 1
        return _moved(result[in_core], tile.x0, tile.y0, image_size), touches[in_core]

    def _merge(self, merged: Instances, cut: torch.Tensor) -> Instances:
        if len(merged) == 0:
            return merged
        # Whole copies first, then by score: NMS keeps the first of overlapping boxes.
        order_key = merged.scores.float() + 2.0 * (~cut).float()
        keep = batched_nms(merged.pred_boxes.tensor.float(), order_key, merged.pred_classes,
                           self.nms_thresh)
        merged = merged[keep]
        order = torch.argsort(merged.scores, descending=True)[:self.max_detections]
        return merged[order]

    def _predict_given(self, model, image: torch.Tensor, given: Instances) -> Instances:
        """Masks of given boxes (image coordinates), each predicted in the tile whose core
        holds its centre; returned in the given order."""
        height, width = image.shape[-2:]
        tiles = tile_grid(height, width, self.tile_size, self.overlap)
        centers = given.pred_boxes.get_centers()
        owner = torch.full((len(given),), -1, dtype=torch.long)
        for t, tile in enumerate(tiles):
            owner[_in_core(centers, tile).cpu() & (owner < 0)] = t
        pieces, order = [], []
        for start in range(0, len(tiles), self.batch_size):
            chunk = [t for t in range(start, min(start + self.batch_size, len(tiles)))
                     if bool((owner == t).any())]
            if not chunk:
                continue
            tile_given = []
            for t in chunk:
                tile = tiles[t]
                index = torch.nonzero(owner == t).flatten()
                tile_given.append(_moved(given[index], -tile.x0, -tile.y0,
                                         (tile.y1 - tile.y0, tile.x1 - tile.x0)))
                order.append(index)
            results = model.inference(self._tile_inputs(image, [tiles[t] for t in chunk]),
                                      tile_given, do_postprocess=False)
            for t, result in zip(chunk, results):
                pieces.append(_moved(result, tiles[t].x0, tiles[t].y0, (height, width)))
        if not pieces:
            return given
        merged = Instances.cat(pieces)
        inverse = torch.argsort(torch.cat(order))
        return merged[inverse]
