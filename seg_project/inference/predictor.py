"""Prediction with a trained model: images of any size -> COCO result entries (RLE masks).

``Predictor`` loads a config and weights and predicts image files or arrays; each image gives
a list of entries ``{"bbox": [x, y, w, h], "score", "category_id" (dataset id 1..K),
"segmentation": {"size": [H, W], "counts": str}}`` at the image's original size. With
``tta=True`` it merges horizontal and vertical flips at several scales (``CellsTTA``). Images
larger than ``TEST.TILE.SIZE`` (after the resize) are predicted in tiles, with or without TTA.
"""

import copy
import logging
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import GeneralizedRCNNWithTTA, build_model
from fvcore.transforms import HFlipTransform, NoOpTransform, VFlipTransform

from ..checkpoint import CellsCheckpointer, config_asks
from ..data.image_io import read_image
from ..data.intensity import resolve_intensity_rule
from ..data.mapper import to_model_format
from ..data.resize import build_resize, tta_resizes
from ..utils.device import resolve_device
from .postprocess import RLEOutputModel, instances_to_coco_entries, postprocess_to_rle
from .tiling import TiledInference

__all__ = ["CellsTTA", "FlipResizeTTAMapper", "Predictor"]

logger = logging.getLogger(__name__)


class FlipResizeTTAMapper:
    """Test-time views of an image: each resize as is, flipped left-right and flipped
    top-bottom (Detectron2's ``DatasetMapperTTA`` has only the horizontal flip).

    Args:
        resizes: one resize per view scale (:func:`seg_project.data.resize.tta_resizes`).
        hflip: add left-right flipped views.
        vflip: add top-bottom flipped views.
    """

    def __init__(self, resizes: Sequence[T.Augmentation], hflip: bool = True,
                 vflip: bool = True):
        self.resizes = list(resizes)
        self.flips = [None]
        if hflip:
            self.flips.append(T.RandomFlip(prob=1.0, horizontal=True, vertical=False))
        if vflip:
            self.flips.append(T.RandomFlip(prob=1.0, horizontal=False, vertical=True))

    def __call__(self, dataset_dict: Dict) -> List[Dict]:
        image = dataset_dict["image"].permute(1, 2, 0).numpy()
        height, width = dataset_dict["height"], dataset_dict["width"]
        # The image may already be resized (a test data loader's); boxes map back through it.
        if image.shape[:2] != (height, width):
            original = T.ResizeTransform(height, width, image.shape[0], image.shape[1])
        else:
            original = NoOpTransform()
        views = []
        for resize in self.resizes:
            for flip in self.flips:
                augs = [resize] + ([flip] if flip else [])
                new_image, tfms = T.apply_augmentations(augs, np.copy(image))
                view = copy.copy(dataset_dict)
                view["image"] = torch.from_numpy(np.ascontiguousarray(new_image.transpose(2, 0, 1)))
                view["transforms"] = original + tfms
                views.append(view)
        return views


class CellsTTA(GeneralizedRCNNWithTTA):
    """Detectron2's TTA wrapper with vertical flips undone on masks, and masks returned as
    RLE crops (:func:`seg_project.inference.postprocess.postprocess_to_rle`) instead of full
    bitmaps.

    Inputs are dicts with ``image`` (CHW, model format; original size or resized),
    ``height`` and ``width`` (the original size).
    """

    def __init__(self, cfg, model, batch_size: int = 3, mask_threshold: float = 0.5):
        aug = cfg.TEST.AUG
        mapper = FlipResizeTTAMapper(tta_resizes(cfg), aug.FLIP, aug.VFLIP)
        super().__init__(cfg, model, tta_mapper=mapper, batch_size=batch_size)
        self.mask_threshold = mask_threshold
        self.tiler = TiledInference.from_config(cfg)

    def _batch_inference(self, batched_inputs, detected_instances=None):
        if self.tiler is None:
            return super()._batch_inference(batched_inputs, detected_instances)
        return self.tiler.inference(self.model, batched_inputs, detected_instances)

    def _reduce_pred_masks(self, outputs, tfms):
        for output, tfm in zip(outputs, tfms):
            if any(isinstance(t, HFlipTransform) for t in tfm.transforms):
                output.pred_masks = output.pred_masks.flip(dims=[3])
            if any(isinstance(t, VFlipTransform) for t in tfm.transforms):
                output.pred_masks = output.pred_masks.flip(dims=[2])
        return torch.stack([o.pred_masks for o in outputs], dim=0).mean(dim=0)

    def _inference_one_image(self, inputs):
        height, width = inputs["height"], inputs["width"]
        views, tfms = self._get_augmented_inputs(inputs)
        with self._turn_off_roi_heads(["mask_on", "keypoint_on"]):
            boxes, scores, classes = self._get_augmented_boxes(views, tfms)
        merged = self._merge_detections(boxes, scores, classes, (height, width))
        if self.cfg.MODEL.MASK_ON and len(merged):
            outputs = self._batch_inference(views, self._rescale_detected_boxes(views, merged,
                                                                                tfms))
            merged.pred_masks = self._reduce_pred_masks(outputs, tfms)
        return {"instances": postprocess_to_rle(merged, height, width, self.mask_threshold)}


class Predictor:
    """Predict cell instances with a config and a weights file.

    Args:
        cfg: a config with seg_project's keys (:func:`seg_project.config.load_config`).
        weights: a weights file (``model_best.pth``, ``model_final.pth``, a model-zoo URL);
            default ``cfg.MODEL.WEIGHTS``.
        device: "cpu", "cuda", "cuda:1"...; default ``cfg.MODEL.DEVICE`` (cpu without a GPU).
        tta: merge flipped and rescaled views (``TEST.AUG.MIN_SIZES``, ``MAX_SIZE``, ``FLIP``,
            ``VFLIP``).
        score_threshold: keep detections scoring at least this; default
            ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``.
        max_detections: detections per image; default ``TEST.DETECTIONS_PER_IMAGE``.
        mask_threshold: mask probability threshold; default ``TEST.MASK_THRESHOLD``.

    Raises:
        WeightsNotFoundError: the weights file is missing or cannot be downloaded.
        WeightsError: the file is not a readable checkpoint, or its box or mask predictors do
            not fit the config's classes (``MODEL.ROI_HEADS.NUM_CLASSES``).
    """

    def __init__(self, cfg, weights: Optional[str] = None, device: Optional[str] = None,
                 tta: bool = False, score_threshold: Optional[float] = None,
                 max_detections: Optional[int] = None, mask_threshold: Optional[float] = None):
        cfg = cfg.clone()
        cfg.defrost()
        if weights is not None:
            cfg.MODEL.WEIGHTS = weights
        cfg.MODEL.DEVICE = device or cfg.MODEL.DEVICE
        cfg.MODEL.DEVICE, note = resolve_device(cfg.MODEL.DEVICE)
        if note:
            logger.warning(f"MODEL.DEVICE {note}")
        if score_threshold is not None:
            cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_threshold
        if max_detections is not None:
            cfg.TEST.DETECTIONS_PER_IMAGE = max_detections
        # 16-bit/float test images are mapped as the model's training images were.
        self.intensity_rule = resolve_intensity_rule(cfg)
        cfg.INPUT.INTENSITY_RANGE = self.intensity_rule.to_config() if self.intensity_rule else ()
        cfg.freeze()
        self.cfg = cfg
        model = build_model(cfg)
        model.eval()
        CellsCheckpointer(model).load_for_inference(cfg.MODEL.WEIGHTS, config_asks(cfg))
        self.tta = tta
        if mask_threshold is None:
            mask_threshold = cfg.TEST.MASK_THRESHOLD
        self.model = (CellsTTA(cfg, model, mask_threshold=mask_threshold) if tta
                      else RLEOutputModel(model, mask_threshold, TiledInference.from_config(cfg)))
        self.resize = build_resize(cfg, is_train=False)
        self.class_to_category = self._class_to_category(cfg)

    @staticmethod
    def _class_to_category(cfg) -> Dict[int, int]:
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
            mapping = MetadataCatalog.get(name).get("thing_dataset_id_to_contiguous_id", None)
            if mapping and len(mapping) == num_classes:
                return {v: k for k, v in mapping.items()}
        return {k: k + 1 for k in range(num_classes)}  # the course's ids 1..K

    def _inputs(self, image: np.ndarray) -> Dict:
        height, width = image.shape[:2]
        image = to_model_format(image, self.cfg.INPUT.FORMAT)
        if not self.tta:
            image, _ = T.apply_augmentations([self.resize], image)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    @torch.no_grad()
    def predict_images(self, images: Sequence[np.ndarray]) -> List[List[Dict]]:
        """Predict a batch of ``HxWx3 uint8`` RGB images; one list of entries per image."""
        outputs = self.model([self._inputs(image) for image in images])
        return [instances_to_coco_entries(o["instances"], None, self.class_to_category)
                for o in outputs]

    def predict_image(self, image: np.ndarray) -> List[Dict]:
        """Predict one ``HxWx3 uint8`` RGB image."""
        return self.predict_images([image])[0]

    def predict_files(self, paths: Iterable, batch_size: int = 1
                      ) -> Iterator[Tuple[Path, List[Dict]]]:
        """Yield ``(path, entries)`` for each image file, read with the project's reader."""
        batch: List[Path] = []
        for path in paths:
            batch.append(Path(path))
            if len(batch) == batch_size:
                yield from zip(batch, self.predict_images(self._read(batch)))
                batch = []
        if batch:
            yield from zip(batch, self.predict_images(self._read(batch)))

    def _read(self, paths: Sequence[Path]) -> List[np.ndarray]:
        return [read_image(p, self.intensity_rule) for p in paths]
