"""Raw Mask R-CNN detections -> predictions at the original image size, masks as RLE.

Detectron2's ``detector_postprocess`` pastes every mask into a full-size bitmap
(``N x H x W``: 1 GB for 1,000 detections on a 1000x1000 image) that the evaluator then
encodes pixel by pixel. Here each mask is pasted only inside its box (the same bilinear
sampling as Detectron2's ``paste_masks_in_image``), thresholded, and encoded from the crop by
the project's one RLE encoder.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

from ..data.rle import encode_crops

__all__ = [
    "RLEList",
    "paste_masks_as_crops",
    "postprocess_to_rle",
    "instances_to_coco_entries",
    "RLEOutputModel",
]

# Grid points sampled per chunk when pasting masks (bounds memory for huge boxes).
_PASTE_BUDGET = 4_000_000


class RLEList(list):
    """A list of RLE dicts that ``Instances`` can index with tensors like its other fields."""

    def __getitem__(self, item):
        if isinstance(item, torch.Tensor):
            if item.dtype == torch.bool:
                item = torch.nonzero(item).flatten()
            return RLEList(list.__getitem__(self, int(i)) for i in item.tolist())
        if isinstance(item, slice):
            return RLEList(list.__getitem__(self, item))
        return list.__getitem__(self, item)

    def to(self, *args, **kwargs) -> "RLEList":
        return self


def _chunks_by_size(heights: np.ndarray, widths: np.ndarray) -> List[np.ndarray]:
    order = np.argsort(heights * widths, kind="stable")
    chunks, current, max_h, max_w = [], [], 0, 0
    for i in order:
        h, w = max(max_h, heights[i]), max(max_w, widths[i])
        if current and (len(current) + 1) * h * w > _PASTE_BUDGET:
            chunks.append(np.array(current))
            current, h, w = [], heights[i], widths[i]
        current.append(i)
        max_h, max_w = h, w
    if current:
        chunks.append(np.array(current))
    return chunks


def paste_masks_as_crops(
    masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int, threshold: float = 0.5
) -> List:
    """Paste ``M x M`` mask probabilities into their boxes, returning crops only.

    Args:
        masks: ``(N, M, M)`` float probabilities.
        boxes: ``(N, 4)`` XYXY boxes in the output image's coordinates.
        height: output image height.
        width: output image width.
        threshold: probability at which a pixel is inside.

    Returns:
        list: ``(crop, x0, y0)`` per detection, ``crop`` a bool numpy array covering the
        pixels whose centers lie in the box (clipped to the image).
    """
    boxes = boxes.detach().float().cpu()
    masks = masks.detach().float().cpu()
    x0 = boxes[:, 0].floor().clamp(0, width).long()
    y0 = boxes[:, 1].floor().clamp(0, height).long()
    x1 = boxes[:, 2].ceil().clamp(0, width).long()
    y1 = boxes[:, 3].ceil().clamp(0, height).long()
    heights, widths = (y1 - y0).clamp(min=0).numpy(), (x1 - x0).clamp(min=0).numpy()
    crops: List = [None] * len(boxes)
    for chunk in _chunks_by_size(heights, widths):
        index = torch.from_numpy(chunk)
        chunk_h, chunk_w = max(int(heights[chunk].max()), 1), max(int(widths[chunk].max()), 1)
        b = boxes[index]
        # Pixel centres of each crop, in the box's normalized [-1, 1] coordinates.
        xs = x0[index, None] + torch.arange(chunk_w)[None] + 0.5
        ys = y0[index, None] + torch.arange(chunk_h)[None] + 0.5
        gx = (xs - b[:, 0:1]) / (b[:, 2:3] - b[:, 0:1]).clamp(min=1e-6) * 2 - 1
        gy = (ys - b[:, 1:2]) / (b[:, 3:4] - b[:, 1:2]).clamp(min=1e-6) * 2 - 1
        grid = torch.stack([gx[:, None, :].expand(-1, chunk_h, -1),
                            gy[:, :, None].expand(-1, -1, chunk_w)], dim=3)
        pasted = F.grid_sample(masks[index, None], grid, align_corners=False)[:, 0] >= threshold
        pasted = pasted.numpy()
        for j, i in enumerate(chunk):
            crops[i] = (pasted[j, :heights[i], :widths[i]], int(x0[i]), int(y0[i]))
    return crops


def postprocess_to_rle(
    results: Instances, height: int, width: int, mask_threshold: float = 0.5
) -> Instances:
    """Rescale raw detections to ``height x width`` and encode their masks as RLE.

    Args:
        results: raw ``Instances`` from ``model.inference(..., do_postprocess=False)`` with
            ``pred_boxes``, ``scores``, ``pred_classes`` and ``pred_masks`` ``(N, 1, M, M)``.
        height: original image height.
        width: original image width.
        mask_threshold: probability threshold of the masks.

    Returns:
        Instances: of size ``(height, width)`` with ``pred_boxes``, ``scores``,
        ``pred_classes`` and ``pred_rles`` (an :class:`RLEList` of COCO RLE dicts).
    """
    scale_x, scale_y = width / results.image_size[1], height / results.image_size[0]
    boxes = Boxes(results.pred_boxes.tensor.detach().clone().float().cpu())
    boxes.scale(scale_x, scale_y)
    boxes.clip((height, width))
    keep = boxes.nonempty()
    out = Instances((height, width))
    out.pred_boxes = boxes[keep]
    out.scores = results.scores.detach().cpu()[keep]
    out.pred_classes = results.pred_classes.detach().cpu()[keep]
    if results.has("pred_masks"):
        masks = results.pred_masks.detach().cpu()[keep][:, 0]
        crops = paste_masks_as_crops(masks, out.pred_boxes.tensor, height, width, mask_threshold)
        out.pred_rles = RLEList(encode_crops(crops, height, width))
    return out


def instances_to_coco_entries(
    instances: Instances,
    image_id: Optional[int] = None,
    class_to_category: Optional[Dict[int, int]] = None,
) -> List[Dict]:
    """COCO result dicts (``bbox`` XYWH floats, ``score``, ``category_id``, ``segmentation``).

    Args:
        instances: output of :func:`postprocess_to_rle`.
        image_id: added as ``image_id`` when given.
        class_to_category: model class (0..K-1) -> dataset category id; default identity.
    """
    boxes = instances.pred_boxes.tensor.numpy().astype(np.float64)
    boxes[:, 2:] -= boxes[:, :2]
    scores = instances.scores.tolist()
    classes = instances.pred_classes.tolist()
    rles: Sequence = instances.pred_rles if instances.has("pred_rles") else [None] * len(scores)
    entries = []
    for box, score, cls, rle in zip(boxes.tolist(), scores, classes, rles):
        entry = {} if image_id is None else {"image_id": image_id}
        entry.update({
            "bbox": box,
            "score": float(score),
            "category_id": class_to_category[cls] if class_to_category else int(cls),
        })
        if rle is not None:
            entry["segmentation"] = rle
        entries.append(entry)
    return entries


class RLEOutputModel(torch.nn.Module):
    """Wrap a GeneralizedRCNN so that ``model(inputs)`` returns ``{"instances": ...}`` with RLE
    masks at each input's ``height x width`` (for ``inference_on_dataset`` and evaluators).

    Args:
        model: a GeneralizedRCNN (or one wrapped in DDP).
        mask_threshold: mask probability threshold.
        tiler: a :class:`seg_project.inference.tiling.TiledInference` to predict images larger
            than a tile in tiles (``TEST.TILE``); None predicts every image whole.
    """

    def __init__(self, model: torch.nn.Module, mask_threshold: float = 0.5, tiler=None):
        super().__init__()
        self.model = model
        self.mask_threshold = mask_threshold
        self.tiler = tiler

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        model = getattr(self.model, "module", self.model)  # unwrap DDP
        if self.tiler is not None:
            raw = self.tiler.inference(model, batched_inputs)
        else:
            raw = model.inference(batched_inputs, do_postprocess=False)
        outputs = []
        for result, inputs in zip(raw, batched_inputs):
            height = inputs.get("height", result.image_size[0])
            width = inputs.get("width", result.image_size[1])
            outputs.append({"instances": postprocess_to_rle(result, height, width,
                                                            self.mask_threshold)})
        return outputs
