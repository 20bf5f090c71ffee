"""Dataset mapper: a dataset dict -> the model's input (image tensor + Instances).

Differences from Detectron2's ``DatasetMapper``, each for this kind of data:

- Images are read by :func:`seg_project.data.image_io.read_image` (RGBA, gray, 16-bit and
  float TIFFs; Detectron2's PIL path clips 16-bit data and cannot open float TIFFs) with the
  dataset's intensity rule (``INPUT.INTENSITY_RANGE``: one mapping of 16-bit and float values
  for every image), then put in the model's ``INPUT.FORMAT``.
- Masks stay RLE until here and become :class:`CroppedMasks`: each instance is decoded inside
  its box only, and augmentation moves the crops instead of resampling full-size bitmaps.
  With hundreds of cells per image this is what keeps data loading off the critical path.
- Optional vertical flips (``INPUT.VFLIP_PROB``) and a minimum instance area
  (``INPUT.MIN_INSTANCE_AREA``) for training.
- Optional training augmentations (all off by default; :mod:`seg_project.data.augmentations`):
  random crops (Detectron2's ``INPUT.CROP``; cut instances keep their visible part, boxes are
  recomputed from the masks and instances left below ``INPUT.MIN_INSTANCE_AREA`` are dropped),
  the 8 orientations of a square (``INPUT.ROT90``), H&E stain jitter (``INPUT.STAIN_JITTER``)
  and brightness/contrast/saturation jitter (``INPUT.COLOR_JITTER``).
- Optional copy-paste (``INPUT.COPY_PASTE``, :mod:`seg_project.data.copy_paste`): after its
  own augmentations, a training image receives instances of another training image (augmented
  the same way), pasted at random places on top of its own.
"""

import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances

from .augmentations import RandomDihedral, build_color_augmentations
from .copy_paste import CopyPaste
from .cropped_masks import CroppedMasks
from .image_io import DatasetError, read_image
from .intensity import IntensityRule
from .resize import build_resize

__all__ = ["CellsDatasetMapper", "build_augmentations", "to_model_format"]


def build_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """The mapper's augmentations.

    In order: for training a random crop (``INPUT.CROP``) if ``INPUT.CROP.AFTER_RESIZE`` is
    False (Detectron2's ``DatasetMapper`` order); the resize of ``INPUT.RESIZE_MODE``
    (:func:`seg_project.data.resize.build_resize`: a short side of ``INPUT.MIN_SIZE_TRAIN`` or a
    factor of ``INPUT.SCALE_TRAIN``, "choice" or "range" for multi-scale training); for training
    the random crop if ``INPUT.CROP.AFTER_RESIZE`` is True (the default: an "absolute" crop then
    has a fixed output size), Detectron2's horizontal flip, a vertical flip
    (``INPUT.VFLIP_PROB``), a random orientation (``INPUT.ROT90``) and colour jitter
    (``INPUT.STAIN_JITTER``, ``INPUT.COLOR_JITTER``). At inference: the resize only.

    Args:
        cfg: a config with seg_project's keys.
        is_train: whether the augmentations are for training.

    Returns:
        The augmentations, in the order they apply.
    """
    augs = [build_resize(cfg, is_train)]
    if not is_train:
        return augs
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                 vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    if cfg.INPUT.VFLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=cfg.INPUT.VFLIP_PROB, horizontal=False, vertical=True))
    if cfg.INPUT.CROP.ENABLED:
        crop = T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE)
        augs.insert(1 if cfg.INPUT.CROP.AFTER_RESIZE else 0, crop)
    if cfg.INPUT.ROT90.ENABLED:
        augs.append(RandomDihedral())
    augs += build_color_augmentations(cfg)
    return augs


def to_model_format(image: np.ndarray, image_format: str) -> np.ndarray:
    """An RGB image in the model's ``INPUT.FORMAT`` ("RGB" or "BGR")."""
    if image_format == "RGB":
        return image
    if image_format == "BGR":
        return image[:, :, ::-1]
    raise ValueError(f"INPUT.FORMAT {image_format!r} is not supported (use BGR or RGB)")


class CellsDatasetMapper:
    """Map a course-layout dataset dict to ``{"image": CHW uint8 tensor, "instances": ...}``.

    Training output carries ``gt_boxes``, ``gt_classes`` and ``gt_masks`` (:class:`CroppedMasks`);
    inference output only the image (plus the dict's ``height``/``width``/``image_id``).
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[T.Augmentation],
        image_format: str = "BGR",
        use_instance_mask: bool = True,
        min_instance_area: int = 0,
        intensity_rule: Optional[IntensityRule] = None,
        copy_paste: Optional[CopyPaste] = None,
        copy_paste_prob: float = 0.0,
        paste_sources: Sequence[Dict] = (),
    ):
        """
        Args:
            is_train: whether the output is for training (annotations kept) or inference.
            augmentations: Detectron2 augmentations; with masks, only those whose transforms
                :meth:`CroppedMasks.apply_transforms` supports (resizes, flips, crops,
                90-degree rotations/transposes, colour changes).
            image_format: "BGR" or "RGB", the model's ``INPUT.FORMAT``.
            use_instance_mask: whether to produce ``gt_masks``.
            min_instance_area: training drops instances with fewer pixels than this (after a
                crop: fewer visible pixels, counted at the source resolution).
            intensity_rule: the dataset's mapping of 16-bit and float images to uint8 (see
                :mod:`seg_project.data.image_io`); None for datasets that need none.
            copy_paste: training only: pastes instances of another training image
                (:class:`~seg_project.data.copy_paste.CopyPaste`); None disables it.
            copy_paste_prob: the share of training images that receive pasted instances.
            paste_sources: the dataset dicts pasted instances are taken from (the training
                set); copy-paste needs them (the trainer passes its training set).
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.min_instance_area = min_instance_area
        self.intensity_rule = intensity_rule
        self.copy_paste = copy_paste if is_train else None
        self.copy_paste_prob = copy_paste_prob
        self.paste_sources = list(paste_sources)
        mode = "training" if is_train else "inference"
        logging.getLogger(__name__).info(f"[CellsDatasetMapper] {mode} augmentations: "
                                         f"{augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, paste_sources: Sequence[Dict] = ()) -> Dict:
        if cfg.MODEL.MASK_ON and cfg.INPUT.MASK_FORMAT != "bitmask":
            raise ValueError("seg_project datasets hold RLE masks: set INPUT.MASK_FORMAT bitmask")
        paste = cfg.INPUT.COPY_PASTE
        if paste.ENABLED and not cfg.MODEL.MASK_ON:
            raise ValueError("INPUT.COPY_PASTE pastes instance masks: it needs MODEL.MASK_ON")
        return {
            "copy_paste": (CopyPaste(paste.MAX_INSTANCES, cfg.INPUT.MIN_INSTANCE_AREA)
                           if paste.ENABLED and is_train else None),
            "copy_paste_prob": paste.PROB,
            "paste_sources": paste_sources,
            "is_train": is_train,
            "augmentations": build_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "use_instance_mask": cfg.MODEL.MASK_ON,
            "min_instance_area": cfg.INPUT.MIN_INSTANCE_AREA,
            "intensity_rule": IntensityRule.from_config(cfg.INPUT.INTENSITY_RANGE),
        }

    def __call__(self, dataset_dict: Dict) -> Dict:
        record = {k: v for k, v in dataset_dict.items() if k != "annotations"}
        image, instances = self._read_and_augment(dataset_dict)
        if instances is not None and self.copy_paste is not None and self.paste_sources \
                and np.random.rand() < self.copy_paste_prob:
            source = self.paste_sources[np.random.randint(len(self.paste_sources))]
            source_image, source_instances = self._read_and_augment(source)
            if source_instances is not None and source_image.shape[2] == image.shape[2]:
                image, instances = self.copy_paste(image, instances, source_image,
                                                   source_instances)
        record["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if instances is not None:
            record["instances"] = instances
        return record

    def _read_and_augment(self, dataset_dict: Dict):
        """The augmented image (HWC, model format) and, in training, its instances (else
        None)."""
        image = read_image(dataset_dict["file_name"], self.intensity_rule)
        if image.shape[:2] != (dataset_dict["height"], dataset_dict["width"]):
            raise DatasetError(dataset_dict["file_name"],
                               f"image is {image.shape[0]}x{image.shape[1]} but its record says "
                               f"{dataset_dict['height']}x{dataset_dict['width']}")
        aug_input = T.AugInput(to_model_format(image, self.image_format))
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        if not (self.is_train and "annotations" in dataset_dict):
            return image, None
        return image, self._instances(dataset_dict["annotations"], transforms, image.shape[:2])

    def _instances(self, annotations: List[Dict], transforms, image_shape) -> Instances:
        annotations = [a for a in annotations if not a.get("iscrowd", 0)
                       and a.get("area", self.min_instance_area) >= self.min_instance_area]
        cropped = any(isinstance(t, T.CropTransform)
                      for t in getattr(transforms, "transforms", [transforms]))
        instances = Instances(image_shape)
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                          for a in annotations], dtype=np.float64).reshape(-1, 4)
        boxes = transforms.apply_box(boxes) if len(boxes) else boxes
        instances.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
        instances.gt_boxes.clip(image_shape)
        instances.gt_classes = torch.tensor([a["category_id"] for a in annotations],
                                            dtype=torch.int64)
        if self.use_instance_mask:
            rles = [a["segmentation"] for a in annotations]
            if any(not isinstance(rle, dict) for rle in rles):
                raise ValueError("CellsDatasetMapper needs RLE segmentations (dicts), not polygons")
            # The masks' own tight boxes (pycocotools reads them off the RLE without decoding).
            crop_boxes = mask_util.toBbox(rles).reshape(-1, 4) if rles else np.zeros((0, 4))
            masks = CroppedMasks.from_rles(rles, crop_boxes)
            instances.gt_masks = masks.apply_transforms(transforms)
            if cropped:
                # A crop cuts instances: their boxes are the tight boxes of what is left, and
                # those left empty or smaller than the minimum area go.
                instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
                instances.gt_boxes.clip(image_shape)
                counts = instances.gt_masks.pixel_counts()
                keep = (counts > 0) & (counts >= self.min_instance_area)
                instances = instances[keep]
        return instances[instances.gt_boxes.nonempty()]
