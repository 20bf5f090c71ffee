"""CellsRPN: sparse anchor labelling gives exactly Detectron2's dense Matcher results."""

import pytest
import torch
from conftest import REPO
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.proposal_generator import build_proposal_generator
from detectron2.structures import Boxes, Instances, pairwise_iou

from seg_project.config import load_config
from seg_project.modeling import CellsRPN
from seg_project.modeling.sparse_matching import anchor_grids, candidate_pairs, match_anchors

STRIDES = (4, 8, 16, 32, 64)
IMAGE = (256, 320)  # (height, width): not square, so rows and columns cannot be confused


def rpn_cfg():
    cfg = load_config(REPO / "configs" / "Base-Cells-RCNN-FPN.yaml")
    return cfg


def level_shapes():
    return {f"p{i + 2}": ShapeSpec(channels=8, stride=s) for i, s in enumerate(STRIDES)}


def features(height=IMAGE[0], width=IMAGE[1], channels=1):
    return [torch.zeros(1, channels, -(-height // s), -(-width // s)) for s in STRIDES]


@pytest.fixture(scope="module")
def anchors():
    generator = build_anchor_generator(rpn_cfg(), list(level_shapes().values()))
    per_level = generator(features())
    return per_level, list(generator.num_cell_anchors)


def crowded_boxes(seed: int, count: int = 400) -> torch.Tensor:
    """Cell-like boxes with every kind of tie: exact duplicates, boxes equal to anchors,
    grid-aligned boxes (equal IoU with mirror-image anchors), boxes crossing the image edge,
    tiny boxes, and non-integer coordinates."""
    g = torch.Generator().manual_seed(seed)
    height, width = IMAGE
    xy = torch.rand(count, 2, generator=g) * torch.tensor([width + 20.0, height + 20.0]) - 10
    wh = torch.rand(count, 2, generator=g) * 40 + 1
    half = count // 2
    xy[:half], wh[:half] = xy[:half].round(), wh[:half].round()  # integer corners: equal IoUs
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[10:30] = boxes[30:50]  # duplicates: equal IoU everywhere
    boxes[50] = torch.tensor([0.0, 0.0, 32.0, 32.0])  # exactly a 32 px anchor shape
    boxes[51] = torch.tensor([100.0, 100.0, 116.0, 116.0])  # grid-aligned: symmetric ties
    boxes[52] = torch.tensor([-5.0, 250.0, 8.0, 262.0])  # crosses two image edges
    boxes[53] = torch.tensor([40.0, 40.0, 40.5, 41.0])  # tiny
    return boxes


def dense(matcher, gt, anchors_per_level):
    return matcher(pairwise_iou(Boxes(gt), Boxes.cat(anchors_per_level)))


MATCHERS = {
    "rpn": lambda: Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True),
    "roi": lambda: Matcher([0.5], [0, 1], allow_low_quality_matches=False),
    "strict": lambda: Matcher([0.05, 0.9], [0, -1, 1], allow_low_quality_matches=True),
}


@pytest.mark.parametrize("matcher_name", sorted(MATCHERS))
@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_matching_equals_dense_matcher(anchors, matcher_name, seed):
    per_level, cells = anchors
    matcher = MATCHERS[matcher_name]()
    gt = crowded_boxes(seed)
    grids = anchor_grids([a.tensor for a in per_level], cells)
    assert grids is not None
    expected_matches, expected_labels = dense(matcher, gt, per_level)
    matches, labels = match_anchors(matcher, gt, Boxes.cat(per_level).tensor, grids)
    assert matches.dtype == expected_matches.dtype and labels.dtype == expected_labels.dtype
    assert torch.equal(labels, expected_labels)
    assert torch.equal(matches, expected_matches)
    # The test must be able to fail: the boxes do produce ties and every label.
    assert set(labels.unique().tolist()) >= {0, 1}
    iou = pairwise_iou(Boxes(gt), Boxes.cat(per_level))
    best = iou.max(dim=0).values
    assert int(((iou == best) & (best > 0)).sum(dim=0).gt(1).sum()) > 0, "no tie was tested"


def test_candidates_cover_every_overlapping_pair(anchors):
    per_level, cells = anchors
    gt = crowded_boxes(2)
    grids = anchor_grids([a.tensor for a in per_level], cells)
    gt_index, anchor_index = candidate_pairs(gt, grids)
    candidates = torch.zeros(len(gt), sum(len(a) for a in per_level), dtype=torch.bool)
    candidates[gt_index, anchor_index] = True
    overlapping = pairwise_iou(Boxes(gt), Boxes.cat(per_level)) > 0
    assert not (overlapping & ~candidates).any()
    # ... and far fewer pairs than the dense matrix.
    assert len(gt_index) < 0.2 * candidates.numel()


def test_a_box_overlapping_no_anchor_matches_like_detectron2(anchors):
    """Detectron2 labels every anchor positive when some gt box overlaps none (its highest
    IoU is 0, and ``matrix == 0`` holds for all anchors): reproduced, odd as it is."""
    per_level, cells = anchors
    matcher = MATCHERS["rpn"]()
    gt = crowded_boxes(3, count=60)
    gt[7] = torch.tensor([5000.0, 5000.0, 5010.0, 5010.0])  # far outside every anchor
    grids = anchor_grids([a.tensor for a in per_level], cells)
    expected = dense(matcher, gt, per_level)
    result = match_anchors(matcher, gt, Boxes.cat(per_level).tensor, grids)
    assert torch.equal(result[1], expected[1]) and bool((expected[1] == 1).all())
    assert torch.equal(result[0], expected[0])


def test_anchors_that_are_not_a_grid_are_refused(anchors):
    per_level, cells = anchors
    shuffled = [Boxes(a.tensor[torch.randperm(len(a), generator=torch.Generator()
                                              .manual_seed(0))]) for a in per_level]
    assert anchor_grids([a.tensor for a in shuffled], cells) is None
    assert anchor_grids([a.tensor for a in per_level], [c + 1 for c in cells]) is None


def build_rpns():
    cfg = rpn_cfg()
    assert cfg.MODEL.PROPOSAL_GENERATOR.NAME == "CellsRPN"
    cfg.MODEL.RPN.IN_FEATURES = list(level_shapes())
    ours = build_proposal_generator(cfg, level_shapes())
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
    stock = build_proposal_generator(cfg, level_shapes())
    assert type(ours) is CellsRPN and type(stock) is not CellsRPN
    return ours, stock


def gt_instances(seeds, counts):
    out = []
    for seed, count in zip(seeds, counts):
        instances = Instances(IMAGE)
        boxes = Boxes(crowded_boxes(seed, count) if count else torch.zeros(0, 4))
        boxes.clip(IMAGE)
        instances.gt_boxes = boxes[boxes.nonempty()]
        out.append(instances)
    return out


@pytest.mark.parametrize("shuffle", [False, True], ids=["grid", "not-a-grid"])
def test_cells_rpn_labels_like_detectron2_rpn(shuffle):
    """Same labels (after the same random subsampling) and matched boxes as Detectron2's RPN,
    for a crowded image and an image without cells; on anchors that are not a grid CellsRPN
    falls back to the dense path."""
    ours, stock = build_rpns()
    per_level = ours.anchor_generator(features())
    if shuffle:
        per_level = [Boxes(a.tensor.flip(0)) for a in per_level]
    targets = gt_instances([4, 5], [300, 0])
    torch.manual_seed(0)
    labels, boxes = ours.label_and_sample_anchors(per_level, targets)
    torch.manual_seed(0)
    expected_labels, expected_boxes = stock.label_and_sample_anchors(per_level, targets)
    for got, want in zip(labels + boxes, expected_labels + expected_boxes):
        assert torch.equal(got, want)
    assert int((labels[0] == 1).sum()) > 0
