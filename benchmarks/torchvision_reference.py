"""The reference pipeline: torchvision Mask R-CNN trained the way the report does it.

The report trains ``maskrcnn_resnet50_fpn_v2`` with SGD (lr 0.005, momentum 0.9, weight decay
5e-4), batch 2, AMP on CUDA; ``maskrcnn_resnet50_fpn`` (v1) has Detectron2's R50-FPN
architecture and is the fair same-model reference. Written as such a report writes it:

- :class:`CellsDataset`: ``(image float CHW in 0..1, target)`` with ``boxes`` (xyxy float),
  ``labels`` (1..K int64) and ``masks`` (N x H x W uint8, full size, decoded from the RLEs).
- :func:`build_model`: random init (``weights=None, weights_backbone=None``), fixed
  ``min_size = max_size = S``. With no weights torchvision uses plain ``BatchNorm2d`` (not
  ``FrozenBatchNorm2d``) and makes all 5 backbone stages trainable
  (:func:`common.describe_model` checks it).
- :class:`TrainStep`: forward -> sum of losses -> backward -> SGD step (``torch.autocast`` +
  ``GradScaler`` on CUDA).
- :func:`predict`: one image -> boxes, scores, labels and full-size boolean masks on the CPU.
- :func:`to_coco_entries`: those -> submission entries, each full-size mask encoded by
  ``pycocotools.mask.encode`` (as a report does it).
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import nn
from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2

from seg_project.data.image_io import read_image
from seg_project.data.rle import decode

__all__ = [
    "BUILDERS",
    "CellsDataset",
    "TrainStep",
    "build_model",
    "build_optimizer",
    "collate",
    "image_to_tensor",
    "predict",
    "targets_to",
    "to_coco_entries",
]

BUILDERS = {"v2": maskrcnn_resnet50_fpn_v2, "v1": maskrcnn_resnet50_fpn}
# The report's optimizer.
LR, MOMENTUM, WEIGHT_DECAY = 0.005, 0.9, 5e-4


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``HxWx3 uint8`` -> ``3xHxW float32`` in 0..1 (what ``ToTensor`` gives)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255)


class CellsDataset(torch.utils.data.Dataset):
    """Detectron2-style records (from ``seg_project.data.reader``) as torchvision samples."""

    def __init__(self, records: Sequence[Dict]):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        record = self.records[index]
        image = image_to_tensor(read_image(record["file_name"]))
        annotations = record["annotations"]
        height, width = record["height"], record["width"]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                              (a["bbox"] for a in annotations)], dtype=torch.float32)
        masks = np.zeros((len(annotations), height, width), dtype=np.uint8)
        for i, annotation in enumerate(annotations):
            masks[i] = decode(annotation["segmentation"])
        target = {
            "boxes": boxes.reshape(-1, 4),
            "labels": torch.tensor([a["category_id"] + 1 for a in annotations],
                                   dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "image_id": torch.tensor(record["image_id"]),
            "area": torch.tensor([a["area"] for a in annotations], dtype=torch.float32),
            "iscrowd": torch.zeros(len(annotations), dtype=torch.int64),
        }
        return image, target


def collate(batch):
    """The detection references' collate: a list of samples -> (images, targets)."""
    return tuple(zip(*batch))


def targets_to(images, targets, device: torch.device):
    """Move a batch to ``device``: ``(list of images, list of target dicts)``."""
    images = [image.to(device) for image in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    return images, targets


def build_model(version: str, size: int, num_classes: int = 5, detections_per_img: int = 100,
                score_thresh: float = 0.05) -> nn.Module:
    """A random-init torchvision Mask R-CNN R50-FPN resizing every image to ``size``.

    Args:
        version: ``"v2"`` (``maskrcnn_resnet50_fpn_v2``, the report's) or ``"v1"``.
        size: ``min_size`` and ``max_size`` (square inputs become ``size x size``).
        num_classes: classes including the background (CoNSeP: 4 + 1).
        detections_per_img: ``box_detections_per_img``.
        score_thresh: ``box_score_thresh``.

    Raises:
        ValueError: an unknown version.
    """
    if version not in BUILDERS:
        raise ValueError(f"unknown torchvision Mask R-CNN version {version!r}; use "
                         f"{' or '.join(BUILDERS)}")
    return BUILDERS[version](
        weights=None, weights_backbone=None, num_classes=num_classes, min_size=size,
        max_size=size, box_detections_per_img=detections_per_img, box_score_thresh=score_thresh,
    )


def build_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The report's SGD over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


class TrainStep:
    """One training iteration of the report's loop: forward, sum of losses, backward, step.

    On CUDA the forward runs under ``torch.autocast`` and the loss is scaled by a
    ``GradScaler`` (the report's AMP); on a CPU everything is float32.
    """

    def __init__(self, model: nn.Module, device: torch.device):
        self.model = model.to(device).train()
        self.device = device
        self.optimizer = build_optimizer(self.model)
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None

    def __call__(self, images: List[torch.Tensor], targets: List[Dict]) -> float:
        """Train on one batch (already on the device); returns the summed loss."""
        with torch.autocast(self.device.type, enabled=self.amp):
            loss_dict = self.model(images, targets)
            losses = sum(loss for loss in loss_dict.values())
        self.optimizer.zero_grad()
        if self.scaler is not None:
            self.scaler.scale(losses).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            losses.backward()
            self.optimizer.step()
        return losses.item()


@torch.no_grad()
def predict(model: nn.Module, image: np.ndarray, device: torch.device) -> Dict[str, torch.Tensor]:
    """Inference on one ``HxWx3 uint8`` RGB image, as a submission needs it.

    The model resizes the image to its ``min_size``, and its postprocess pastes the
    ``28x28`` mask probabilities into full-size masks; these are thresholded at 0.5 and moved
    to the CPU with the boxes, scores and labels.
    """
    output = model([image_to_tensor(image).to(device)])[0]
    return {
        "boxes": output["boxes"].cpu(),
        "scores": output["scores"].cpu(),
        "labels": output["labels"].cpu(),
        "masks": (output["masks"][:, 0] > 0.5).cpu(),
    }


def to_coco_entries(prediction: Dict[str, torch.Tensor]) -> List[Dict]:
    """Submission entries of :func:`predict`'s output, as a report writes them: for each
    detection its box as ``[x, y, w, h]``, score, category (the label, 1..K) and its
    full-size mask encoded by ``pycocotools.mask.encode`` (counts as text)."""
    boxes = prediction["boxes"].numpy().astype(np.float64)
    boxes[:, 2:] -= boxes[:, :2]
    entries = []
    for box, score, label, mask in zip(boxes.tolist(), prediction["scores"].tolist(),
                                       prediction["labels"].tolist(), prediction["masks"]):
        rle = mask_util.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        entries.append({"bbox": box, "score": float(score), "category_id": int(label),
                        "segmentation": rle})
    return entries
