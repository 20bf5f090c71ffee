"""Copy-paste (seg_project/data/copy_paste.py): pasted masks, occluded masks and boxes equal a
dense reference painted with full-size masks, bit for bit; the mapper and the trainer wire it
behind INPUT.COPY_PASTE."""

import copy

import numpy as np
import pytest
import torch
from conftest import quick_cfg
from detectron2.structures import Boxes, Instances

from seg_project.data.copy_paste import CopyPaste, PasteDraw, rasterize
from seg_project.data.cropped_masks import CroppedMasks
from seg_project.data.mapper import CellsDatasetMapper
from seg_project.data.reader import load_annotated_split


def _blobs(rng, shape, count, classes=4):
    """Instances of random blobs (full-size masks, some touching each other and the border)."""
    height, width = shape
    masks = []
    for _ in range(count):
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        ry, rx = rng.integers(2, 9, size=2)
        yy, xx = np.ogrid[:height, :width]
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        mask &= rng.random(shape) > 0.05  # ragged edges and holes
        if mask.any():
            masks.append(mask)
    classes = torch.as_tensor(rng.integers(1, classes + 1, size=len(masks)))
    return np.stack(masks), classes


def _tight_box(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def _as_instances(masks: np.ndarray, classes: torch.Tensor) -> Instances:
    """Instances of full-size masks: CroppedMasks of their tight crops at scale 1."""
    boxes = [_tight_box(m) for m in masks]
    crops = [m[y0:y1, x0:x1] for m, (x0, y0, x1, y1) in zip(masks, boxes)]
    instances = Instances(masks.shape[1:])
    instances.gt_masks = CroppedMasks.from_crops(crops, [(b[0], b[1]) for b in boxes])
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = classes
    return instances


def _dense(masks: CroppedMasks, shape) -> np.ndarray:
    """Full-size bitmaps of scale-1 CroppedMasks (independent of the code under test)."""
    out = np.zeros((len(masks), *shape), bool)
    for i in range(len(masks)):
        assert masks.scale[i].tolist() == [1.0, 1.0]
        x0, y0 = (int(v) for v in masks.origin[i].tolist())
        crop = masks.tensor[i].numpy()
        for r, c in zip(*np.nonzero(crop)):
            out[i, y0 + r, x0 + c] = True
    return out


def _dense_reference(image, target_masks, target_boxes, target_classes, source_image,
                     source_masks, source_classes, draw, min_area):
    """Copy-paste painted with full-size masks: the expected image, masks, boxes and classes."""
    image = image.copy()
    masks = [m.copy() for m in target_masks]
    boxes = [list(b) for b in target_boxes]
    classes = list(target_classes.tolist())
    pasted = [False] * len(masks)
    for index, (tx, ty) in zip(draw.indices, draw.positions):
        source = source_masks[index]
        x0, y0, x1, y1 = _tight_box(source)
        placed = np.zeros(image.shape[:2], bool)
        placed[ty:ty + y1 - y0, tx:tx + x1 - x0] = source[y0:y1, x0:x1]
        image[placed] = source_image[y0:y1, x0:x1][source[y0:y1, x0:x1]]
        for m in masks:
            m &= ~placed
        masks.append(placed)
        boxes.append(_tight_box(placed))
        classes.append(int(source_classes[index]))
        pasted.append(True)
    before = [m.sum() for m in target_masks] + [None] * len(draw.indices)
    out_masks, out_boxes, out_classes = [], [], []
    for m, box, cls, was_pasted, count_before in zip(masks, boxes, classes, pasted, before):
        count = m.sum()
        covered = was_pasted or count != count_before
        if covered and (count == 0 or count < min_area):
            continue
        if covered:
            box = _tight_box(m)
        out_masks.append(m)
        out_boxes.append(box)
        out_classes.append(cls)
    return image, np.stack(out_masks), np.array(out_boxes, np.float32), out_classes


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("min_area", [0, 12])
def test_paste_equals_a_dense_reference_bit_for_bit(seed, min_area):
    rng = np.random.default_rng(seed)
    shape = (48, 56)
    target_masks, target_classes = _blobs(rng, shape, 14)
    source_masks, source_classes = _blobs(rng, (40, 44), 12)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    source_image = rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)
    target = _as_instances(target_masks, target_classes)
    source = _as_instances(source_masks, source_classes)
    paster = CopyPaste(max_instances=8, min_instance_area=min_area)
    np.random.seed(seed)
    draw = paster.draw(shape, source_image.shape[:2], source.gt_masks)
    assert draw.indices, "the draw should paste something"

    out_image, out = paster.paste(image, target, source_image, source, draw)

    expected = _dense_reference(image, target_masks, target.gt_boxes.tensor.numpy(),
                                target_classes, source_image, source_masks, source_classes,
                                draw, min_area)
    np.testing.assert_array_equal(out_image, expected[0])
    np.testing.assert_array_equal(_dense(out.gt_masks, shape), expected[1])
    np.testing.assert_array_equal(out.gt_boxes.tensor.numpy(), expected[2])
    assert out.gt_classes.tolist() == expected[3]
    assert not np.array_equal(out_image, image)  # something was pasted


def test_the_draw_pastes_whole_source_instances_inside_the_image():
    rng = np.random.default_rng(0)
    source_masks, source_classes = _blobs(rng, (40, 44), 30)
    source = _as_instances(source_masks, source_classes)
    paster = CopyPaste(max_instances=5)
    np.random.seed(1)
    counts = set()
    for _ in range(50):
        draw = paster.draw((32, 36), (40, 44), source.gt_masks)
        counts.add(len(draw.indices))
        assert len(set(draw.indices)) == len(draw.indices)
        for index, (tx, ty) in zip(draw.indices, draw.positions):
            x0, y0, x1, y1 = _tight_box(source_masks[index])
            assert x0 > 0 and y0 > 0 and x1 < 44 and y1 < 40  # whole: not cut by the border
            assert 0 <= tx and tx + x1 - x0 <= 36 and 0 <= ty and ty + y1 - y0 <= 32
    assert counts == {1, 2, 3, 4, 5}


def test_an_empty_draw_changes_nothing():
    rng = np.random.default_rng(0)
    masks, classes = _blobs(rng, (20, 20), 3)
    target = _as_instances(masks, classes)
    image = np.zeros((20, 20, 3), np.uint8)
    out_image, out = CopyPaste(3).paste(image, target, image, target, PasteDraw((), ()))
    assert out_image is image and out is target


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5])
def test_rasterize_puts_each_image_pixel_where_its_centre_falls(scale):
    crop = np.array([[0, 1, 1], [1, 1, 0]], bool)
    masks = CroppedMasks.from_crops([crop], [(3, 2)]).resize(scale, scale)
    (box, dense), = rasterize(masks)
    if scale == 1.0:
        assert box == (3, 2, 6, 4)
        np.testing.assert_array_equal(dense, crop)
    elif scale == 2.0:
        assert box == (6, 4, 12, 8)
        np.testing.assert_array_equal(dense, crop.repeat(2, 0).repeat(2, 1))
    else:  # image pixels of 2x2 crop pixels: the centre decides
        x0, y0, x1, y1 = box
        assert dense.shape == (y1 - y0, x1 - x0) and dense.any()


def test_occlude_clears_exactly_the_covered_pixels_at_scale_1():
    rng = np.random.default_rng(3)
    masks, classes = _blobs(rng, (30, 30), 8)
    target = _as_instances(masks, classes)
    covered = rng.random((30, 30)) > 0.6
    out = target.gt_masks.occlude(torch.from_numpy(covered))
    np.testing.assert_array_equal(_dense(out, (30, 30)), masks & ~covered)


# -- the mapper and the trainer ---------------------------------------------------------------


CROPS = {"INPUT.CROP.ENABLED": True, "INPUT.CROP.TYPE": "absolute", "INPUT.CROP.SIZE": [48, 48],
         "INPUT.MIN_INSTANCE_AREA": 4, "INPUT.ROT90.ENABLED": True, "INPUT.RESIZE_MODE": "scale"}


def _copy_paste_cfg(**opts):
    return quick_cfg(**{**CROPS, "INPUT.COPY_PASTE.ENABLED": True, "INPUT.COPY_PASTE.PROB": 1.0,
                        "INPUT.COPY_PASTE.MAX_INSTANCES": 6, **opts})


def test_mapper_pastes_instances_whose_boxes_fit_their_masks(synthetic_root):
    records = load_annotated_split(synthetic_root / "train", 4, cache_dir=False)
    plain = CellsDatasetMapper(quick_cfg(**CROPS), is_train=True)
    mapper = CellsDatasetMapper(_copy_paste_cfg(), is_train=True, paste_sources=records)
    more = 0
    for i, record in enumerate(records * 3):
        np.random.seed(i)
        without = plain(copy.deepcopy(record))
        np.random.seed(i)
        out = mapper(copy.deepcopy(record))
        instances, shape = out["instances"], out["image"].shape[1:]
        more += len(instances) > len(without["instances"])
        dense = _dense(instances.gt_masks, shape)
        assert (dense.reshape(len(dense), -1).sum(1) >= 4).all()
        tight = np.array([_tight_box(m) for m in dense], np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(instances.gt_boxes.tensor.numpy(), tight)
        # pasted instances lie on top: they overlap nothing that was not overlapping before
        overlap_before = _dense(without["instances"].gt_masks, shape).sum(0).max(initial=0)
        assert dense.sum(0).max(initial=0) <= max(1, overlap_before)
    assert more >= len(records)  # pastes add instances


def test_inference_mapper_never_pastes(synthetic_root):
    records = load_annotated_split(synthetic_root / "train", 4, cache_dir=False)
    mapper = CellsDatasetMapper(_copy_paste_cfg(), is_train=False, paste_sources=records)
    assert mapper.copy_paste is None
    assert "instances" not in mapper(copy.deepcopy(records[0]))


def test_the_trainers_loader_pastes_from_the_training_set(synthetic_root, monkeypatch):
    from seg_project.config import register_datasets_from_config
    from seg_project.engine.trainer import CellsTrainer

    sources = []
    real_call = CopyPaste.__call__

    def spy(self, image, instances, source_image, source_instances):
        sources.append(source_image.shape)
        return real_call(self, image, instances, source_image, source_instances)

    monkeypatch.setattr(CopyPaste, "__call__", spy)
    cfg = _copy_paste_cfg(**{"DATASETS.CELLS.ROOT": str(synthetic_root),
                             "DATASETS.TRAIN": ("cells_trainval",), "SOLVER.IMS_PER_BATCH": 2})
    register_datasets_from_config(cfg)
    batch = next(iter(CellsTrainer.build_train_loader(cfg)))
    assert len(batch) == 2 and all("instances" in item for item in batch)
    assert len(sources) >= 2  # PROB 1: every training image received a paste
