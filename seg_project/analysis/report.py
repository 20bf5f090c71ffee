"""One self-contained HTML page about a training run: ``tools/report.py`` and the end of
``tools/train_net.py``.

:func:`write_report` reads a run folder (``OUTPUT_DIR`` of a training run) and writes one HTML
file (pictures embedded as base64 PNG data URIs, no external CSS or JavaScript) with these
sections, in this order, each an element whose ``id`` is stable (:data:`SECTION_IDS`):

- ``headline``: first, above the links: the best-model metric (``TEST.BEST_METRIC``) and the
  main COCO / pathology figures of the last evaluation, the best evaluation, training time,
  s/iter, s/image of training and of inference, device and precision
  (:mod:`.report_run`);
- ``final-metrics``: the LAST evaluation of ``metrics.json``: COCO AP (grader-exact, high cap
  when logged, per class) and the pathology metrics (overall and per class), printed with
  :func:`seg_project.analysis.report_sections.format_metric`;
- ``curves``: loss, loss components, learning rate and AP per evaluation
  (:func:`seg_project.analysis.plots.plot_runs`), and PQ / AJI / Dice / F1 / mPQ per
  evaluation when logged;
- ``confusion``: the class confusion matrix of the evaluated dataset's cells
  (``inference/<dataset>/coco_instances_results.json``, the last evaluation's predictions, at
  the cells' threshold under the overlap rule) against its ground truth
  (:mod:`seg_project.evaluation.confusion`), as a table and a heatmap;
- ``best-worst``: the best and worst N images by per-image PQ of the cells, ground truth next
  to the cells, drawn at a readable size with their legends (:mod:`.report_dataset`);
- ``run``: the run folder, iterations, evaluated dataset; timing and the training's
  environment (Python, PyTorch, Detectron2 versions, device, precision) from ``log.txt``
  (:mod:`.report_run`);
- ``settings``: collapsed: the key settings of ``config.yaml`` (model, input sizes, solver,
  AMP, detections per image, dataset root, classes and split) and the run's files.

A section that cannot be made (no ``config.yaml``, no evaluation logged, no ``inference/``
folder, the dataset no longer readable...) is still on the page, saying why; the page lists
the incomplete sections at its top. Only a missing or unreadable ``metrics.json`` stops the
report (:class:`~seg_project.utils.errors.DatasetError` naming the file).

The cells' threshold is the run's operating point unless one is given
(:func:`seg_project.data.score_threshold.resolve_score_threshold`: ``score_threshold``, the
config's ``TEST.PATHOLOGY.SCORE_THRESHOLD``, its ``TEST.OPERATING_POINT``, the run's
``operating_point.json``, else 0.5), under the config's overlap rule (``TEST.INSTANCE_MAP``);
the headline, the tables and the run section say which, and what the logged pathology metrics
counted.

The ground truth is read through the run's config: its datasets are registered again
(:func:`seg_project.config.register_datasets_from_config`), with the run's
``cells_split.json`` as ``DATASETS.CELLS.VAL_LIST`` (when the config has none), so that
``cells_val`` holds the very images the run evaluated.

Where the page goes: by default ``RUN_DIR/report.html``, the tool's own output, replaced at
each call; a file given explicitly (``out``, ``--out``) that exists is replaced only with
``overwrite`` (``--overwrite``). The file is written atomically.
"""

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import read_config_dict, register_run_datasets
from ..data.instance_map import DEFAULT_RULE, NO_RULE, OverlapRule
from ..data.score_threshold import (
    DEFAULT_SCORE_THRESHOLD,
    ScoreThreshold,
    read_operating_point,
    resolve_score_threshold,
)
from ..evaluation.pathology import setting_text
from ..utils.atomic_files import write_text
from ..utils.errors import DatasetError
from ..utils.paths import check_output_file, require_file
from ..utils.run_files import (
    CONFIG_FILE,
    INFERENCE_DIR,
    METRICS_FILE,
    OPERATING_POINT_FILE,
    REPORT_FILE,
    RESULTS_FILE,
)
from ..utils.values import config_value
from .curves import load_run
from .report_html import Section, page, paragraph
from .report_run import headline_section, read_environment, read_timing, run_section
from .report_sections import (
    curves_section,
    final_metrics_section,
    format_metric,
    last_evaluation,
    settings_section,
    strip_dataset_prefix,
)

__all__ = [
    "SECTION_IDS",
    "build_report",
    "format_metric",
    "last_evaluation",
    "write_report",
]

logger = logging.getLogger(__name__)

SECTION_IDS = ("headline", "final-metrics", "curves", "confusion", "best-worst", "run",
               "settings")
DEFAULT_WORST = 3
_DATASET_SECTIONS = (("confusion", "Class confusion"),
                     ("best-worst", "Best and worst images by PQ"))


def _read_config(run_dir: Path) -> Tuple[Optional[Dict], str]:
    """``config.yaml`` as a dict, or (None, why not)."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None, f"no {path} (not written by tools/train_net.py?)"
    try:
        config = read_config_dict(path)
    except DatasetError as e:
        return None, str(e)
    if not config:
        return None, f"{path} is not a Detectron2 config (it holds no keys)"
    return config, ""


def _choose_dataset(run_dir: Path, config: Optional[Dict],
                    dataset: Optional[str]) -> Tuple[Optional[str], Optional[Path], str]:
    """(dataset, its results file, "") or (dataset or None, None, why there is none): the
    dataset asked for, else the first of the config's ``DATASETS.TEST`` (else of the
    ``inference/`` folders) whose predictions were written."""
    inference = run_dir / INFERENCE_DIR
    if dataset:
        candidates = [dataset]
    else:
        candidates = list(config_value(config, "DATASETS.TEST") or []) if config else []
        if inference.is_dir():
            candidates += sorted(p.name for p in inference.iterdir()
                                 if p.is_dir() and p.name not in candidates)
    for name in candidates:
        results = inference / name / RESULTS_FILE
        if results.is_file():
            return name, results, ""
    if not candidates:
        return None, None, (f"no {inference}/<dataset>/{RESULTS_FILE} and no DATASETS.TEST: "
                            "the run has not evaluated")
    return candidates[0], None, (f"no {inference / candidates[0] / RESULTS_FILE}: the run has "
                                 "not evaluated (yet), or TEST.EVAL_PERIOD is 0")


def _problem(error: BaseException) -> str:
    from ..utils.cli import as_user_error

    return as_user_error(error, (ValueError, KeyError, AssertionError)) or repr(error)


def _logged_setting(metrics: Dict[str, float], config: Optional[Dict]
                    ) -> Tuple[float, OverlapRule]:
    """The score threshold and overlap rule of the last evaluation's pathology metrics: as
    logged beside them (``pathology/score_threshold``...), else (runs from before the overlap
    rule) the config's threshold (0.5 when unset) and no rule."""
    if "pathology/score_threshold" in metrics:
        return (float(metrics["pathology/score_threshold"]),
                OverlapRule(float(metrics.get("pathology/min_visible_fraction", 0.0)),
                            float(metrics.get("pathology/max_mask_iou", 1.0))))
    threshold = config_value(config, "TEST.PATHOLOGY.SCORE_THRESHOLD") if config else None
    if threshold is None or float(threshold) < 0:
        threshold = DEFAULT_SCORE_THRESHOLD
    return float(threshold), NO_RULE


def _cells_line(run_dir: Path, logged: Tuple[float, OverlapRule], cells: ScoreThreshold,
                rule: OverlapRule) -> str:
    """What the page's pathology figures count: the logged evaluation's setting, the cells
    of the pictures and tables below, and the operating point when one was chosen."""
    line = (f"Logged pathology metrics: {setting_text(*logged)}. The cells of the pictures, "
            f"best/worst images and confusion below: {cells.describe()}; {rule.describe()}.")
    try:
        point = read_operating_point(run_dir)
    except DatasetError as e:
        return f"{line} {e}"
    if point:
        best = point.get("best") or {}
        at_half = next((r for r in point.get("grid", []) if r.get("score_threshold") == 0.5),
                       {})
        pq = " ".join(p for p in (
            f"PQ {best['PQ']:.4f} there" if best.get("PQ") is not None else "",
            f"(PQ {at_half['PQ']:.4f} at 0.5)" if at_half.get("PQ") is not None else "") if p)
        line += (f" Operating point: score >= {point['score_threshold']:g}, chosen on "
                 f"{point.get('dataset', '?')}{': ' + pq if pq else ''} "
                 f"({OPERATING_POINT_FILE}).")
    return line


def _dataset_sections(run_dir: Path, config: Optional[Dict], config_problem: str,
                      dataset: Optional[str], results: Optional[Path], why_not: str,
                      class_names: Sequence[str], score_threshold: float, rule: OverlapRule,
                      worst: int, logged_pq: Optional[float]) -> List[Section]:
    """The confusion and best/worst sections, or both saying why they are missing."""
    from .report_dataset import best_worst_section, confusion_section, load_evaluated_set

    if results is None or config is None:
        reason = why_not or f"the ground truth is read through the run's config: {config_problem}"
        return [Section(sid, title, missing=reason) for sid, title in _DATASET_SECTIONS]
    try:
        register_run_datasets(run_dir)
        evaluated = load_evaluated_set(dataset, results, class_names)
    except (DatasetError, ValueError, KeyError, AssertionError, OSError) as e:
        reason = f"cannot read the ground truth of {dataset}: {_problem(e)}"
        logger.warning(f"report: {reason}")
        return [Section(sid, title, missing=reason) for sid, title in _DATASET_SECTIONS]
    sections = []
    for (sid, title), make in zip(_DATASET_SECTIONS, (
            lambda: confusion_section(evaluated, score_threshold, rule=rule),
            lambda: best_worst_section(evaluated, score_threshold, worst, logged_pq, rule))):
        try:
            sections.append(make())
        except (DatasetError, ValueError, OSError) as e:
            logger.warning(f"report: {title}: {_problem(e)}")
            sections.append(Section(sid, title, missing=_problem(e)))
    return sections


def _best_line(run, metric: str, mode: str) -> str:
    from .summary import summarize_runs

    try:
        row = summarize_runs([run], metric, mode)[0]
    except ValueError:
        return ""
    if row["best"] is None:
        return ""
    where = (f"epoch {row['best_epoch']:g}" if row["best_epoch"] is not None
             else f"iteration {row['best_iteration']}")
    return f"Best {metric} ({mode}): {row['best']:.4g} at {where} (model_best.pth)."


def build_report(run_dir, *, dataset: Optional[str] = None, worst: int = DEFAULT_WORST,
                 score_threshold: Optional[float] = None) -> str:
    """The report page of a run, as HTML text (see the module docstring).

    Args:
        run_dir: the run folder (holding ``metrics.json``, ``config.yaml``...).
        dataset: the evaluated dataset to look at (default: the first of the config's
            ``DATASETS.TEST`` with predictions in ``inference/``).
        worst: N, the number of best and of worst images shown.
        score_threshold: predictions scoring below it are no cells: left out of the confusion
            matrix, the per-image metrics and the pictures (default: the run's, see
            :func:`seg_project.data.score_threshold.resolve_score_threshold`: the config's
            ``TEST.PATHOLOGY.SCORE_THRESHOLD`` when set, else the run's operating point, else
            0.5).

    Returns:
        str: the HTML document.

    Raises:
        DatasetError: no run folder, or a missing or unreadable ``metrics.json``.
        ValueError: ``worst`` below 1.
    """
    start = time.perf_counter()
    if worst < 1:
        raise ValueError(f"the number of best and worst images must be at least 1, got {worst}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DatasetError(run_dir, "no such run folder")
    metrics_file = require_file(run_dir / METRICS_FILE)
    run = load_run(run_dir)
    config, config_problem = _read_config(run_dir)
    evaluation = last_evaluation(metrics_file)
    dataset, results, why_not = _choose_dataset(run_dir, config, dataset)
    prefix = f"{dataset}/" if evaluation and dataset and any(
        k.startswith(f"{dataset}/") for k in evaluation) else ""
    metrics = strip_dataset_prefix(evaluation or {}, dataset)
    class_names = list(config_value(config, "DATASETS.CELLS.CLASS_NAMES") or []) if config \
        else []
    if not class_names:
        class_names = list(dict.fromkeys(k.split("-", 1)[1] for k in metrics
                                         if k.startswith(("segm/AP50-", "pathology/PQ-"))))
    cells = resolve_score_threshold(score_threshold, config, run_dir, flag="score_threshold")
    rule = OverlapRule.from_config(config) if config else DEFAULT_RULE
    logged = _logged_setting(metrics, config)
    best_metric = (config_value(config, "TEST.BEST_METRIC") if config else None) or "segm/AP50"
    mode = (config_value(config, "TEST.BEST_METRIC_MODE") if config else None) or "max"
    logger.info(f"report: {run_dir}: headline, final metrics and curves")
    best_line = _best_line(run, prefix + best_metric, mode)
    timing = read_timing(run_dir, run, config)
    environment = read_environment(run_dir, config)
    headline = headline_section(metrics, evaluation, best_metric, best_line, dataset, timing,
                                environment)
    sections = [
        final_metrics_section(evaluation, metrics, class_names, best_line,
                              setting_text(*logged)),
        curves_section(run, prefix, best_metric, mode),
    ]
    headline.body += paragraph(_cells_line(run_dir, logged, cells, rule))
    # The evaluator's PQ is the mean of the per-image PQ at its threshold and rule.
    logged_pq = metrics.get("pathology/PQ") if logged == (cells.value, rule) else None
    sections += _dataset_sections(run_dir, config, config_problem, dataset, results, why_not,
                                  class_names, cells.value, rule, worst, logged_pq)
    sections.append(run_section(timing, environment, [
        ("run folder", str(run_dir.resolve())),
        ("iterations logged", str(run.last_iteration + 1)),
        ("evaluated dataset", dataset or "none"),
        ("predictions", str(results) if results else "none"),
        ("score threshold", cells.describe()),
        ("overlap rule", rule.describe()),
    ]))
    sections.append(settings_section(run_dir, config, config_problem))
    seconds = time.perf_counter() - start
    footer = (f"Written by seg_project.analysis.report on "
              f"{datetime.now().isoformat(timespec='seconds')} in {seconds:.1f} s.")
    logger.info(f"report: built in {seconds:.1f} s")
    return page(f"Training report: {run.name}", headline.to_html(), sections, footer)


def write_report(run_dir, out=None, *, dataset: Optional[str] = None,
                 worst: int = DEFAULT_WORST, score_threshold: Optional[float] = None,
                 overwrite: bool = False) -> Path:
    """Write a run's report page (see the module docstring and :func:`build_report`).

    Args:
        run_dir: the run folder.
        out: the HTML file; None: ``run_dir/report.html``, replaced if it exists.
        dataset, worst, score_threshold: see :func:`build_report`.
        overwrite: replace an existing ``out`` (an explicit ``out`` that exists is otherwise
            refused before any work).

    Returns:
        Path: the file written.

    Raises:
        DatasetError: see :func:`build_report`; ``out`` exists without ``overwrite``, or
            cannot be written.
    """
    run_dir = Path(run_dir)
    if out is None:
        out = check_output_file(run_dir / REPORT_FILE, overwrite=True, what="report")
    else:
        out = check_output_file(out, overwrite=overwrite, what="report")
    html_text = build_report(run_dir, dataset=dataset, worst=worst,
                             score_threshold=score_threshold)
    write_text(out, html_text)
    logger.info(f"report: wrote {out} ({len(html_text.encode()) / 2**20:.2f} MiB)")
    return out
