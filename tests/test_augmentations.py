"""The training augmentations of seg_project.data.augmentations and the mapper: every geometric
transform moves CroppedMasks exactly as Detectron2's BitMasks (full-size masks compared bit for
bit at scale 1), colour transforms change the image only, crops drop what they cut small, and
the defaults leave the mapper as it was."""

import copy

import numpy as np
import pytest
import torch
from conftest import TIE, quick_cfg
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, BoxMode
from scipy import ndimage
from torchvision.ops import roi_align

from seg_project.data.augmentations import (
    DihedralTransform,
    RandomDihedral,
    RandomSaturation,
    RandomStainJitter,
    StainJitterTransform,
)
from seg_project.data.cropped_masks import CroppedMasks
from seg_project.data.image_io import read_image
from seg_project.data.mapper import CellsDatasetMapper, build_augmentations
from seg_project.data.reader import load_annotated_split
from seg_project.data.rle import decode
from seg_project.data.synthetic import render_sample


def _full(masks: CroppedMasks, shape) -> np.ndarray:
    """Full-size bitmaps of scale-1 CroppedMasks with whole-number origins (slices pasted at
    their origins; nothing may lie outside the image)."""
    out = np.zeros((len(masks), *shape), bool)
    for i in range(len(masks)):
        assert masks.scale[i].tolist() == [1.0, 1.0]
        x0, y0 = (int(v) for v in masks.origin[i].tolist())
        assert masks.origin[i].tolist() == [x0, y0]
        piece = masks.tensor[i].numpy()
        top, left = max(0, -y0), max(0, -x0)
        bottom, right = min(piece.shape[0], shape[0] - y0), min(piece.shape[1], shape[1] - x0)
        if bottom <= top or right <= left:  # the slice lies outside the image
            assert not piece.any()
            continue
        assert piece[top:bottom, left:right].sum() == piece.sum()  # nothing outside the image
        out[i, y0 + top:y0 + bottom, x0 + left:x0 + right] = piece[top:bottom, left:right]
    return out


# -- CroppedMasks against BitMasks, transform by transform -------------------------------------


def _found(seed, size=120, cells=30):
    """(full masks, crops, offsets) of every instance of a synthetic image."""
    sample = render_sample(size, size + 24, cells, seed=seed)
    fulls, crops, offsets = [], [], []
    for labels in sample.masks.values():
        for index, box in enumerate(ndimage.find_objects(labels)):
            if box is None:
                continue
            full = labels == index + 1
            fulls.append(full)
            crops.append(full[box])
            offsets.append((box[1].start, box[0].start))
    return np.stack(fulls), crops, offsets


def _geometric(h, w):
    dihedral = {f"rot90 k={k}{' transposed' if tr else ''}":
                [DihedralTransform(h, w, k, tr)] for k in range(4) for tr in (False, True)}
    return {
        "hflip": [T.HFlipTransform(w)],
        "vflip": [T.VFlipTransform(h)],
        "resize to the same size": [T.ResizeTransform(h, w, h, w)],
        "crop": [T.CropTransform(13, 7, w - 30, h - 20, w, h)],
        "small crop": [T.CropTransform(w // 3, h // 3, 60, 50, w, h)],
        **dihedral,
        "crop + transpose + hflip": [T.CropTransform(5, 9, 64, 50, w, h),
                                     DihedralTransform(50, 64, 1, True), T.HFlipTransform(64)],
        "resize same + vflip + rot90 + crop": [
            T.ResizeTransform(h, w, h, w), T.VFlipTransform(h), DihedralTransform(h, w, 3, False),
            T.CropTransform(20, 2, 70, 90, h, w)],
    }


def _soft(full: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes], dim=1)
    return roi_align(full[:, None].float(), rois, (28, 28), 1.0, 0, True)[:, 0]


@pytest.mark.parametrize("name", list(_geometric(144, 120)))
def test_cropped_masks_equal_bitmasks_after_geometric_transforms(name):
    ties = total = compared = 0
    for seed in range(3):
        fulls, crops, offsets = _found(seed)
        h, w = fulls.shape[1:]
        tfm = T.TransformList(_geometric(h, w)[name])
        expected = np.stack([tfm.apply_segmentation(m.astype(np.uint8)) for m in fulls]) > 0
        shape = expected.shape[1:]
        assert shape == tfm.apply_image(np.zeros((h, w, 3), np.uint8)).shape[:2]
        mine = CroppedMasks.from_crops(crops, offsets).apply_transforms(tfm)
        np.testing.assert_array_equal(_full(mine, shape), expected)  # bit for bit
        bit = BitMasks(torch.from_numpy(expected))
        torch.testing.assert_close(mine.get_bounding_boxes().tensor,
                                   bit.get_bounding_boxes().tensor, rtol=0, atol=0)
        assert torch.equal(mine.nonempty(), bit.nonempty())
        assert mine.pixel_counts().tolist() == expected.reshape(len(expected), -1).sum(1).tolist()
        # 28x28 targets at the tight boxes, for masks away from the border (see
        # cropped_masks.py: within half a pixel of it BitMasks clamp, CroppedMasks read zeros).
        boxes = bit.get_bounding_boxes().tensor
        inside = (bit.nonempty() & (boxes[:, 0] > 0) & (boxes[:, 1] > 0)
                  & (boxes[:, 2] < shape[1]) & (boxes[:, 3] < shape[0]))
        compared += int(inside.sum())
        boxes = boxes[inside]
        got = mine[inside].crop_and_resize(boxes, 28)
        want = bit[inside].crop_and_resize(boxes, 28)
        tie = (_soft(bit.tensor[inside], boxes) - 0.5).abs() < TIE
        assert torch.equal(got[~tie], want[~tie])
        ties += int(tie.sum())
        total += tie.numel()
    assert compared >= 5 and ties / total < 0.005


def test_crop_cuts_instances_to_their_visible_part():
    crop = np.ones((6, 8), bool)
    masks = CroppedMasks.from_crops([crop, crop], [(2, 3), (40, 40)])
    cut = masks.apply_transforms(T.TransformList([T.CropTransform(5, 6, 20, 20, 50, 50)]))
    assert cut.pixel_counts().tolist() == [3 * 5, 0]
    assert cut.get_bounding_boxes().tensor.tolist() == [[0, 0, 5, 3], [0, 0, 0, 0]]
    assert cut.nonempty().tolist() == [True, False]


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("transpose", [False, True])
def test_dihedral_transform_maps_pixels_coords_and_inverse(k, transpose):
    h, w = 5, 7
    image = np.arange(h * w * 2).reshape(h, w, 2)
    t = DihedralTransform(h, w, k, transpose)
    out = t.apply_image(image)
    assert out.shape[:2] == t.output_size
    expected = np.rot90(image.swapaxes(0, 1) if transpose else image, k)
    np.testing.assert_array_equal(out, expected)
    ys, xs = np.mgrid[:h, :w]
    centres = t.apply_coords(np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1))
    np.testing.assert_array_equal(out[centres[:, 1].astype(int), centres[:, 0].astype(int)],
                                  image.reshape(-1, 2))
    np.testing.assert_array_equal(t.apply_segmentation(image[..., 0]), out[..., 0])
    inverse = t.inverse()
    np.testing.assert_array_equal(inverse.apply_image(out), image)
    points = np.array([[0.0, 0.0], [1.25, 3.5], [7.0, 5.0]])
    np.testing.assert_allclose(inverse.apply_coords(t.apply_coords(points)), points)
    box = t.apply_box(np.array([[1.0, 2.0, 4.0, 3.0]]))
    assert (box[0, 2] - box[0, 0]) * (box[0, 3] - box[0, 1]) == 3.0


def test_random_dihedral_draws_the_8_orientations_uniformly():
    np.random.seed(0)
    image = np.zeros((6, 9, 3), np.uint8)
    seen = {}
    for _ in range(1600):
        t = RandomDihedral().get_transform(image)
        key = (t.k, t.transpose) if isinstance(t, DihedralTransform) else (0, False)
        seen[key] = seen.get(key, 0) + 1
    assert len(seen) == 8
    assert all(150 <= n <= 250 for n in seen.values())


# -- colour --------------------------------------------------------------------------------------


def test_stain_jitter_is_channel_order_aware_and_near_identity_at_zero():
    rng = np.random.default_rng(0)
    rgb = rng.integers(30, 230, (16, 20, 3), dtype=np.uint8)
    same = StainJitterTransform(np.ones(3), np.zeros(3), "RGB").apply_image(rgb)
    assert np.abs(same.astype(int) - rgb).max() <= 1
    alpha, beta = np.array([1.05, 0.95, 1.02]), np.array([0.02, -0.01, 0.0])
    out_rgb = StainJitterTransform(alpha, beta, "RGB").apply_image(rgb)
    out_bgr = StainJitterTransform(alpha, beta, "BGR").apply_image(rgb[..., ::-1].copy())
    np.testing.assert_array_equal(out_bgr[..., ::-1], out_rgb)
    assert np.abs(out_rgb.astype(int) - rgb).mean() > 1
    t = RandomStainJitter(0.05, 0.02, "RGB").get_transform(rgb)
    assert np.all(np.abs(t.alpha - 1) <= 0.05) and np.all(np.abs(t.beta) <= 0.02)
    segmentation = rgb[..., 0]
    assert t.apply_segmentation(segmentation) is segmentation


def test_saturation_uses_the_image_channel_order():
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.random.seed(3)
    out_rgb = RandomSaturation(0.0, 0.0, "RGB").get_transform(rgb).apply_image(rgb)
    out_bgr = RandomSaturation(0.0, 0.0, "BGR").get_transform(rgb[..., ::-1]).apply_image(
        rgb[..., ::-1])
    np.testing.assert_array_equal(out_bgr[..., ::-1], out_rgb)
    np.random.seed(3)
    detectron2 = T.RandomSaturation(0.0, 0.0).get_transform(rgb).apply_image(rgb)
    np.testing.assert_array_equal(out_rgb, detectron2)  # Detectron2's in RGB


# -- the mapper ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records(synthetic_root):
    return load_annotated_split(synthetic_root / "train", 4, cache_dir=False)


def _recording(mapper: CellsDatasetMapper) -> list:
    """Make the mapper record the TransformList of each call."""
    applied, augmentations = [], mapper.augmentations

    def record(aug_input):
        tfm = augmentations(aug_input)
        applied.append(tfm)
        return tfm

    mapper.augmentations = record
    return applied


def _truth(record):
    masks = np.stack([decode(a["segmentation"]).astype(bool)
                      for a in record["annotations"]])
    classes = [a["category_id"] for a in record["annotations"]]
    return masks, classes


def _check_against_truth(out, record, tfm, min_area=0):
    """The mapper's output is the transformed image and the transformed full-size masks that
    keep at least ``min_area`` pixels, with their tight boxes and classes."""
    image = read_image(record["file_name"])[:, :, ::-1]
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), tfm.apply_image(image))
    masks, classes = _truth(record)
    moved = np.stack([tfm.apply_segmentation(m.astype(np.uint8)) for m in masks]) > 0
    keep = moved.reshape(len(moved), -1).sum(1)
    keep = (keep > 0) & (keep >= min_area)
    instances = out["instances"]
    shape = tuple(out["image"].shape[1:])
    assert instances.image_size == shape
    np.testing.assert_array_equal(_full(instances.gt_masks, shape), moved[keep])
    tight = BitMasks(torch.from_numpy(moved[keep])).get_bounding_boxes().tensor
    torch.testing.assert_close(instances.gt_boxes.tensor, tight, rtol=0, atol=0)
    assert instances.gt_classes.tolist() == [c for c, k in zip(classes, keep) if k]
    return keep


_PLAIN = {"INPUT.RANDOM_FLIP": "none", "INPUT.VFLIP_PROB": 0.0, "INPUT.MAX_SIZE_TRAIN": 10000}


def test_defaults_leave_the_mapper_unchanged(records):
    cfg = quick_cfg()
    assert not (cfg.INPUT.CROP.ENABLED or cfg.INPUT.ROT90.ENABLED
                or cfg.INPUT.STAIN_JITTER.ENABLED or cfg.INPUT.COLOR_JITTER.ENABLED)
    augs = build_augmentations(cfg, is_train=True)
    before = utils.build_augmentation(cfg, True) + [
        T.RandomFlip(prob=cfg.INPUT.VFLIP_PROB, horizontal=False, vertical=True)]
    assert [repr(a) for a in augs] == [repr(a) for a in before]
    assert [repr(a) for a in build_augmentations(cfg, is_train=False)] == \
        [repr(a) for a in utils.build_augmentation(cfg, False)]
    old = CellsDatasetMapper(True, augmentations=before, image_format=cfg.INPUT.FORMAT,
                             min_instance_area=cfg.INPUT.MIN_INSTANCE_AREA)
    new = CellsDatasetMapper(cfg, is_train=True)
    for record in records:
        for seed in range(3):
            np.random.seed(seed)
            a = old(copy.deepcopy(record))
            np.random.seed(seed)
            b = new(copy.deepcopy(record))
            assert torch.equal(a["image"], b["image"])
            ia, ib = a["instances"], b["instances"]
            assert torch.equal(ia.gt_boxes.tensor, ib.gt_boxes.tensor)
            assert torch.equal(ia.gt_classes, ib.gt_classes)
            for field in ("tensor", "origin", "scale"):
                assert torch.equal(getattr(ia.gt_masks, field), getattr(ib.gt_masks, field))


@pytest.mark.parametrize("crop_type,size", [("absolute", (40, 48)), ("relative", (0.5, 0.7)),
                                            ("relative_range", (0.3, 0.3))])
def test_mapper_crop_keeps_visible_parts_with_tight_boxes(records, crop_type, size):
    cuts = 0
    for i, record in enumerate(records):
        h, w = record["height"], record["width"]
        cfg = quick_cfg(**{**_PLAIN, "INPUT.MIN_SIZE_TRAIN": (min(h, w),),
                           "INPUT.CROP.ENABLED": True, "INPUT.CROP.TYPE": crop_type,
                           "INPUT.CROP.SIZE": size, "INPUT.VFLIP_PROB": 0.5,
                           "INPUT.RANDOM_FLIP": "horizontal"})
        mapper = CellsDatasetMapper(cfg, is_train=True)
        applied = _recording(mapper)
        np.random.seed(i)
        out = mapper(copy.deepcopy(record))
        (tfm,) = applied
        crop = next(t for t in tfm.transforms if isinstance(t, T.CropTransform))
        if crop_type == "absolute":
            assert (crop.h, crop.w) == (min(size[0], h), min(size[1], w))
        elif crop_type == "relative":
            assert (crop.h, crop.w) == (int(h * size[0] + 0.5), int(w * size[1] + 0.5))
        _check_against_truth(out, record, tfm)
        visible = [tfm.apply_segmentation(m.astype(np.uint8)).sum() for m in _truth(record)[0]]
        areas = [a["area"] for a in record["annotations"]]
        cuts += sum(0 < v < a for v, a in zip(visible, areas))
    assert cuts > 0  # some instances were cut, not only kept or dropped whole


@pytest.mark.parametrize("after_resize", [True, False])
def test_mapper_crop_order(records, after_resize):
    """After the resize (the default) an absolute crop has a fixed size; before it (Detectron2's
    DatasetMapper order) the crop is resized to the shortest edge."""
    record = records[0]
    h, w = record["height"], record["width"]
    short = 2 * min(h, w)
    cfg = quick_cfg(**_PLAIN, **{"INPUT.MIN_SIZE_TRAIN": (short,),
                            "INPUT.CROP.ENABLED": True, "INPUT.CROP.TYPE": "absolute",
                            "INPUT.CROP.SIZE": (50, 60), "INPUT.CROP.AFTER_RESIZE": after_resize})
    names = [type(a).__name__ for a in build_augmentations(cfg, True)][:2]
    assert names == (["ResizeShortestEdge", "RandomCrop"] if after_resize
                     else ["RandomCrop", "ResizeShortestEdge"])
    np.random.seed(0)
    out = CellsDatasetMapper(cfg, is_train=True)(copy.deepcopy(record))
    shape = tuple(out["image"].shape[1:])
    assert shape == (50, 60) if after_resize else min(shape) == short
    instances = out["instances"]
    assert len(instances) > 0 and instances.gt_masks.nonempty().all()
    tight = instances.gt_masks.get_bounding_boxes()
    tight.clip(shape)
    torch.testing.assert_close(instances.gt_boxes.tensor, tight.tensor, rtol=0, atol=0)


def test_min_instance_area_drops_instances_cut_small_by_a_crop(records):
    record = records[0]
    h, w = record["height"], record["width"]
    masks, _ = _truth(record)
    cfg = quick_cfg(**_PLAIN, **{"INPUT.MIN_SIZE_TRAIN": (min(h, w),)})
    for x0 in range(0, w // 2, 3):  # a window cutting some instance to a few pixels
        crop = T.CropTransform(x0, 0, w - x0, h, w, h)
        visible = masks[:, :, x0:].reshape(len(masks), -1).sum(1)
        areas = masks.reshape(len(masks), -1).sum(1)
        small = (visible > 0) & (visible < areas) & (visible < 12)
        if small.any():
            break
    assert small.any()
    min_area = int(visible[small].max()) + 1
    assert ((areas >= min_area) & (visible > 0) & (visible < min_area)).any()  # cut small
    cfg.INPUT.MIN_INSTANCE_AREA = min_area
    mapper = CellsDatasetMapper(cfg, is_train=True)
    instances = mapper._instances(copy.deepcopy(record["annotations"]),
                                  T.TransformList([crop]), (h, w - x0))
    expected = (visible >= min_area) & (areas >= min_area)
    assert len(instances) == int(expected.sum())
    assert instances.gt_masks.pixel_counts().tolist() == visible[expected].tolist()
    tight = BitMasks(torch.from_numpy(masks[expected][:, :, x0:])).get_bounding_boxes().tensor
    torch.testing.assert_close(instances.gt_boxes.tensor, tight, rtol=0, atol=0)


def test_mapper_rot90_moves_image_masks_and_boxes_together(records):
    orientations = set()
    for i, record in enumerate(records):
        h, w = record["height"], record["width"]
        cfg = quick_cfg(**_PLAIN, **{"INPUT.MIN_SIZE_TRAIN": (min(h, w),),
                                     "INPUT.ROT90.ENABLED": True})
        mapper = CellsDatasetMapper(cfg, is_train=True)
        applied = _recording(mapper)
        for seed in range(4):
            np.random.seed(10 * i + seed)
            out = mapper(copy.deepcopy(record))
            tfm = applied[-1]
            last = tfm.transforms[-1] if tfm.transforms else None
            if isinstance(last, DihedralTransform):
                orientations.add((last.k, last.transpose))
            assert _check_against_truth(out, record, tfm).all()
    assert len(orientations) >= 5


@pytest.mark.parametrize("sampling", ["choice", "range"])
def test_multi_scale_training_with_cropped_masks(records, sampling):
    record = records[1]
    h, w = record["height"], record["width"]
    short = min(h, w)
    # Scale 1: the output equals the unresized truth bit for bit.
    sizes = (short,) if sampling == "choice" else (short, short)
    cfg = quick_cfg(**_PLAIN, **{"INPUT.MIN_SIZE_TRAIN": sizes,
                            "INPUT.MIN_SIZE_TRAIN_SAMPLING": sampling})
    mapper = CellsDatasetMapper(cfg, is_train=True)
    applied = _recording(mapper)
    _check_against_truth(mapper(copy.deepcopy(record)), record, applied[0])
    # Several scales: the sizes vary and the boxes stay the masks' tight boxes.
    sizes = (short, 2 * short)
    cfg.INPUT.MIN_SIZE_TRAIN = sizes
    mapper = CellsDatasetMapper(cfg, is_train=True)
    seen = set()
    np.random.seed(0)
    for _ in range(8):
        out = mapper(copy.deepcopy(record))
        shape = tuple(out["image"].shape[1:])
        seen.add(min(shape))
        assert sizes[0] <= min(shape) <= sizes[1]
        instances = out["instances"]
        assert len(instances) == len(record["annotations"])
        torch.testing.assert_close(instances.gt_boxes.tensor,
                                   instances.gt_masks.get_bounding_boxes().tensor,
                                   rtol=0, atol=1e-3)
        if min(shape) == 2 * short:  # whole scale: each mask pixel becomes 2x2
            scaled = instances.gt_masks.resize(0.5, 0.5)
            np.testing.assert_array_equal(_full(CroppedMasks(scaled.tensor, scaled.origin,
                                                             torch.ones_like(scaled.scale)),
                                                (h, w)), _truth(record)[0])
    assert len(seen) >= 2


def test_colour_jitter_changes_the_image_only(records):
    opts = {**_PLAIN, "INPUT.VFLIP_PROB": 1.0}
    for i, record in enumerate(records[:3]):
        h, w = record["height"], record["width"]
        plain = quick_cfg(**opts, **{"INPUT.MIN_SIZE_TRAIN": (min(h, w),)})
        colour = quick_cfg(**opts, **{"INPUT.MIN_SIZE_TRAIN": (min(h, w),),
                                 "INPUT.STAIN_JITTER.ENABLED": True,
                                 "INPUT.STAIN_JITTER.SIGMA": 0.2,
                                 "INPUT.COLOR_JITTER.ENABLED": True,
                                 "INPUT.COLOR_JITTER.BRIGHTNESS": 0.3,
                                 "INPUT.COLOR_JITTER.CONTRAST": 0.3,
                                 "INPUT.COLOR_JITTER.SATURATION": 0.3})
        assert [type(a).__name__ for a in build_augmentations(colour, True)][-4:] == \
            ["RandomStainJitter", "RandomBrightness", "RandomContrast", "RandomSaturation"]
        np.random.seed(i)
        a = CellsDatasetMapper(plain, is_train=True)(copy.deepcopy(record))
        np.random.seed(i)
        b = CellsDatasetMapper(colour, is_train=True)(copy.deepcopy(record))
        assert a["image"].shape == b["image"].shape
        assert not torch.equal(a["image"], b["image"])
        ia, ib = a["instances"], b["instances"]
        assert torch.equal(ia.gt_boxes.tensor, ib.gt_boxes.tensor)
        assert torch.equal(ia.gt_classes, ib.gt_classes)
        for field in ("tensor", "origin", "scale"):
            assert torch.equal(getattr(ia.gt_masks, field), getattr(ib.gt_masks, field))


def test_box_mode_of_records_is_what_the_tests_assume(records):
    assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for r in records for a in r["annotations"])
