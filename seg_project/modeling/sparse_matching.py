"""Anchor labelling that computes IoU only where anchors and ground-truth boxes overlap.

Detectron2's RPN labels anchors with ``Matcher(pairwise_iou(gt_boxes, anchors))``: a dense
``G x N`` IoU matrix (G ground-truth boxes, N anchors). With 160k anchors (an 800 x 800
input) and 700 to 2,300 cells per image that is 112 to 370 million IoUs per image (and a
``G x N x 2`` intermediate of up to 3 GB), although each cell overlaps about a thousand
anchors: every other IoU is zero.

:func:`match_anchors` gives the same result from the overlapping pairs only. The anchors of
one FPN level and one cell anchor form a separable grid (their x coordinates depend only on
the column, their y coordinates only on the row, both increasing), so the columns and rows
whose anchors can overlap a box are two ranges found by binary search. The IoU of every pair
in those ranges is computed with the arithmetic of ``pairwise_iou`` (so values, and thus ties,
are bit-identical), pairs with IoU 0 are dropped, and the matcher's rules are applied to the
sparse pairs:

- each anchor's best IoU and its ground truth (the lowest index among ties, as
  ``Tensor.max(dim=0)``; index 0 where nothing overlaps, IoU 0);
- the labels of ``Matcher.thresholds`` / ``Matcher.labels``;
- with ``allow_low_quality_matches``: every anchor that has a ground truth's highest IoU
  (ties included) becomes positive. A ground truth that overlaps no anchor at all has highest
  IoU 0, which Detectron2 matches with *every* anchor of IoU 0 to it, i.e. all anchors; that
  is reproduced too.

Anchors that do not form such grids (another anchor generator, rotated boxes) return ``None``
from :func:`anchor_grids`; callers then use the dense path.
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from detectron2.modeling.matcher import Matcher

__all__ = ["AnchorGrid", "anchor_grids", "candidate_pairs", "match_anchors", "pairs_iou"]


class AnchorGrid(NamedTuple):
    """The anchors of one feature level as a separable grid.

    Attributes:
        start: index of the level's first anchor in the concatenated anchors.
        height, width: grid rows and columns; the level holds ``height * width * cells``
            anchors, anchor ``(i, j, a)`` at index ``start + (i * width + j) * cells + a``.
        cells: cell anchors per grid position.
        x1, x2: ``(cells, width)`` left and right edges of column j's anchors.
        y1, y2: ``(cells, height)`` top and bottom edges of row i's anchors.
    """

    start: int
    height: int
    width: int
    cells: int
    x1: torch.Tensor
    x2: torch.Tensor
    y1: torch.Tensor
    y2: torch.Tensor


def _level_grid(boxes: torch.Tensor, start: int, cells: int) -> Optional[AnchorGrid]:
    """The grid of one level's ``(H * W * cells, 4)`` anchors, or None if they are not one."""
    if boxes.dim() != 2 or boxes.shape[1] != 4 or cells < 1 or len(boxes) % cells:
        return None
    positions = len(boxes) // cells
    if positions == 0:
        return None
    per_cell = boxes.reshape(positions, cells, 4)
    first_y = per_cell[:, 0, 1]
    width = int((first_y == first_y[0]).sum())  # positions sharing the first row's y
    if width == 0 or positions % width:
        return None
    height = positions // width
    grid = per_cell.reshape(height, width, cells, 4)
    x1, x2 = grid[0, :, :, 0].t(), grid[0, :, :, 2].t()  # (cells, width)
    y1, y2 = grid[:, 0, :, 1].t(), grid[:, 0, :, 3].t()  # (cells, height)
    separable = (torch.equal(grid[..., 0], x1.t()[None].expand(height, -1, -1))
                 and torch.equal(grid[..., 2], x2.t()[None].expand(height, -1, -1))
                 and torch.equal(grid[..., 1], y1.t()[:, None].expand(-1, width, -1))
                 and torch.equal(grid[..., 3], y2.t()[:, None].expand(-1, width, -1)))
    increasing = all(bool((edge[:, 1:] >= edge[:, :-1]).all()) for edge in (x1, x2, y1, y2))
    if not (separable and increasing):
        return None
    return AnchorGrid(start, height, width, cells, x1.contiguous(), x2.contiguous(),
                      y1.contiguous(), y2.contiguous())


def anchor_grids(anchors_per_level: Sequence[torch.Tensor],
                 cells_per_level: Sequence[int]) -> Optional[List[AnchorGrid]]:
    """Describe each level's anchors as a separable grid.

    Args:
        anchors_per_level: ``(H_l * W_l * A_l, 4)`` XYXY anchors of each level, in the order
            of Detectron2's ``DefaultAnchorGenerator`` (row-major positions, then the cell
            anchors of each position).
        cells_per_level: ``A_l``, the cell anchors per position of each level.

    Returns:
        list[AnchorGrid] (one per level), or None when some level is not such a grid.
    """
    grids, start = [], 0
    for boxes, cells in zip(anchors_per_level, cells_per_level):
        grid = _level_grid(boxes, start, int(cells))
        if grid is None:
            return None
        grids.append(grid)
        start += len(boxes)
    return grids


def _ranges(lo_edges: torch.Tensor, hi_edges: torch.Tensor, box_lo: torch.Tensor,
            box_hi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """First index and count of the positions whose interval ``(lo, hi)`` can overlap each
    box interval: ``hi > box_lo`` and ``lo < box_hi`` (edges increasing along the axis)."""
    first = torch.searchsorted(hi_edges, box_lo.contiguous(), right=True)
    end = torch.searchsorted(lo_edges, box_hi.contiguous(), right=False)
    return first, (end - first).clamp(min=0)


def candidate_pairs(gt_boxes: torch.Tensor,
                    grids: Sequence[AnchorGrid]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(gt index, anchor index)`` of every pair whose boxes may overlap (a superset of the
    pairs with a positive intersection).

    Args:
        gt_boxes: ``(G, 4)`` XYXY ground-truth boxes.
        grids: from :func:`anchor_grids`.
    """
    device = gt_boxes.device
    gt_index, anchor_index = [], []
    num_gt = len(gt_boxes)
    gx1, gy1, gx2, gy2 = gt_boxes.unbind(1)
    for grid in grids:
        for a in range(grid.cells):
            col0, cols = _ranges(grid.x1[a], grid.x2[a], gx1, gx2)
            row0, rows = _ranges(grid.y1[a], grid.y2[a], gy1, gy2)
            counts = cols * rows
            total = int(counts.sum())
            if total == 0:
                continue
            owner = torch.repeat_interleave(torch.arange(num_gt, device=device), counts)
            offset = torch.arange(total, device=device) - (counts.cumsum(0) - counts)[owner]
            cols_o = cols[owner]
            row = row0[owner] + torch.div(offset, cols_o, rounding_mode="floor")
            col = col0[owner] + offset % cols_o
            gt_index.append(owner)
            anchor_index.append(grid.start + (row * grid.width + col) * grid.cells + a)
    if not gt_index:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat(gt_index), torch.cat(anchor_index)


def pairs_iou(gt_boxes: torch.Tensor, anchors: torch.Tensor, gt_index: torch.Tensor,
              anchor_index: torch.Tensor) -> torch.Tensor:
    """IoU of the given pairs, with exactly the arithmetic of Detectron2's ``pairwise_iou``
    (so equal boxes give bit-equal values)."""
    g, a = gt_boxes[gt_index], anchors[anchor_index]
    gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    anchor_area = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    width_height = torch.min(g[:, 2:], a[:, 2:]) - torch.max(g[:, :2], a[:, :2])
    width_height.clamp_(min=0)
    inter = width_height.prod(dim=1)
    union = gt_area[gt_index] + anchor_area[anchor_index] - inter
    return torch.where(inter > 0, inter / union, torch.zeros(1, dtype=inter.dtype,
                                                              device=inter.device))


def match_anchors(matcher: Matcher, gt_boxes: torch.Tensor, anchors: torch.Tensor,
                  grids: Sequence[AnchorGrid]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``matcher(pairwise_iou(gt_boxes, anchors))`` without the dense IoU matrix.

    Args:
        matcher: Detectron2's ``Matcher`` (thresholds, labels, allow_low_quality_matches).
        gt_boxes: ``(G, 4)`` XYXY ground-truth boxes, G >= 1.
        anchors: ``(N, 4)`` XYXY anchors of all levels, concatenated.
        grids: :func:`anchor_grids` of those anchors.

    Returns:
        ``matches`` (N,) int64 and ``match_labels`` (N,) int8, equal to the matcher's.
    """
    num_gt, num_anchors = len(gt_boxes), len(anchors)
    gt_boxes, anchors = gt_boxes.float(), anchors.float()
    gt_index, anchor_index = candidate_pairs(gt_boxes, grids)
    iou = pairs_iou(gt_boxes, anchors, gt_index, anchor_index)
    overlapping = iou > 0
    gt_index, anchor_index, iou = gt_index[overlapping], anchor_index[overlapping], iou[overlapping]

    # Each anchor's best IoU (0 where nothing overlaps) and the lowest gt index reaching it.
    matched_vals = iou.new_zeros(num_anchors).scatter_reduce_(0, anchor_index, iou, "amax")
    best = iou == matched_vals[anchor_index]
    matches = torch.full((num_anchors,), num_gt, dtype=torch.int64, device=anchors.device)
    matches.scatter_reduce_(0, anchor_index[best], gt_index[best], "amin")
    matches[matches == num_gt] = 0

    match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
    for label, low, high in zip(matcher.labels, matcher.thresholds[:-1], matcher.thresholds[1:]):
        match_labels[(matched_vals >= low) & (matched_vals < high)] = label

    if matcher.allow_low_quality_matches:
        highest = iou.new_zeros(num_gt).scatter_reduce_(0, gt_index, iou, "amax")
        if bool((highest == 0).any()):
            # Detectron2 matches a gt box that overlaps nothing with every anchor of IoU 0 to
            # it (``matrix == 0`` along its row): all anchors.
            match_labels.fill_(1)
        else:
            match_labels[anchor_index[iou == highest[gt_index]]] = 1
    return matches, match_labels
