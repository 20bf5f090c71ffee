"""The evaluator that runs after every epoch and in ``--eval-only``: Detectron2's
``COCOEvaluator`` computing the project's numbers (:mod:`.predictions`).

Changes to Detectron2's ``COCOEvaluator``:

- the headline ``segm/AP50``, ``bbox/AP``... are the grader's exact figures (at most 100
  detections per image and class), with the high-cap figures ``segm/AP50@N``... beside them
  (N = ``TEST.DETECTIONS_PER_IMAGE``) and the pathology metrics under ``pathology/...``
  (``TEST.PATHOLOGY.*``, ``TEST.INSTANCE_MAP.*``; ``pathology/score_threshold`` and the
  rule's ``pathology/min_visible_fraction``, ``pathology/max_mask_iou`` say which
  predictions they counted);
- evaluation runs through faster-coco-eval or pycocotools (Detectron2's fast path needs its
  C++ extension);
- predictions may carry RLE masks already (``pred_rles``, see
  :class:`seg_project.inference.postprocess.RLEOutputModel`) instead of full-size bitmaps;
- the ground truth is converted to COCO json afresh for each run (never a stale cached file);
- the predictions are written once, to ``coco_instances_results.json`` (atomically), not also
  pickled into ``instances_predictions.pth``.
"""

import contextlib
import io
import itertools
import json
import os

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils import comm

from ..data.instance_map import NO_RULE, OverlapRule
from ..data.score_threshold import resolve_score_threshold
from ..inference.postprocess import instances_to_coco_entries
from ..utils.atomic_files import write_text
from ..utils.run_files import RESULTS_FILE
from .predictions import evaluate_predictions, format_tables

__all__ = ["CellsCOCOEvaluator"]


class CellsCOCOEvaluator(COCOEvaluator):
    """COCO bbox + segm evaluation (grader-exact and high cap) plus pathology metrics."""

    def __init__(
        self,
        dataset_name: str,
        output_dir: str,
        *,
        max_dets_per_image: int = 1000,
        use_fast_coco_eval: bool = True,
        pathology_score_threshold=0.5,
        overlap_rule: OverlapRule = NO_RULE,
        distributed: bool = True,
    ):
        """
        Args:
            dataset_name: a registered dataset with annotations.
            output_dir: where the COCO-format ground truth and the predictions are written.
            max_dets_per_image: the cap of the high-cap AP figures
                (``TEST.DETECTIONS_PER_IMAGE``); the headline always counts 100.
            use_fast_coco_eval: faster-coco-eval instead of pycocotools.
            pathology_score_threshold: score threshold of the pathology metrics; None
                turns them off.
            overlap_rule: the overlap rule of the pathology metrics' instance maps.
            distributed: gather predictions from all processes.
        """
        metadata = MetadataCatalog.get(dataset_name)
        if not hasattr(metadata, "json_file"):
            json_file = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
            if comm.is_main_process():
                convert_to_coco_json(dataset_name, json_file, allow_cached=False)
            comm.synchronize()
            metadata.json_file = json_file
        with contextlib.redirect_stdout(io.StringIO()):
            super().__init__(dataset_name, tasks=("bbox", "segm"), distributed=distributed,
                             output_dir=output_dir, use_fast_impl=False,
                             max_dets_per_image=max_dets_per_image)
        # Only coco_instances_results.json is written (atomically, see _eval_predictions):
        # Detectron2 would also torch.save every prediction into instances_predictions.pth,
        # which nothing reads and which names no file when the disk is full.
        self._results_dir, self._output_dir = output_dir, None
        self._high_cap = max_dets_per_image
        self._use_fast_coco_eval = use_fast_coco_eval
        self._pathology_score_threshold = pathology_score_threshold
        self._overlap_rule = overlap_rule

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str) -> "CellsCOCOEvaluator":
        """The evaluator of ``dataset_name`` with the settings of ``cfg`` (``TEST.*``): the
        pathology metrics at ``TEST.PATHOLOGY.SCORE_THRESHOLD``, else the operating point the
        config records, else 0.5 (:func:`seg_project.data.score_threshold.
        resolve_score_threshold` without weights: training evaluates at a fixed threshold),
        under ``TEST.INSTANCE_MAP``'s overlap rule."""
        threshold = resolve_score_threshold(cfg=cfg).value
        return cls(dataset_name, output_dir,
                   max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                   use_fast_coco_eval=cfg.TEST.FAST_COCO_EVAL,
                   pathology_score_threshold=threshold if cfg.TEST.PATHOLOGY.ENABLED else None,
                   overlap_rule=OverlapRule.from_config(cfg))

    def process(self, inputs, outputs):
        for inputs_i, output in zip(inputs, outputs):
            instances = output["instances"].to(self._cpu_device)
            if instances.has("pred_rles"):
                entries = instances_to_coco_entries(instances, inputs_i["image_id"])
            else:
                entries = instances_to_coco_json(instances, inputs_i["image_id"])
            self._predictions.append({"image_id": inputs_i["image_id"], "instances": entries,
                                      "num_detections": len(instances)})

    def _eval_predictions(self, predictions, img_ids=None):
        results = list(itertools.chain(*[p["instances"] for p in predictions]))
        to_category = {v: k for k, v in
                       self._metadata.thing_dataset_id_to_contiguous_id.items()}
        for result in results:
            result["category_id"] = to_category[result["category_id"]]
        if self._results_dir:
            path = os.path.join(self._results_dir, RESULTS_FILE)
            self._logger.info(f"Saving results to {path}")
            write_text(path, json.dumps(results))
        self._log_capped([p.get("num_detections", len(p["instances"])) for p in predictions])
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        engine = "faster-coco-eval" if self._use_fast_coco_eval else "pycocotools"
        self._logger.info(f"Evaluating {len(results)} predictions on {len(predictions)} images "
                          f"with {engine} ...")
        if not results:
            self._logger.warning("No predictions from the model: AP is 0.")
        class_names = list(self._metadata.get("thing_classes"))
        metrics = evaluate_predictions(
            self._coco_api, results, class_names, high_cap=self._high_cap,
            fast=self._use_fast_coco_eval,
            pathology_threshold=self._pathology_score_threshold, img_ids=img_ids,
            overlap_rule=self._overlap_rule)
        self._logger.info(f"Evaluation of {self._metadata.name}:\n"
                          + format_tables(metrics, class_names, self._high_cap))
        self._results.update(metrics)

    def _log_capped(self, counts) -> None:
        from ..inference.capacity import detection_cap_message

        message = detection_cap_message(counts, self._high_cap)
        if message:
            self._logger.warning(message)
