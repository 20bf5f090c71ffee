"""Tiled inference (seg_project/inference/tiling.py): every cell once, with its whole mask."""

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances
from scipy import ndimage

from seg_project.inference.postprocess import RLEOutputModel, postprocess_to_rle
from seg_project.inference.tiling import TiledInference, tile_grid, tile_starts

MASK_SIDE = 28


def _mask_of(crop: torch.Tensor) -> torch.Tensor:
    """A box-relative ``1 x M x M`` mask probability map of a binary crop."""
    return F.interpolate(crop[None, None].float(), size=(MASK_SIDE, MASK_SIDE),
                         mode="bilinear", align_corners=False)[0]


class StandInModel:
    """A model with known outputs: every connected blob of non-zero pixels in channel 0 is a
    detection (tight box, box-relative mask, class = channel 1's value - 1, score = channel 2's
    value / 255), the way Mask R-CNN's raw ``inference(..., do_postprocess=False)`` gives them.
    Records the size of every image it was given."""

    def __init__(self):
        self.seen = []

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        assert not do_postprocess
        outputs = []
        for k, inputs in enumerate(batched_inputs):
            image = inputs["image"]
            self.seen.append(tuple(image.shape[-2:]))
            fg = image[0] > 0
            if detected_instances is not None:
                given = detected_instances[k]
                masks = [_mask_of(fg[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))])
                         for x0, y0, x1, y1 in given.pred_boxes.tensor.tolist()]
                out = Instances(given.image_size, **given.get_fields())
                out.pred_masks = (torch.stack(masks) if masks
                                  else torch.zeros(0, 1, MASK_SIDE, MASK_SIDE))
                outputs.append(out)
                continue
            labels, count = ndimage.label(fg.numpy())
            boxes, masks, classes, scores = [], [], [], []
            for sl in ndimage.find_objects(labels):
                ys, xs = sl
                boxes.append([xs.start, ys.start, xs.stop, ys.stop])
                masks.append(_mask_of(torch.from_numpy(labels[sl] > 0)))
                center = (ys.start + ys.stop) // 2, (xs.start + xs.stop) // 2
                classes.append(int(image[1][center]) - 1)
                scores.append(float(image[2][center]) / 255)
            out = Instances(tuple(image.shape[-2:]))
            out.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            out.scores = torch.tensor(scores, dtype=torch.float32)
            out.pred_classes = torch.tensor(classes, dtype=torch.int64)
            out.pred_masks = (torch.stack(masks) if masks
                              else torch.zeros(0, 1, MASK_SIDE, MASK_SIDE))
            outputs.append(out)
        return outputs


def _disc_image(height, width, centers, radius=9):
    """A 3-channel image of discs (channel 0: foreground, 1: class, 2: score) and their masks."""
    image = np.zeros((3, height, width), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    truths = []
    for k, (cy, cx) in enumerate(centers):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
        image[0][disc] = 255
        image[1][disc] = 1 + k % 3
        image[2][disc] = 100 + (k * 7) % 150
        truths.append(disc)
    return torch.from_numpy(image), truths


def _decoded(instances):
    rles = postprocess_to_rle(instances, *instances.image_size).pred_rles
    return [mask_util.decode(rle).astype(bool) for rle in rles]


def test_tiles_cover_the_image_and_their_cores_partition_it():
    for length, size, overlap in [(300, 128, 32), (1000, 512, 64), (129, 128, 32), (64, 128, 0)]:
        starts = tile_starts(length, size, overlap)
        assert starts[0] == 0 and min(length, starts[-1] + size) == length
        for a, b in zip(starts, starts[1:]):
            assert a + size - b >= overlap  # neighbours share at least the overlap
    tiles = tile_grid(300, 250, 128, 32)
    owners = np.zeros((300, 250), dtype=int)
    yy, xx = np.mgrid[:300, :250] + 0.5
    for tile in tiles:
        assert 0 <= tile.x0 < tile.x1 <= 250 and 0 <= tile.y0 < tile.y1 <= 300
        assert tile.x1 - tile.x0 <= 128 and tile.y1 - tile.y0 <= 128
        owners += ((xx >= tile.core_x0) & (xx < tile.core_x1)
                   & (yy >= tile.core_y0) & (yy < tile.core_y1))
        # A tile's core lies inside the tile, at least half the overlap from inner edges.
        assert tile.core_x0 == -np.inf or tile.core_x0 >= tile.x0 + 16
        assert tile.core_x1 == np.inf or tile.core_x1 <= tile.x1 - 16
    assert (owners == 1).all()


def test_cells_on_tile_borders_come_out_once_with_their_whole_mask():
    tiler = TiledInference(tile_size=128, overlap=32, batch_size=3, max_detections=1000)
    tiles = tile_grid(300, 300, 128, 32)
    # Discs centred on tile edges, on overlap middles (core borders) and on a tile corner.
    edges = sorted({t.x0 for t in tiles} | {t.x1 for t in tiles} - {0, 300})
    centers = [(150, e) for e in edges] + [(e, 40) for e in edges]
    centers += [(int(tiles[0].core_y1), int(tiles[0].core_x1)), (260, 260), (20, 20)]
    image, truths = _disc_image(300, 300, centers)
    model = StandInModel()
    out = tiler.inference(model, [{"image": image}])[0]
    assert all(max(shape) <= 128 for shape in model.seen)  # it was tiled
    assert out.image_size == (300, 300)
    masks = _decoded(out)
    assert len(masks) == len(truths)
    for truth in truths:
        ious = [np.logical_and(m, truth).sum() / np.logical_or(m, truth).sum() for m in masks]
        assert max(ious) > 0.9, "a cell lost part of its mask or went missing"
    # Classes and scores travel with their cells.
    order = [int(np.argmax([np.logical_and(m, t).sum() for m in masks])) for t in truths]
    assert sorted(order) == list(range(len(truths)))
    for k, index in enumerate(order):
        assert int(out.pred_classes[index]) == k % 3
        assert float(out.scores[index]) == pytest.approx((100 + (k * 7) % 150) / 255)


def test_cut_copies_lose_to_whole_ones_and_the_cap_keeps_the_best():
    # A cell wider than half the overlap: both tiles see it, one of them cut.
    image, truths = _disc_image(200, 240, [(100, 118)], radius=14)
    tiler = TiledInference(tile_size=128, overlap=40, max_detections=1000)
    out = tiler.inference(StandInModel(), [{"image": image}])[0]
    masks = _decoded(out)
    assert len(masks) == 1
    assert np.logical_and(masks[0], truths[0]).sum() / truths[0].sum() > 0.95
    centers = [(20 + 40 * i, 20 + 40 * j) for i in range(5) for j in range(6)]
    image, _ = _disc_image(200, 240, centers)
    capped = TiledInference(tile_size=128, overlap=40, max_detections=7)
    out = capped.inference(StandInModel(), [{"image": image}])[0]
    full = tiler.inference(StandInModel(), [{"image": image}])[0]
    assert len(full) == 30 and len(out) == 7
    assert torch.equal(out.scores, full.scores.sort(descending=True).values[:7])


def test_an_image_that_fits_one_tile_is_predicted_whole():
    image, _ = _disc_image(120, 100, [(30, 30), (80, 60)])
    model = StandInModel()
    tiled = TiledInference(tile_size=128, overlap=32).inference(model, [{"image": image}])[0]
    plain = StandInModel().inference([{"image": image}], do_postprocess=False)[0]
    assert model.seen == [(120, 100)]
    for name in ("scores", "pred_classes", "pred_masks"):
        assert torch.equal(tiled.get(name), plain.get(name))
    assert torch.equal(tiled.pred_boxes.tensor, plain.pred_boxes.tensor)


def test_masks_of_given_boxes_are_predicted_in_the_owning_tile():
    centers = [(150, 64), (150, 100), (40, 200), (250, 250)]
    image, truths = _disc_image(300, 300, centers)
    detected = StandInModel().inference([{"image": image}], do_postprocess=False)[0]
    given = Instances(detected.image_size, pred_boxes=detected.pred_boxes,
                      scores=detected.scores, pred_classes=detected.pred_classes)
    tiler = TiledInference(tile_size=128, overlap=32)
    out = tiler.inference(StandInModel(), [{"image": image}], [given])[0]
    assert torch.equal(out.pred_boxes.tensor, given.pred_boxes.tensor)  # same order
    assert torch.allclose(out.pred_masks, detected.pred_masks, atol=1e-6)


def test_tiled_and_whole_agree_with_a_real_model_where_the_image_fits(tmp_path):
    from conftest import quick_cfg
    from detectron2.modeling import build_model

    cfg = quick_cfg(**{"MODEL.DEVICE": "cpu", "TEST.DETECTIONS_PER_IMAGE": 50})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    rng = np.random.default_rng(0)
    inputs = [{"image": torch.from_numpy(rng.integers(0, 255, (3, 96, 80), dtype=np.uint8)),
               "height": 96, "width": 80}]
    with torch.no_grad():
        whole = RLEOutputModel(model)(inputs)[0]["instances"]
        tiled = RLEOutputModel(model, tiler=TiledInference(128, 32))(inputs)[0]["instances"]
        # Larger than a tile: runs, and every box stays inside the image.
        big = [{"image": torch.from_numpy(rng.integers(0, 255, (3, 150, 170), dtype=np.uint8)),
                "height": 150, "width": 170}]
        tiled_big = RLEOutputModel(model, tiler=TiledInference(96, 24, max_detections=50))(big)
    assert len(whole) > 0
    assert torch.equal(whole.scores, tiled.scores)
    assert list(whole.pred_rles) == list(tiled.pred_rles)
    boxes = tiled_big[0]["instances"].pred_boxes.tensor
    assert len(boxes) <= 50
    assert (boxes[:, 2] <= 170).all() and (boxes[:, 3] <= 150).all()


def test_tile_settings_are_checked():
    with pytest.raises(ValueError, match="OVERLAP"):
        TiledInference(tile_size=64, overlap=64)
    with pytest.raises(ValueError, match="SIZE"):
        TiledInference(tile_size=0)


def test_a_real_model_runs_its_mask_head_only_on_the_merged_detections():
    from conftest import quick_cfg
    from detectron2.modeling import build_model

    cfg = quick_cfg(**{"MODEL.DEVICE": "cpu", "TEST.DETECTIONS_PER_IMAGE": 40})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    masked = []
    model.roi_heads.mask_head.register_forward_hook(
        lambda module, args, output: masked.append(len(args[0])))
    image = torch.from_numpy(np.random.default_rng(1).integers(0, 255, (3, 150, 170),
                                                               dtype=np.uint8))
    tiler = TiledInference(96, 24, batch_size=4, max_detections=40)
    with torch.no_grad():
        out = tiler.inference(model, [{"image": image, "height": 150, "width": 170}])[0]
        # No detections at all (every score below the threshold): empty, with empty masks.
        model.roi_heads.box_predictor.test_score_thresh = 1.1
        empty = tiler.inference(model, [{"image": image, "height": 150, "width": 170}])[0]
    assert len(out) > 0
    assert sum(masked) == len(out)  # one mask per kept cell, none for dropped copies
    assert out.pred_masks.shape[0] == len(out)
    assert model.roi_heads.mask_on  # restored after the box-only pass
    assert len(empty) == 0 and empty.pred_masks.shape[0] == 0
