"""Prediction: from images to instances and submission entries.

- :mod:`.predictor`: :class:`~.predictor.Predictor` (a model from a config and weights, one
  image or a batch at a time) and :class:`~.predictor.CellsTTA` (flips and scales, merged);
- :mod:`.tiling`: images larger than ``TEST.TILE.SIZE`` predicted in overlapping tiles and
  merged (:class:`~.tiling.TiledInference`), for evaluation, prediction and TTA alike;
- :mod:`.postprocess`: masks pasted as RLE crops (:class:`~.postprocess.RLEOutputModel`)
  and COCO result entries;
- :mod:`.predict`: the job behind ``tools/predict.py`` (inputs, ids, the submission file);
- :mod:`.capacity`: how many images reached the per-image detection cap.

Weights are loaded by :mod:`seg_project.checkpoint` (shared with training).

Import the modules themselves: this package imports nothing, so that tools start fast.
"""
