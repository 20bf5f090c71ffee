"""The issue's targets, checked against the tables of one ``run_all`` run.

- Training step: ours at most 0.6x torchvision v2 and at most 0.85x v1 (median s/iter, same
  run, each size).
- Inference per image at 1,000 detections: ours at most 1.0x torchvision v1 (each size; the
  same output: submission entries with RLE masks).
- Data never the bottleneck: under 5 % of iteration time waiting for data with the default
  workers.
- Evaluation: faster-coco-eval at least 2x faster than pycocotools, same stats.
"""

from typing import Dict, List, Optional

from common import PIPELINES

TRAIN_V2, TRAIN_V1, INFER_V1, DATA_SHARE, EVAL_SPEEDUP = 0.6, 0.85, 1.0, 0.05, 2.0


def _verdict(value: Optional[float], limit: float, at_most: bool = True) -> str:
    if value is None:
        return "not measured"
    holds = value <= limit if at_most else value >= limit
    return "holds" if holds else "MISSED"


def _ratio_rows(rows: List[Dict], what: str, pipeline: str, limit: float, column: str,
                where: Dict) -> List[Dict]:
    out = []
    for row in rows:
        if row.get("pipeline") != PIPELINES[pipeline]:
            continue
        if any(row.get(k) != v for k, v in where.items()):
            continue
        value = row.get(column)
        out.append({"target": f"{what} <= {limit}x {PIPELINES[pipeline]}",
                    "where": row["size"], "measured": value,
                    "holds": _verdict(value, limit)})
    return out


def check(sections: Dict[str, Dict]) -> List[Dict]:
    """One row per target and setting: ``target``, ``where``, ``measured``, ``holds``.

    Args:
        sections: run_all's sections by benchmark name (``rows`` or ``error``/``skipped``).
    """
    def rows_of(name):
        rows = sections.get(name, {}).get("rows")
        return rows if isinstance(rows, list) else []

    training, inference = rows_of("bench_training"), rows_of("bench_inference")
    out = []
    out += _ratio_rows(training, "training s/iter (ours / this)", "v2", TRAIN_V2,
                       "ours / this", {})
    out += _ratio_rows(training, "training s/iter (ours / this)", "v1", TRAIN_V1,
                       "ours / this", {})
    out += _ratio_rows(inference, "inference s/image at 1,000 detections (ours / this)", "v1",
                       INFER_V1, "ours / this", {"max dets": 1000})
    for row in rows_of("bench_dataloader"):
        if row.get("target < 5 %") is not None:
            share = row.get("waiting share")
            out.append({"target": "waiting for data < 5 % of iteration time (default workers)",
                        "where": f"{row['DATALOADER.NUM_WORKERS']} workers",
                        "measured": share, "holds": "not measured" if share is None
                        else ("holds" if share < DATA_SHARE else "MISSED")})
    for row in rows_of("bench_evaluation"):
        if row.get("library") == "faster-coco-eval":
            same = row.get("max |stats diff|") is not None
            speedup = row.get("speedup")
            verdict = _verdict(speedup, EVAL_SPEEDUP, at_most=False)
            out.append({"target": "faster-coco-eval >= 2x pycocotools, same stats (asserted)",
                        "where": row["iou type"], "measured": speedup,
                        "holds": verdict if same else "MISSED"})
    for name, label in (("bench_training", "training"), ("bench_inference", "inference"),
                        ("bench_dataloader", "data loading"), ("bench_evaluation", "evaluation")):
        section = sections.get(name)
        if section is None or "rows" not in section:
            reason = "not run" if section is None else section.get("error",
                                                                    section.get("skipped"))
            out.append({"target": f"{label} targets", "where": "", "measured": None,
                        "holds": f"not measured ({reason})"})
    return out
