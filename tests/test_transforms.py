"""Geometry that must be exact: test-time flips mapped back, CroppedMasks against Detectron2's
BitMasks, the training mapper's flips and minimum area, and the RLE outputs that claim to be
identical to Detectron2's and pycocotools' (strictly, on generated data: nothing skips)."""

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile
import torch
import torch.nn.functional as F
from conftest import TIE, quick_cfg
from detectron2.data import transforms as T
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import BitMasks, Boxes, Instances
from scipy import ndimage
from torch import nn
from torchvision.ops import roi_align

from seg_project.data.cropped_masks import CroppedMasks
from seg_project.data.image_io import read_image, read_mask
from seg_project.data.mapper import CellsDatasetMapper
from seg_project.data.reader import load_annotated_split, read_annotated_folder
from seg_project.data.rle import decode, encode_crops
from seg_project.data.synthetic import render_sample
from seg_project.inference.postprocess import postprocess_to_rle
from seg_project.inference.predictor import CellsTTA


def _counts(rle) -> str:
    counts = rle["counts"]
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


# -- test-time augmentation -------------------------------------------------------------------

H, W = 48, 64
# An L (top bar + left bar), off-centre: a flip that is not undone moves its box away from the
# original (IoU < 0.3, so the merge keeps both) and mirrors its mask.
L_BOX = (4, 2, 32, 30)  # x0, y0, x1, y1


def _l_shape() -> np.ndarray:
    x0, y0, x1, y1 = L_BOX
    mask = np.zeros((H, W), bool)
    mask[y0:y0 + 7, x0:x1] = True
    mask[y0:y1, x0:x0 + 7] = True
    return mask


class _ContentModel(GeneralizedRCNN):
    """A stand-in Mask R-CNN whose output is a function of the (augmented) input image: one
    detection on the box of its bright pixels, and as the mask of any box it is given, the
    bright pixels inside that box (nearest-sampled to 28 x 28). A flipped view thus gives a
    flipped box and a flipped mask, which the TTA wrapper must map back."""

    def __init__(self):
        nn.Module.__init__(self)
        self.roi_heads = SimpleNamespace(mask_on=True)
        self.input_format = "BGR"
        self.views = []

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        assert not do_postprocess
        outputs = []
        for i, inputs in enumerate(batched_inputs):
            bright = inputs["image"][0] > 127
            size = tuple(bright.shape)
            if detected_instances is None:  # detection pass: boxes only
                assert not self.roi_heads.mask_on
                self.views.append(size)
                ys, xs = torch.nonzero(bright, as_tuple=True)
                box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]).float()
                outputs.append(Instances(size, pred_boxes=Boxes(box), scores=torch.tensor([0.9]),
                                         pred_classes=torch.tensor([2])))
                continue
            assert self.roi_heads.mask_on
            given = detected_instances[i]
            masks = []
            for x0, y0, x1, y1 in given.pred_boxes.tensor.round().long().tolist():
                crop = bright[y0:y1, x0:x1].float()[None, None]
                masks.append(F.interpolate(crop, size=(28, 28), mode="nearest")[0])
            out = Instances(size, **given.get_fields())
            out.pred_masks = torch.stack(masks)
            outputs.append(out)
        return outputs


@pytest.mark.parametrize("hflip,vflip,min_sizes", [
    (True, False, (H,)),
    (False, True, (H,)),
    (True, True, (H,)),
    (True, True, (H, 2 * H)),
])
def test_tta_maps_flipped_boxes_and_masks_back(hflip, vflip, min_sizes):
    cfg = quick_cfg(**{"TEST.AUG.FLIP": hflip, "TEST.AUG.VFLIP": vflip,
                  "TEST.AUG.MIN_SIZES": min_sizes, "TEST.AUG.MAX_SIZE": 1000})
    model = _ContentModel()
    tta = CellsTTA(cfg, model)
    truth = _l_shape()
    image = np.repeat(np.where(truth, 255, 0).astype(np.uint8)[None], 3, axis=0)
    (out,) = tta([{"image": torch.from_numpy(image), "height": H, "width": W}])
    views = len(min_sizes) * (1 + hflip + vflip)
    assert len(model.views) == views
    instances = out["instances"]
    assert len(instances) == 1  # every view's box landed on the same place
    assert instances.pred_boxes.tensor[0].tolist() == list(map(float, L_BOX))
    assert instances.pred_classes.tolist() == [2]
    assert instances.scores[0].item() == pytest.approx(0.9)
    mask = decode(instances.pred_rles[0]).astype(bool)
    np.testing.assert_array_equal(mask, truth)  # a mirrored view would widen the average


def test_the_stand_in_model_does_reveal_an_undone_flip():
    """Without CellsTTA's vertical un-flip (Detectron2's own wrapper), the mask is wrong: so
    the test above can fail."""
    from detectron2.modeling import GeneralizedRCNNWithTTA

    cfg = quick_cfg(**{"TEST.AUG.FLIP": False, "TEST.AUG.VFLIP": True, "TEST.AUG.MIN_SIZES": (H,),
                  "TEST.AUG.MAX_SIZE": 1000})
    tta = CellsTTA(cfg, _ContentModel())
    tta._reduce_pred_masks = lambda outputs, tfms: GeneralizedRCNNWithTTA._reduce_pred_masks(
        tta, outputs, tfms)
    truth = _l_shape()
    image = np.repeat(np.where(truth, 255, 0).astype(np.uint8)[None], 3, axis=0)
    (out,) = tta([{"image": torch.from_numpy(image), "height": H, "width": W}])
    mask = decode(out["instances"].pred_rles[0]).astype(bool)
    assert (mask & ~truth).any()


# -- CroppedMasks against BitMasks ------------------------------------------------------------


def _instances(labels_by_class, interior_only: bool):
    """(full mask, crop, (x0, y0), XYXY box) of every instance of some label images."""
    found = []
    for labels in labels_by_class:
        h, w = labels.shape
        for index, box in enumerate(ndimage.find_objects(labels)):
            if box is None:
                continue
            ys, xs = box
            if interior_only and (ys.start == 0 or xs.start == 0 or ys.stop == h or xs.stop == w):
                continue
            full = labels == index + 1
            found.append((full, full[box], (xs.start, ys.start),
                          [xs.start, ys.start, xs.stop, ys.stop]))
    return found


def _synthetic_masks(seeds, size=160, cells=40, interior_only=True):
    for seed in seeds:
        sample = render_sample(size, size + 24, cells, seed=seed)
        yield sample.masks[1].shape, _instances(sample.masks.values(), interior_only)


def _jittered(boxes: np.ndarray, shape, rng) -> np.ndarray:
    """Proposal-like boxes: gt boxes shifted and scaled by up to 20%, inside the image."""
    wh = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    out = boxes + rng.uniform(-0.2, 0.2, boxes.shape) * wh
    out[:, 0::2] = out[:, 0::2].clip(0, shape[1])
    out[:, 1::2] = out[:, 1::2].clip(0, shape[0])
    out[:, 2:] = np.maximum(out[:, 2:], out[:, :2] + 1)
    return out


def _bitmask_soft(full: torch.Tensor, boxes: torch.Tensor, size: int = 28) -> torch.Tensor:
    """What ``BitMasks.crop_and_resize`` computes before its threshold."""
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes], dim=1)
    return roi_align(full[:, None].float(), rois, (size, size), 1.0, 0, True)[:, 0]


_TRANSFORMS = {
    "none": lambda h, w: [],
    "hflip": lambda h, w: [T.HFlipTransform(w)],
    "vflip": lambda h, w: [T.VFlipTransform(h)],
    "both flips": lambda h, w: [T.HFlipTransform(w), T.VFlipTransform(h)],
    "resize to the same size + vflip": lambda h, w: [T.ResizeTransform(h, w, h, w),
                                                     T.VFlipTransform(h)],
}


@pytest.mark.parametrize("name", list(_TRANSFORMS))
def test_cropped_masks_equal_bitmasks_at_scale_1(name):
    rng = np.random.default_rng(0)
    ties = total = 0
    for (h, w), found in _synthetic_masks(seeds=range(3)):
        tfm = T.TransformList(_TRANSFORMS[name](h, w))
        full = torch.from_numpy(np.stack([tfm.apply_segmentation(m.astype(np.uint8))
                                          for m, _, _, _ in found]).astype(bool))
        bit = BitMasks(full)
        mine = CroppedMasks.from_crops([c for _, c, _, _ in found],
                                       [o for _, _, o, _ in found]).apply_transforms(tfm)
        gt = tfm.apply_box(np.array([b for _, _, _, b in found], dtype=np.float64))
        torch.testing.assert_close(mine.get_bounding_boxes().tensor,
                                   bit.get_bounding_boxes().tensor, rtol=0, atol=0)
        assert mine.nonempty().all()
        for boxes in (gt, _jittered(gt, (h, w), rng)):
            boxes = torch.as_tensor(boxes, dtype=torch.float32)
            soft = _bitmask_soft(full, boxes)
            tie = (soft - 0.5).abs() < TIE
            got, expected = mine.crop_and_resize(boxes, 28), bit.crop_and_resize(boxes, 28)
            assert torch.equal(got[~tie], expected[~tie])
            ties += int(tie.sum())
            total += tie.numel()
    assert ties / total < 0.005  # ties are rare: the equality above is not vacuous


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@pytest.mark.parametrize("scale,mean_iou", [(0.5, (0.80, 0.92)), (2.0, (0.96, 1.0))])
def test_resized_targets_differ_from_bitmasks_by_the_documented_amount(scale, mean_iou):
    """CroppedMasks sample the source-resolution crop, so their targets do not change with
    the resize; BitMasks resize the bitmap (nearest neighbour) first. The figures are the
    ones in cropped_masks.py's docstring."""
    ious = []
    for (h, w), found in _synthetic_masks(seeds=range(4), size=200, cells=50):
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        tfm = T.TransformList([T.ResizeTransform(h, w, nh, nw)])
        bit = BitMasks(torch.from_numpy(np.stack([tfm.apply_segmentation(m.astype(np.uint8))
                                                  for m, _, _, _ in found]).astype(bool)))
        crops = CroppedMasks.from_crops([c for _, c, _, _ in found], [o for _, _, o, _ in found])
        gt = np.array([b for _, _, _, b in found], dtype=np.float64)
        boxes = torch.as_tensor(tfm.apply_box(gt), dtype=torch.float32)
        mine = crops.apply_transforms(tfm).crop_and_resize(boxes, 28)
        at_scale_1 = crops.crop_and_resize(torch.as_tensor(gt, dtype=torch.float32), 28)
        assert (mine != at_scale_1).float().mean() < 0.002  # the same target (but for ties)
        ious.append(_iou(mine, bit.crop_and_resize(boxes, 28)))
    ious = torch.cat(ious)
    assert mean_iou[0] <= ious.mean().item() <= mean_iou[1]


def test_cropped_masks_refuse_transforms_they_cannot_move():
    masks = CroppedMasks.from_crops([np.ones((2, 2), bool)], [(1, 1)])
    with pytest.raises(NotImplementedError, match="RotationTransform"):
        masks.apply_transforms(T.TransformList([T.RotationTransform(8, 8, 30)]))


# -- the training mapper ----------------------------------------------------------------------


def _place(masks: CroppedMasks, shape) -> np.ndarray:
    """Full-size bitmaps of CroppedMasks whose scales and origins are whole numbers (a test
    helper: each slice is scaled up and pasted at its origin, clipped to the image)."""
    out = np.zeros((len(masks), *shape), bool)
    for i in range(len(masks)):
        sx, sy = (int(v) for v in masks.scale[i].tolist())
        x0, y0 = (int(v) for v in masks.origin[i].tolist())
        assert masks.scale[i].tolist() == [sx, sy] and masks.origin[i].tolist() == [x0, y0]
        piece = masks.tensor[i].numpy().repeat(sy, axis=0).repeat(sx, axis=1)
        top, left = max(0, -y0), max(0, -x0)
        bottom = min(piece.shape[0], shape[0] - y0)
        right = min(piece.shape[1], shape[1] - x0)
        assert not piece[:top].any() and not piece[bottom:].any()  # nothing outside the image
        assert not piece[:, :left].any() and not piece[:, right:].any()
        out[i, y0 + top:y0 + bottom, x0 + left:x0 + right] = piece[top:bottom, left:right]
    return out


@pytest.mark.parametrize("scale", [1, 2])
def test_mapper_vertical_flip_keeps_image_boxes_and_masks_aligned(synthetic_root, scale):
    records = load_annotated_split(synthetic_root / "train", 4, cache_dir=False)
    for record in records:
        h, w = record["height"], record["width"]
        cfg = quick_cfg(**{"INPUT.VFLIP_PROB": 1.0, "INPUT.RANDOM_FLIP": "none",
                      "INPUT.MIN_SIZE_TRAIN": (scale * min(h, w),),
                      "INPUT.MAX_SIZE_TRAIN": 10000})
        out = CellsDatasetMapper(cfg, is_train=True)(copy.deepcopy(record))
        image = read_image(record["file_name"])[::-1, :, ::-1]  # flipped, BGR
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
        if scale == 1:
            np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), image)
        instances = out["instances"]
        assert len(instances) == len(record["annotations"])
        masks = instances.gt_masks
        torch.testing.assert_close(instances.gt_boxes.tensor, masks.get_bounding_boxes().tensor,
                                   rtol=0, atol=0)
        expected = np.stack([decode(a["segmentation"])[::-1]
                             .repeat(scale, axis=0).repeat(scale, axis=1).astype(bool)
                             for a in record["annotations"]])
        np.testing.assert_array_equal(_place(masks, (scale * h, scale * w)), expected)
        tight = BitMasks(torch.from_numpy(expected)).get_bounding_boxes().tensor
        torch.testing.assert_close(instances.gt_boxes.tensor, tight, rtol=0, atol=0)


@pytest.fixture(scope="module")
def areas_record(tmp_path_factory):
    """An image with instances of 1..8 pixels (class 1) and of 3 and 6 pixels (class 2)."""
    folder = tmp_path_factory.mktemp("areas") / "img"
    folder.mkdir()
    h, w = 24, 30
    tifffile.imwrite(folder / "image.tif", np.full((h, w, 3), 60, np.uint8))
    class1 = np.zeros((h, w), np.uint16)
    for k in range(1, 9):
        class1[2 * k, 2:2 + k] = k  # a bar of k pixels
    class2 = np.zeros((h, w), np.uint16)
    class2[3:6, 20] = 1
    class2[8:10, 22:25] = 2
    tifffile.imwrite(folder / "class1.tif", class1)
    tifffile.imwrite(folder / "class2.tif", class2)
    return read_annotated_folder(folder, 4)


@pytest.mark.parametrize("min_area", [0, 1, 3, 4, 8, 9])
def test_min_instance_area_drops_exactly_the_smaller_instances(areas_record, min_area):
    record = areas_record
    assert sorted(a["area"] for a in record["annotations"]) == [1, 2, 3, 3, 4, 5, 6, 6, 7, 8]
    cfg = quick_cfg(**{"INPUT.MIN_INSTANCE_AREA": min_area, "INPUT.VFLIP_PROB": 0.0,
                  "INPUT.RANDOM_FLIP": "none", "INPUT.MIN_SIZE_TRAIN": (24,),
                  "INPUT.MAX_SIZE_TRAIN": 10000})
    instances = CellsDatasetMapper(cfg, is_train=True)(copy.deepcopy(record))["instances"]
    kept = [a for a in record["annotations"] if a["area"] >= min_area]
    pixels = instances.gt_masks.tensor.flatten(1).sum(1).tolist()
    assert sorted(zip(instances.gt_classes.tolist(), pixels)) == \
        sorted((a["category_id"], a["area"]) for a in kept)
    boxes = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in kept)],
                         dtype=torch.float32).reshape(-1, 4)
    torch.testing.assert_close(instances.gt_boxes.tensor, boxes, rtol=0, atol=0)


# -- outputs that claim to be identical --------------------------------------------------------


def _raw_detections(seed: int, kind: str, n: int = 60, size=(200, 260)) -> Instances:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        masks = torch.rand(n, 1, 28, 28, generator=g)
    elif kind == "smooth":
        masks = F.avg_pool2d(torch.rand(n, 1, 34, 34, generator=g), 7, 1)
    else:  # values on a grid of quarters: many exact ties at the 0.5 threshold
        masks = (torch.rand(n, 1, 28, 28, generator=g) * 4).floor() / 4
    h, w = size
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) - 10
    wh = torch.rand(n, 2, generator=g) * 90 + 0.2
    boxes = torch.cat([xy, xy + wh], dim=1)
    return Instances(size, pred_boxes=Boxes(boxes), scores=torch.rand(n, generator=g),
                     pred_classes=torch.randint(0, 4, (n,), generator=g), pred_masks=masks)


@pytest.mark.parametrize("kind", ["random", "smooth", "ties"])
@pytest.mark.parametrize("out_size", [(200, 260), (157, 203), (431, 560)])
def test_rle_postprocess_is_byte_identical_to_detectron2_paste_and_pycocotools(kind, out_size):
    from detectron2.modeling.postprocessing import detector_postprocess

    raw = _raw_detections(sum(out_size), kind)
    fields = {k: Boxes(v.tensor.clone()) if k == "pred_boxes" else v.clone()
              for k, v in raw.get_fields().items()}
    reference = detector_postprocess(Instances(raw.image_size, **fields), *out_size)
    mine = postprocess_to_rle(raw, *out_size)
    assert len(mine) == len(reference) > 0
    assert torch.equal(mine.pred_boxes.tensor, reference.pred_boxes.tensor)
    assert torch.equal(mine.scores, reference.scores)
    full = np.asfortranarray(reference.pred_masks.numpy().transpose(1, 2, 0).astype(np.uint8))
    expected = mask_util.encode(full)
    assert [r["size"] for r in mine.pred_rles] == [list(out_size)] * len(mine)
    assert [_counts(r) for r in mine.pred_rles] == [_counts(r) for r in expected]


def _random_crops(rng, height, width, count):
    crops = []
    for _ in range(count):
        h, w = rng.integers(1, height + 1), rng.integers(1, width + 1)
        y0, x0 = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        crop = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        crops.append((crop, int(x0), int(y0)))
    # Edge cases: whole image, corners, runs that continue from the foot of one column to the
    # head of the next (merged in column-major order), empty crops, one-pixel images' worth.
    crops.append((np.ones((height, width), bool), 0, 0))
    crops.append((np.zeros((height, width), bool), 0, 0))
    crops.append((np.ones((1, 1), bool), width - 1, height - 1))
    crops.append((np.ones((1, 1), bool), 0, 0))
    if width >= 2:
        column_wrap = np.zeros((height, 2), bool)
        column_wrap[-3:, 0] = column_wrap[:2, 1] = True
        crops.append((column_wrap, width // 2 - 1 if width > 2 else 0, 0))
    columns = min(3, width)
    crops.append((np.ones((height, columns), bool), width - columns, 0))
    return crops


@pytest.mark.parametrize("height,width", [(1, 1), (1, 7), (9, 1), (13, 17), (64, 48)])
def test_rle_encoder_is_byte_identical_to_pycocotools_on_random_masks(height, width):
    rng = np.random.default_rng(height * 100 + width)
    crops = _random_crops(rng, height, width, 40)
    got = encode_crops(crops, height, width)
    for (crop, x0, y0), rle in zip(crops, got):
        full = np.zeros((height, width), np.uint8, order="F")
        full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        expected = mask_util.encode(full)
        assert rle["size"] == [height, width]
        assert _counts(rle) == _counts(expected)


def test_rle_encoder_is_byte_identical_to_pycocotools_on_the_generated_dataset(synthetic_root):
    """test_reader.py checks this on the real data when it is present; this never skips."""
    records = load_annotated_split(synthetic_root / "train", 4, cache_dir=False)
    checked = 0
    for record in records:
        folder = Path(record["file_name"]).parent
        for path in sorted(folder.glob("class*.tif")):
            category = int(path.stem[len("class"):]) - 1
            mask = read_mask(path)
            got = [_counts(a["segmentation"]) for a in record["annotations"]
                   if a["category_id"] == category]
            expected = [_counts(mask_util.encode(np.asfortranarray(mask == i, dtype=np.uint8)))
                        for i in np.unique(mask[mask > 0])]
            assert got == expected
            checked += len(got)
    assert checked >= 6 * len(records)  # the fixture makes 6..12 cells per image
