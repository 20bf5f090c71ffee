"""Ground-truth instance masks kept as small crops instead of full-size bitmaps.

Detectron2's ``BitMasks`` hold one full-size bitmap per instance: for an 800x800 training
image with 700 cells that is 450 MB per image, built by decoding every full-size RLE and
resizing each mask through PIL. ``CroppedMasks`` keep each mask as its bounding-box crop at
the source resolution plus where that crop lies in the (augmented) image; resizing, flips,
90-degree rotations/transposes and crops only change that placement (flips, rotations and
transposes also mirror/turn the small crops, exactly; crops clear the pixels they cut off).
``crop_and_resize`` - the one operation Mask R-CNN's mask loss needs - samples the crops with
ROIAlign like ``BitMasks.crop_and_resize`` samples full-size masks.

One pixel of zero padding surrounds every crop, so ROIAlign's bilinear samples just outside a
mask read zeros, as they would in a full-size bitmap.

How the targets compare with ``BitMasks`` (28x28 targets at the ground-truth boxes, measured on
480 instances of 8 synthetic 256x256 images and 710 of 4 CoNSeP images; tests/test_transforms.py
checks these figures):

- Unresized, under horizontal and vertical flips: equal, sample for sample, with two
  exceptions. (1) Exact ties: a sample whose exact value is 0.5 lies on the threshold, and
  float32 rounding of its position decides it, which differs between image and crop
  coordinates: 0.03% of the bits (Detectron2 itself differs by as much from its own result
  for the same mask shifted by 300 pixels). (2) Masks touching the image border: within half
  a pixel of the border ``BitMasks`` reads the clamped border pixel where this reads the zero
  padding: 0.08-0.10% of those masks' bits.
- Resized (deliberately different): these targets do not change with the resize, because
  they sample the source-resolution crop (at scale s they equal the unresized ones but for
  ties), while ``BitMasks`` sample a bitmap first resized with nearest neighbour. The
  per-instance IoU of the two targets: at scale 0.5 mean 0.86 (min 0.50-0.56; 9-11% of the
  bits differ), at scale 2.0 mean 0.98-0.99 (min 0.93-0.94; 1% of the bits), at 0.8 mean
  0.92-0.93 and at 1.33 mean 0.95; proposal-like boxes (jittered by up to 15%) give the same
  figures within 0.015. The difference is the resampling loss of ``BitMasks`` (a nearest
  resize by 0.5 drops every other row and column), not an error here.
"""

from typing import List, Sequence, Union

import numpy as np
import torch
from detectron2.structures import Boxes
from torchvision.ops import roi_align

from .rle import decode_crop

__all__ = ["CroppedMasks"]

_PAD = 1


def _pixel_centres(shape, origin: torch.Tensor, scale: torch.Tensor):
    """Image coordinates of the crop pixels' centres: ``(N, cols)`` x and ``(N, rows)`` y."""
    _, rows, cols = shape
    cx = origin[:, :1] + (torch.arange(cols, dtype=torch.float32) + 0.5) * scale[:, :1]
    cy = origin[:, 1:] + (torch.arange(rows, dtype=torch.float32) + 0.5) * scale[:, 1:]
    return cx, cy


class CroppedMasks:
    """N instance masks stored as zero-padded crops with an affine placement in the image.

    Attributes:
        tensor: ``(N, H, W)`` bool, crop i in the top-left of slice i (rest zero).
        origin: ``(N, 2)`` float, image coordinates ``(x, y)`` of the slice's top-left corner.
        scale: ``(N, 2)`` float, image pixels per crop pixel along ``(x, y)``.
    """

    def __init__(self, tensor: torch.Tensor, origin: torch.Tensor, scale: torch.Tensor):
        self.tensor = tensor.to(torch.bool)
        self.origin = origin.to(torch.float32)
        self.scale = scale.to(torch.float32)
        assert self.tensor.dim() == 3 and len(self.origin) == len(self.scale) == len(self.tensor)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_crops(cls, crops: Sequence[np.ndarray], offsets: Sequence[Sequence[int]]):
        """Pack boolean crops whose top-left pixels lie at ``offsets`` ``(x0, y0)``."""
        count = len(crops)
        height = max((c.shape[0] for c in crops), default=0) + 2 * _PAD
        width = max((c.shape[1] for c in crops), default=0) + 2 * _PAD
        packed = np.zeros((count, height, width), dtype=bool)
        for i, crop in enumerate(crops):
            packed[i, _PAD:_PAD + crop.shape[0], _PAD:_PAD + crop.shape[1]] = crop
        origin = torch.as_tensor(np.asarray(offsets, dtype=np.float32).reshape(count, 2) - _PAD)
        return cls(torch.from_numpy(packed), origin, torch.ones(count, 2))

    @classmethod
    def from_rles(cls, rles: Sequence[dict], boxes_xywh: np.ndarray):
        """Decode compressed RLEs inside their integer ``XYWH`` boxes (never full size)."""
        boxes = np.asarray(boxes_xywh, dtype=np.int64).reshape(-1, 4)
        crops = [decode_crop(rle, (x, y, x + w, y + h)) for rle, (x, y, w, h) in zip(rles, boxes)]
        return cls.from_crops(crops, boxes[:, :2])

    # ------------------------------------------------------------------ geometry
    def resize(self, scale_x: float, scale_y: float) -> "CroppedMasks":
        """The masks of the image resized by these factors."""
        factor = torch.tensor([scale_x, scale_y], dtype=torch.float32)
        return CroppedMasks(self.tensor, self.origin * factor, self.scale * factor)

    def flip(self, image_size: float, horizontal: bool) -> "CroppedMasks":
        """The masks of the image mirrored left-right (``horizontal``) or top-bottom;
        ``image_size`` is the image width (or height)."""
        axis, dim = (0, 2) if horizontal else (1, 1)
        extent = self.tensor.shape[dim] * self.scale[:, axis]
        origin = self.origin.clone()
        origin[:, axis] = image_size - (self.origin[:, axis] + extent)
        return CroppedMasks(self.tensor.flip(dim), origin, self.scale)

    def dihedral(self, transform) -> "CroppedMasks":
        """The masks of the image reoriented by a
        :class:`~seg_project.data.augmentations.DihedralTransform` (transpose and/or quarter
        turns): each crop is transposed/turned the same way (exact) and placed at the
        transformed corner of its slice."""
        tensor = self.tensor.transpose(1, 2) if transform.transpose else self.tensor
        tensor = torch.rot90(tensor, transform.k, dims=(1, 2)).contiguous()
        scale = self.scale.flip(1) if transform.transpose != (transform.k % 2 == 1) else self.scale
        extent = torch.tensor([self.tensor.shape[2], self.tensor.shape[1]],
                              dtype=torch.float64) * self.scale.double()
        corners = np.concatenate([self.origin.double().numpy(),
                                  (self.origin.double() + extent).numpy()])
        moved = transform.apply_coords(corners).reshape(2, -1, 2)
        origin = torch.from_numpy(moved.min(axis=0)).to(torch.float32)
        return CroppedMasks(tensor, origin.reshape(-1, 2), scale.clone())

    def crop(self, x0: float, y0: float, width: float, height: float) -> "CroppedMasks":
        """The masks of the image cropped to ``[x0, x0 + width) x [y0, y0 + height)``.

        Crop pixels whose centre falls outside the window are cleared, so an instance cut by
        the crop keeps its visible part (at scale 1 with whole-pixel windows: exactly the
        pixels of the cropped full-size mask); instances outside become empty.
        """
        origin = self.origin - torch.tensor([x0, y0], dtype=torch.float32)
        if len(self) == 0:
            return CroppedMasks(self.tensor, origin, self.scale)
        cx, cy = _pixel_centres(self.tensor.shape, origin, self.scale)
        keep_x = (cx >= 0) & (cx < width)
        keep_y = (cy >= 0) & (cy < height)
        tensor = self.tensor & keep_y[:, :, None] & keep_x[:, None, :]
        return CroppedMasks(tensor, origin, self.scale)

    def occlude(self, covered: torch.Tensor) -> "CroppedMasks":
        """The masks with the pixels under ``covered`` cleared (something lies on top of them).

        Args:
            covered: ``(H, W)`` bool map of the image's covered pixels.

        Returns:
            The masks, each crop pixel cleared whose centre falls in a covered image pixel (the
            rule of :meth:`crop`; at scale 1 exactly the covered pixels).
        """
        if len(self) == 0:
            return self
        height, width = covered.shape
        cx, cy = _pixel_centres(self.tensor.shape, self.origin, self.scale)
        ix, iy = cx.floor().long(), cy.floor().long()
        inside = ((ix >= 0) & (ix < width))[:, None, :] & ((iy >= 0) & (iy < height))[:, :, None]
        hit = covered[iy.clamp(0, height - 1)[:, :, None], ix.clamp(0, width - 1)[:, None, :]]
        return CroppedMasks(self.tensor & ~(hit & inside), self.origin, self.scale)

    def pixel_counts(self) -> torch.Tensor:
        """``(N,)`` int: pixels of each mask at its crop's (source) resolution."""
        return self.tensor.flatten(1).sum(dim=1)

    def apply_transforms(self, transforms) -> "CroppedMasks":
        """Apply a Detectron2 ``TransformList`` made of resizes, flips, crops, 90-degree
        rotations/transposes (``DihedralTransform``), colour transforms (no-ops here) and no-ops.

        Raises:
            NotImplementedError: for any other transform (e.g. rotation), naming it.
        """
        from detectron2.data import transforms as T

        from .augmentations import COLOR_TRANSFORMS, DihedralTransform

        masks = self
        for t in getattr(transforms, "transforms", [transforms]):
            if isinstance(t, (T.NoOpTransform, *COLOR_TRANSFORMS)):
                continue
            if isinstance(t, T.ResizeTransform):
                masks = masks.resize(t.new_w / t.w, t.new_h / t.h)
            elif isinstance(t, T.HFlipTransform):
                masks = masks.flip(t.width, horizontal=True)
            elif isinstance(t, T.VFlipTransform):
                masks = masks.flip(t.height, horizontal=False)
            elif isinstance(t, T.CropTransform):
                masks = masks.crop(t.x0, t.y0, t.w, t.h)
            elif isinstance(t, DihedralTransform):
                masks = masks.dihedral(t)
            else:
                raise NotImplementedError(
                    "CroppedMasks supports resize, flip, crop, 90-degree rotation/transpose and "
                    f"colour transforms, not {type(t).__name__}"
                )
        return masks

    # ------------------------------------------------------------------ what Mask R-CNN uses
    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """Sample mask i inside box i (image coordinates, XYXY) on a ``mask_size`` grid.

        Returns:
            Tensor: ``(N, mask_size, mask_size)`` bool, as ``BitMasks.crop_and_resize``.
        """
        assert len(boxes) == len(self), f"{len(boxes)} != {len(self)}"
        device = self.tensor.device
        boxes = boxes.to(device=device, dtype=torch.float32)
        origin = self.origin.to(device).repeat(1, 2)
        scale = self.scale.to(device).repeat(1, 2)
        rois = torch.cat(
            [torch.arange(len(boxes), device=device, dtype=torch.float32)[:, None],
             (boxes - origin) / scale],
            dim=1,
        )
        sampled = roi_align(self.tensor[:, None].float(), rois, (mask_size, mask_size),
                            spatial_scale=1.0, sampling_ratio=0, aligned=True)
        return sampled.squeeze(1) >= 0.5

    def nonempty(self) -> torch.Tensor:
        """``(N,)`` bool: whether each mask has any pixel."""
        return self.tensor.flatten(1).any(dim=1)

    def get_bounding_boxes(self) -> Boxes:
        """Tight boxes (XYXY, image coordinates) of the masks; zeros for empty masks."""
        boxes = torch.zeros(len(self), 4)
        rows, cols = self.tensor.any(dim=2), self.tensor.any(dim=1)
        for i in range(len(self)):
            ys, xs = torch.nonzero(rows[i]).flatten(), torch.nonzero(cols[i]).flatten()
            if len(xs) == 0:
                continue
            x0, y0 = self.origin[i]
            sx, sy = self.scale[i]
            boxes[i] = torch.stack([x0 + xs[0] * sx, y0 + ys[0] * sy,
                                    x0 + (xs[-1] + 1) * sx, y0 + (ys[-1] + 1) * sy])
        return Boxes(boxes)

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "CroppedMasks":
        if isinstance(item, int):
            item = slice(item, item + 1 if item != -1 else None)
        return CroppedMasks(self.tensor[item], self.origin[item], self.scale[item])

    def to(self, *args, **kwargs) -> "CroppedMasks":
        return CroppedMasks(self.tensor.to(*args, **kwargs), self.origin.to(*args, **kwargs),
                            self.scale.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @staticmethod
    def cat(masks_list: List["CroppedMasks"]) -> "CroppedMasks":
        """Concatenate (padding the crops to a common size)."""
        height = max(m.tensor.shape[1] for m in masks_list)
        width = max(m.tensor.shape[2] for m in masks_list)
        packed = torch.zeros((sum(len(m) for m in masks_list), height, width), dtype=torch.bool,
                             device=masks_list[0].device)
        start = 0
        for m in masks_list:
            packed[start:start + len(m), :m.tensor.shape[1], :m.tensor.shape[2]] = m.tensor
            start += len(m)
        return CroppedMasks(packed, torch.cat([m.origin for m in masks_list]),
                            torch.cat([m.scale for m in masks_list]))

    def __repr__(self) -> str:
        return f"CroppedMasks(num_instances={len(self)}, crop_size={tuple(self.tensor.shape[1:])})"
