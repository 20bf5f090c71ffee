"""INPUT.RESIZE_MODE "scale": cells keep their pixel size whatever the image's size."""

import numpy as np
import pytest
from conftest import quick_cfg
from detectron2.data import transforms as T
from fvcore.transforms.transform import NoOpTransform

from seg_project.data.mapper import CellsDatasetMapper, build_augmentations
from seg_project.data.resize import RandomScale, build_resize, tta_resizes


def test_scale_one_resamples_nothing_and_other_scales_keep_the_aspect_ratio():
    image = np.zeros((100, 60, 3), dtype=np.uint8)
    assert isinstance(RandomScale([1.0]).get_transform(image), NoOpTransform)
    tfm = RandomScale([0.5]).get_transform(image)
    assert tfm.apply_image(image).shape == (50, 30, 3)
    shapes = [RandomScale([0.5, 2.0], "range").get_transform(image).apply_image(image).shape
              for _ in range(20)]
    sizes = {shape[0] for shape in shapes}
    assert min(sizes) >= 50 and max(sizes) <= 200 and len(sizes) > 5
    widths = {shape[1] for shape in shapes}
    assert min(widths) >= 30 and max(widths) <= 120 and len(widths) > 5
    for height, width, _ in shapes:  # one factor for both sides: 100 x 60 keeps its aspect
        assert abs(width / 60 - height / 100) <= 0.5 / 60 + 0.5 / 100, (height, width)


def test_scale_mode_resizes_by_the_factor_not_to_a_short_side():
    cfg = quick_cfg(**{"INPUT.RESIZE_MODE": "scale", "INPUT.SCALE_TEST": 1.0,
                       "INPUT.SCALE_TRAIN": (0.5,)})
    small, large = np.zeros((40, 50, 3), np.uint8), np.zeros((900, 700, 3), np.uint8)
    for image in (small, large):  # short-side mode would give 256 for both
        out, _ = T.apply_augmentations([build_resize(cfg, is_train=False)], image)
        assert out.shape == image.shape
        out, _ = T.apply_augmentations([build_resize(cfg, is_train=True)], image)
        assert out.shape[:2] == (image.shape[0] // 2, image.shape[1] // 2)
    short_side = quick_cfg()
    out, _ = T.apply_augmentations([build_resize(short_side, is_train=False)], small)
    assert min(out.shape[:2]) == short_side.INPUT.MIN_SIZE_TEST
    cfg.TEST.AUG.SCALES = (0.5, 1.0)
    assert [r.scales for r in tta_resizes(cfg)] == [[0.5], [1.0]]
    with pytest.raises(ValueError, match="RESIZE_MODE"):
        build_resize(quick_cfg(**{"INPUT.RESIZE_MODE": "shortest"}), is_train=True)


def test_the_mapper_scales_images_boxes_and_masks_together(synthetic_root):
    from detectron2.data import DatasetCatalog

    from seg_project.data.catalog import register_cells

    name = "cells_resize_test"
    register_cells(name, synthetic_root / "train")
    record = DatasetCatalog.get(name)[0]
    cfg = quick_cfg(**{"INPUT.RESIZE_MODE": "scale", "INPUT.SCALE_TRAIN": (0.5,),
                       "INPUT.RANDOM_FLIP": "none", "INPUT.VFLIP_PROB": 0.0})
    assert [type(a).__name__ for a in build_augmentations(cfg, True)] == ["RandomScale"]
    out = CellsDatasetMapper(cfg, is_train=True)(record)
    height, width = round(record["height"] * 0.5), round(record["width"] * 0.5)
    assert tuple(out["image"].shape[1:]) == (height, width)
    instances = out["instances"]
    assert instances.image_size == (height, width)
    boxes = instances.gt_boxes.tensor.numpy()
    mask_boxes = instances.gt_masks.get_bounding_boxes().tensor.numpy()
    assert np.abs(boxes - mask_boxes).max() <= 1.0  # scaled boxes hug the scaled masks
