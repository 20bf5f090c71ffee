"""``CellsRPN``: Detectron2's RPN with anchor labelling that scales to crowded images.

Select it with ``MODEL.PROPOSAL_GENERATOR.NAME: "CellsRPN"`` (the project's base config
does). It is Detectron2's ``RPN`` (the "StandardRPN") in every respect but one: training
labels anchors with :func:`seg_project.modeling.sparse_matching.match_anchors`, which gives
the same labels and matched boxes as ``Matcher(pairwise_iou(gt_boxes, anchors))`` from the
anchor/box pairs that overlap, instead of a dense ground truth x anchors IoU matrix (on
CoNSeP at 800 px, 160k anchors x up to 2,300 cells: 1.5 GB and most of a second per image).
Anchors that are not a grid of Detectron2's ``DefaultAnchorGenerator`` are labelled by the
dense path, unchanged.
"""

from typing import List, Tuple

import torch
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.proposal_generator.rpn import RPN
from detectron2.structures import Boxes, Instances, pairwise_iou

from .sparse_matching import anchor_grids, match_anchors

__all__ = ["CellsRPN"]


@PROPOSAL_GENERATOR_REGISTRY.register()
class CellsRPN(RPN):
    """Detectron2's ``RPN`` whose anchor labelling computes IoU only where boxes overlap."""

    def _match(self, gt_boxes: Boxes, anchors: Boxes, grids) -> Tuple[torch.Tensor,
                                                                       torch.Tensor]:
        if grids is None or len(gt_boxes) == 0:
            return self.anchor_matcher(pairwise_iou(gt_boxes, anchors))
        return match_anchors(self.anchor_matcher, gt_boxes.tensor, anchors.tensor, grids)

    @torch.jit.unused
    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """As ``RPN.label_and_sample_anchors`` (same labels, same sampling, same matched
        boxes), with the IoU of overlapping anchor/box pairs only."""
        cells = getattr(self.anchor_generator, "num_cell_anchors", None)
        grids = anchor_grids([a.tensor for a in anchors], cells) if cells else None
        anchors = Boxes.cat(anchors)

        gt_labels, matched_gt_boxes = [], []
        for instances in gt_instances:
            gt_boxes_i = instances.gt_boxes
            matched_idxs, gt_labels_i = self._match(gt_boxes_i, anchors, grids)
            gt_labels_i = gt_labels_i.to(device=gt_boxes_i.device)
            if self.anchor_boundary_thresh >= 0:
                inside = anchors.inside_box(instances.image_size, self.anchor_boundary_thresh)
                gt_labels_i[~inside] = -1
            gt_labels_i = self._subsample_labels(gt_labels_i)
            if len(gt_boxes_i) == 0:
                matched_gt_boxes_i = torch.zeros_like(anchors.tensor)
            else:
                matched_gt_boxes_i = gt_boxes_i[matched_idxs].tensor
            gt_labels.append(gt_labels_i)
            matched_gt_boxes.append(matched_gt_boxes_i)
        return gt_labels, matched_gt_boxes
