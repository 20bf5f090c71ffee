"""COCO evaluation for crowded images: many detections per image, faster-coco-eval, per-class AP50.

``CellsCOCOEvaluator`` is Detectron2's ``COCOEvaluator`` with four changes:

- ``max_dets_per_image`` (the AP cap) follows ``TEST.DETECTIONS_PER_IMAGE``: images hold
  hundreds of cells, and COCO's default of 100 would ignore most of them.
- Evaluation runs through :func:`evaluate_coco`: faster-coco-eval's ``COCOeval_faster``
  (the same stats as pycocotools, several times faster) or pycocotools. Detectron2's own fast
  path needs its C++ extension.
- Predictions may carry RLE masks already (``pred_rles``, see
  :class:`seg_project.postprocess.RLEOutputModel`) instead of full-size bitmaps.
- Per-class AP50 (the course's metric, per class) is reported next to per-class AP, and the
  ground truth is converted to COCO json afresh for each run (never a stale cached file).
"""

import contextlib
import copy
import io
import itertools
import json
import os
from typing import Dict, List, Optional

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets, instances_to_coco_json
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

from ..atomic_files import write_text
from ..postprocess import instances_to_coco_entries

__all__ = ["CellsCOCOEvaluator", "evaluate_coco"]


def evaluate_coco(coco_gt, results: List[Dict], iou_type: str, max_dets: int = 100,
                  fast: bool = True, img_ids: Optional[List[int]] = None):
    """Run COCO evaluation of ``results`` against ``coco_gt`` and return the evaluator.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` ground truth.
        results: COCO result dicts with dataset category ids.
        iou_type: "bbox" or "segm".
        max_dets: detections per image that count (COCO's maxDets[2]).
        fast: use faster-coco-eval's ``COCOeval_faster`` instead of pycocotools.
        img_ids: restrict to these image ids.

    Returns:
        The evaluator after evaluate/accumulate/summarize (``.stats``, ``.eval["precision"]``).
    """
    if iou_type == "segm":
        # Without bbox, mask AP uses mask areas for the small/medium/large split.
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
    if fast:
        from faster_coco_eval import COCOeval_faster as evaluator_class
    else:
        evaluator_class = COCOevalMaxDets  # pycocotools, with maxDets[2] != 100 supported
    coco_eval = evaluator_class(coco_gt, coco_dt, iou_type)
    coco_eval.params.maxDets = [1, 10, max_dets]
    if img_ids is not None:
        coco_eval.params.imgIds = img_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


class CellsCOCOEvaluator(COCOEvaluator):
    """COCO bbox + segm evaluation with a high detection cap and faster-coco-eval."""

    def __init__(
        self,
        dataset_name: str,
        output_dir: str,
        *,
        max_dets_per_image: int = 1000,
        use_fast_coco_eval: bool = True,
        distributed: bool = True,
    ):
        """
        Args:
            dataset_name: a registered dataset with annotations.
            output_dir: where the COCO-format ground truth and the predictions are written.
            max_dets_per_image: detections per image that count for AP.
            use_fast_coco_eval: faster-coco-eval instead of pycocotools.
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
        self._use_fast_coco_eval = use_fast_coco_eval

    def process(self, inputs, outputs):
        for inputs_i, output in zip(inputs, outputs):
            instances = output["instances"].to(self._cpu_device)
            if instances.has("pred_rles"):
                entries = instances_to_coco_entries(instances, inputs_i["image_id"])
            else:
                entries = instances_to_coco_json(instances, inputs_i["image_id"])
            self._predictions.append({"image_id": inputs_i["image_id"], "instances": entries})

    def _eval_predictions(self, predictions, img_ids=None):
        results = list(itertools.chain(*[p["instances"] for p in predictions]))
        to_category = {v: k for k, v in
                       self._metadata.thing_dataset_id_to_contiguous_id.items()}
        for result in results:
            result["category_id"] = to_category[result["category_id"]]
        if self._output_dir:
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {path}")
            write_text(path, json.dumps(results))
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        engine = "faster-coco-eval" if self._use_fast_coco_eval else "pycocotools"
        self._logger.info(f"Evaluating {len(results)} predictions with {engine} "
                          f"(maxDets {self._max_dets_per_image[2]}) ...")
        class_names = self._metadata.get("thing_classes")
        for task in sorted(self._tasks):
            if not results:
                self._results[task] = self._no_predictions(task, class_names)
                continue
            coco_eval = evaluate_coco(self._coco_api, results, task, self._max_dets_per_image[2],
                                      self._use_fast_coco_eval, img_ids)
            res = self._derive_coco_results(coco_eval, task, class_names=class_names)
            res.update(self._per_class_ap50(coco_eval, task, class_names))
            self._results[task] = res

    def _no_predictions(self, task: str, class_names: List[str]) -> Dict[str, float]:
        """Nothing detected: AP is 0 wherever there is ground truth (Detectron2 says NaN,
        which would hide a model that finds nothing behind "not computable")."""
        present = {ann["category_id"] for ann in self._coco_api.dataset["annotations"]}
        to_dataset_id = {v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()}
        self._logger.warning("No predictions from the model: AP is 0.")
        res = {metric: 0.0 for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
        per_class = {f"AP50-{name}": 0.0 if to_dataset_id[k] in present else float("nan")
                     for k, name in enumerate(class_names)}
        res.update({f"AP-{name}": per_class[f"AP50-{name}"] for name in class_names})
        res.update(per_class)
        self._log_per_class(task, per_class)
        return res

    def _log_per_class(self, task: str, per_class: Dict[str, float]) -> None:
        self._logger.info(f"Per-class {task} AP50:\n" + create_small_table(per_class))

    def _per_class_ap50(self, coco_eval, task: str, class_names: List[str]) -> Dict[str, float]:
        # precision: (IoU thresholds, recall, class, area range, max dets); IoU index 0 is 0.5.
        precision = coco_eval.eval["precision"][0, :, :, 0, -1]
        per_class = {}
        for k, name in enumerate(class_names):
            values = precision[:, k]
            values = values[values > -1]
            per_class[f"AP50-{name}"] = float(values.mean() * 100) if values.size else float("nan")
        self._log_per_class(task, per_class)
        return per_class

