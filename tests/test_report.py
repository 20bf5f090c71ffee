"""Tests of the run report (seg_project.analysis.report, tools/report.py) and of the class
confusion matrix (seg_project.evaluation.confusion).

The report is written once for the `trained_run` fixture and parsed with the standard
library's html.parser; the confusion matrix is also checked on hand-built cases."""

import base64
import contextlib
import io
import json
import math
import re
import shutil
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import yaml
from conftest import load_tool
from pycocotools.coco import COCO

from seg_project.analysis.curves import load_run
from seg_project.analysis.report import SECTION_IDS, format_metric, last_evaluation, write_report
from seg_project.analysis.report_dataset import PANEL_SIZE, pick_best_worst
from seg_project.analysis.report_run import read_environment, read_timing
from seg_project.data.image_io import read_image
from seg_project.data.instance_map import OverlapRule, cell_entries
from seg_project.evaluation.confusion import confusion_matrix, format_confusion, match_greedy
from seg_project.utils.errors import DatasetError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- parsing


class ReportParser(HTMLParser):
    """The parts of a report page the tests look at, by section id."""

    def __init__(self):
        super().__init__()
        self.ids = []
        self.section = None
        self.cells = []  # {"section", "attrs", "text"} of every td
        self.images = []  # {"section", "attrs"} of every img
        self.missing = {}  # section id -> "Not available: ..." text
        self.cards = []  # attrs of the best/worst pictures
        self.tags = set()
        self._cell = None
        self._missing = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "section":
            self.section = attrs.get("id")
        elif tag == "td":
            self._cell = {"section": self.section, "attrs": attrs, "text": ""}
        elif tag == "img":
            self.images.append({"section": self.section, "attrs": attrs})
            if "data-image-id" in attrs:
                self.cards.append(attrs)
        elif tag == "p" and attrs.get("class") == "missing" and self.section:
            self._missing = self.section
            self.missing[self.section] = ""

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None
        elif tag == "p":
            self._missing = None
        elif tag == "section":
            self.section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._missing:
            self.missing[self._missing] += data

    def keyed_cells(self, section):
        return {c["attrs"]["data-key"]: c["text"] for c in self.cells
                if c["section"] == section and "data-key" in c["attrs"]}

    def confusion(self, size):
        matrix = np.full((size, size), -1, dtype=np.int64)
        for c in self.cells:
            if c["section"] == "confusion" and "data-row" in c["attrs"]:
                matrix[int(c["attrs"]["data-row"]), int(c["attrs"]["data-col"])] = int(c["text"])
        return matrix


def parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def _last_eval_line(run: Path) -> dict:
    lines = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
    return [line for line in lines if "segm/AP50" in line][-1]


def _config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def _copy_run(run: Path, dest: Path, inference: bool = True) -> Path:
    """The run's small files (no checkpoints)."""
    dest.mkdir(parents=True)
    for name in ("metrics.json", "config.yaml", "cells_split.json", "log.txt"):
        shutil.copy2(run / name, dest / name)
    if inference:
        shutil.copytree(run / "inference", dest / "inference")
    return dest


# ------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def report(trained_run, tmp_path_factory):
    """The report of the trained run, written once: (path, parsed page, seconds)."""
    out = tmp_path_factory.mktemp("report") / "page.html"
    start = time.perf_counter()
    assert load_tool("report").main([str(trained_run), "--out", str(out)]) == 0
    seconds = time.perf_counter() - start
    return out, parse(out), seconds


def test_report_has_every_section_complete(report):
    path, page, seconds = report
    for section in SECTION_IDS:
        assert page.ids.count(section) == 1, section
    assert page.missing == {}, page.missing
    assert "missing-sections" not in page.ids
    assert path.stat().st_size < 10 * 2**20
    print(f"report written in {seconds:.1f} s, {path.stat().st_size / 2**20:.2f} MiB")


def test_final_metrics_are_the_last_evaluation_of_metrics_json(report, trained_run):
    _, page, _ = report
    last = _last_eval_line(trained_run)
    shown = page.keyed_cells("final-metrics")
    logged = {k for k in last if k.split("/")[0] in ("segm", "bbox", "pathology")}
    assert set(shown) == logged
    for key, text in shown.items():
        assert text == format_metric(key, last[key]), key
    assert shown["pathology/PQ"] == f"{last['pathology/PQ']:.4f}"
    assert shown["segm/AP50"] == f"{last['segm/AP50']:.2f}"


def test_every_picture_is_an_embedded_png(report):
    path, page, _ = report
    assert page.images
    for image in page.images:
        src = image["attrs"]["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    sections = [image["section"] for image in page.images]
    assert sections.count("curves") >= 4  # loss, loss components, lr, AP (+ per class, PQ)
    assert sections.count("confusion") == 1
    assert sections.count("best-worst") == 2  # 2 validation images: 1 best, 1 worst
    assert not page.tags & {"script", "link", "iframe"}
    assert "http://" not in path.read_text() and "https://" not in path.read_text()


def _run_ground_truth(run: Path):
    """The run's validation ground truth, registered from its config and split file."""
    from seg_project.config import load_config, register_datasets_from_config
    from seg_project.evaluation.results_file import ground_truth

    cfg = load_config(run / "config.yaml")
    cfg.DATASETS.CELLS.VAL_LIST = str(run / "cells_split.json")
    register_datasets_from_config(cfg)
    return ground_truth("cells_val", list(cfg.DATASETS.CELLS.CLASS_NAMES))


def test_confusion_counts_every_instance_once(report, trained_run):
    _, page, _ = report
    coco_gt, class_names = _run_ground_truth(trained_run)
    k = len(class_names)
    matrix = page.confusion(k + 1)
    assert (matrix >= 0).all()
    assert matrix[k, k] == 0
    # The report's cells: at the run's operating point (chosen at the end of training), under
    # its overlap rule.
    point = json.loads((trained_run / "operating_point.json").read_text())
    threshold, rule = point["score_threshold"], OverlapRule.from_dict(point["overlap_rule"])
    assert _config(trained_run)["TEST"]["PATHOLOGY"]["SCORE_THRESHOLD"] == -1  # not set
    results = json.loads((trained_run / "inference" / "cells_val"
                          / "coco_instances_results.json").read_text())
    cells = [cell for image_id in coco_gt.getImgIds() for cell in cell_entries(
        [e for e in results if e["image_id"] == image_id], coco_gt.imgs[image_id]["height"],
        coco_gt.imgs[image_id]["width"], threshold, rule)]
    matched = matrix[:k, :k].sum()
    assert matched + matrix[:k, k].sum() == len(coco_gt.getAnnIds())
    assert matched + matrix[k, :k].sum() == len(cells)
    assert len(cells) <= sum(e["score"] >= threshold for e in results)
    assert (matrix == confusion_matrix(coco_gt, cells, class_names, threshold)).all()
    # The tiny model scores below the threshold: at 0 every prediction takes part.
    everything = confusion_matrix(coco_gt, results, class_names, 0.0)
    assert everything[:k, :k].sum() + everything[k, :k].sum() == len(results)
    assert everything[:k].sum() == len(coco_gt.getAnnIds())
    if _last_eval_line(trained_run)["segm/AP50"] > 0:  # some prediction hit a cell
        assert everything[:k, :k].sum() >= 1


def test_best_and_worst_images_carry_their_pq(report, trained_run):
    _, page, _ = report
    assert len(page.cards) == 2
    val_names = json.loads((trained_run / "cells_split.json").read_text())["val_names"]
    assert {card["alt"] for card in page.cards} == set(val_names)
    pqs = [float(card["data-pq"]) for card in page.cards]
    assert pqs[0] >= pqs[1]
    # At the run's operating point: the PQ the end of training chose it by...
    point = json.loads((trained_run / "operating_point.json").read_text())
    assert np.mean(pqs) == pytest.approx(point["best"]["PQ"], abs=1e-5)
    # ...which is the evaluator's own when the point is the threshold it logged at.
    last = _last_eval_line(trained_run)
    if point["score_threshold"] == last["pathology/score_threshold"]:
        assert np.mean(pqs) == pytest.approx(last["pathology/PQ"], abs=1e-5)


def test_headline_comes_first_and_settings_are_folded_away(report, trained_run):
    path, page, _ = report
    text = path.read_text(encoding="utf-8")
    # The page opens with the headline: before the links, the metric tables and settings.
    assert page.ids.index("headline") < page.ids.index("final-metrics")
    assert text.index('id="headline"') < text.index("<nav>") < text.index('id="settings"')
    last = _last_eval_line(trained_run)
    best_metric = _config(trained_run)["TEST"]["BEST_METRIC"]
    headline = page.keyed_cells("headline")
    assert headline[best_metric] == format_metric(best_metric, last[best_metric])
    assert headline["pathology/PQ"] == format_metric("pathology/PQ", last["pathology/PQ"])
    assert list(SECTION_IDS) == [i for i in page.ids if i in SECTION_IDS]  # the order
    settings = text[text.index('id="settings"'):]
    assert settings.index("<details>") < settings.index("<table")  # collapsed
    assert text.index('id="headline"') < 1500 + text.index("<body>")  # near the top


def test_the_run_section_has_timing_and_environment(report, trained_run):
    path, page, _ = report
    run_cells = [c["text"] for c in page.cells if c["section"] == "run"]
    times = [json.loads(line).get("time") for line in
             (trained_run / "metrics.json").read_text().splitlines()]
    seconds = float(np.median([t for t in times if t is not None]))
    assert f"{seconds:.3g} s/iter" in " ".join(run_cells)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    import detectron2
    import torch
    assert any(c.startswith(torch.__version__.split("+")[0]) for c in run_cells)
    assert any(c.startswith(detectron2.__version__) for c in run_cells)
    assert any(c.startswith(python) for c in run_cells)
    assert "cpu" in run_cells  # the config's device


def test_timing_and_environment_are_read_from_the_log(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path / "run", inference=False)
    (run / "log.txt").write_text(
        "[12/03 07:49:03] detectron2 INFO: Environment info:\n"
        "-------------------  ----------------------\n"
        "sys.platform         linux\n"
        "Python               3.99.1 (main) [GCC 12.2.0]\n"
        "detectron2           0.6 @/site-packages/detectron2\n"
        "PyTorch              9.1.0 @/site-packages/torch\n"
        "GPU available        No: torch.cuda.is_available() == False\n"
        "-------------------  ----------------------\n"
        "PyTorch built with:\n  - GCC 13.3\n"
        "[12/03 07:49:04] seg_project.engine.mixed_precision INFO: Mixed precision: cpu "
        "bfloat16: SOLVER.AMP.CPU_DTYPE auto, native (avx512_bf16)\n"
        "[12/03 07:49:06] d2.evaluation.evaluator INFO: Total inference time: 0:00:01.5 "
        "(0.750000 s / iter per device, on 1 devices)\n"
        "[12/03 07:49:09] d2.evaluation.evaluator INFO: Total inference time: 0:00:01.0 "
        "(0.250000 s / iter per device, on 1 devices)\n"
        "[12/03 07:49:09] d2.engine.hooks INFO: Total training time: 0:00:04 (0:00:03 on "
        "hooks)\n")
    config = _config(run)
    environment = read_environment(run, config)
    assert dict(environment.rows) == {
        "Python": "3.99.1 (main) [GCC 12.2.0]", "PyTorch": "9.1.0 @/site-packages/torch",
        "detectron2": "0.6 @/site-packages/detectron2", "sys.platform": "linux",
        "GPU available": "No: torch.cuda.is_available() == False"}
    assert environment.precision.startswith("bfloat16: SOLVER.AMP.CPU_DTYPE auto")
    assert environment.device == config["MODEL"]["DEVICE"]
    timing = read_timing(run, load_run(run), config)
    assert timing.inference_seconds_per_image == 0.25  # the last evaluation's
    assert timing.training_time == "0:00:04"
    assert timing.seconds_per_image == pytest.approx(
        timing.seconds_per_iter / config["SOLVER"]["IMS_PER_BATCH"])
    write_report(run)
    text = (run / "report.html").read_text()
    assert "3.99.1" in text and "0.25 s/image" in text and "bfloat16" in text
    (run / "log.txt").unlink()  # nothing logged: said so, the page still renders
    environment = read_environment(run, config)
    assert environment.rows == [] and "log.txt" in environment.notes[0]
    assert read_timing(run, load_run(run), config).inference_seconds_per_image is None
    assert write_report(run).is_file()


def _card_pictures(path):
    import cv2

    text = path.read_text(encoding="utf-8")
    for src in re.findall(r'<img src="data:image/png;base64,([^"]+)"[^>]*data-image-id', text):
        data = np.frombuffer(base64.b64decode(src), np.uint8)
        yield cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


def test_best_and_worst_pictures_are_readable_with_a_legend(report, trained_run):
    from seg_project.visualization.text import STRIP_BACKGROUND

    path, _, _ = report
    pictures = list(_card_pictures(path))
    assert len(pictures) == 2
    val_sizes = [tuple(read_image(p).shape[:2]) for p in sorted(
        (Path(_config(trained_run)["DATASETS"]["CELLS"]["ROOT"]) / "train").glob(
            "*/image.tif"))]
    for picture in pictures:
        height, width = picture.shape[:2]
        # Each half drawn with a PANEL_SIZE long side, whatever the image's size...
        assert width == 2 * PANEL_SIZE or height > PANEL_SIZE
        # ... and a legend strip under it (its background fills the bottom rows).
        bottom = picture[-3:].reshape(-1, 3)
        assert (bottom == STRIP_BACKGROUND).all(axis=-1).mean() > 0.8
    assert max(max(s) for s in val_sizes) < PANEL_SIZE  # the fixture's images are small


def test_default_page_is_replaced_and_a_run_without_evaluation_still_renders(
        trained_run, tmp_path, capsys):
    run = _copy_run(trained_run, tmp_path / "run", inference=False)
    records = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
    (run / "metrics.json").write_text("".join(  # the training lines only, as without eval
        json.dumps({k: v for k, v in r.items() if not k.startswith(("segm/", "bbox/",
                                                                     "pathology/"))}) + "\n"
        for r in records))
    (run / "report.html").write_text("old")
    tool = load_tool("report")
    assert tool.main([str(run)]) == 0  # the default page is the tool's own: replaced
    page = parse(run / "report.html")
    assert set(SECTION_IDS) <= set(page.ids)
    assert set(page.missing) == {"final-metrics", "confusion", "best-worst"}
    assert "no evaluation" in page.missing["final-metrics"]
    assert "inference" in page.missing["confusion"]
    assert "missing-sections" in page.ids
    assert page.keyed_cells("final-metrics") == {}
    assert any(image["section"] == "curves" for image in page.images)

    other = tmp_path / "mine.html"
    other.write_text("keep me")
    capsys.readouterr()
    assert tool.main([str(run), "--out", str(other)]) == 2  # refused before any work
    assert str(other) in capsys.readouterr().err
    assert other.read_text() == "keep me"


def test_missing_metrics_json_names_the_file(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy2(trained_run / "config.yaml", run / "config.yaml")
    with pytest.raises(DatasetError) as info:
        write_report(run)
    assert Path(info.value.path) == run / "metrics.json"
    assert load_tool("report").main([str(run)]) == 2
    assert f"error: {run / 'metrics.json'}: file not found" in capsys.readouterr().err
    assert not (run / "report.html").exists()


def test_last_evaluation_takes_the_last_evaluated_iteration(tmp_path):
    records = [
        {"iteration": 9, "total_loss": 1.0, "epoch": 1.0, "segm/AP50": 10.0,
         "pathology/PQ": 0.1},
        {"iteration": 19, "total_loss": 0.8, "segm/AP50": 20.0, "pathology/PQ": 0.2},
        {"iteration": 19, "pathology/PQ": 0.25},  # a resumed run rewrote iteration 19
        {"iteration": 24, "total_loss": 0.7},
    ]
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps(r) for r in records) + '\n{"iteration": 29, "segm')
    last = last_evaluation(path)
    assert last == {"iteration": 19, "segm/AP50": 20.0, "pathology/PQ": 0.25}
    path.write_text(json.dumps({"iteration": 3, "total_loss": 1.0}) + "\n")
    assert last_evaluation(path) is None


def test_format_metric():
    assert format_metric("segm/AP50", 12.3456) == "12.35"
    assert format_metric("pathology/PQ", 0.123456) == "0.1235"
    assert format_metric("pathology/num_images", 2.0) == "2"
    assert format_metric("pathology/PQ-class1", math.nan) == "\u2014"
    assert format_metric("segm/AP", None) == "n/a"


def test_best_and_worst_never_show_an_image_twice():
    images = [{"image_id": i, "pq": pq, "aji": 0.5} for i, pq in
              enumerate([0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.8])]
    best, worst = pick_best_worst(images, 3)
    assert [m["image_id"] for m in best] == [1, 6, 4]
    assert [m["image_id"] for m in worst] == [2, 5, 0]
    best, worst = pick_best_worst(images[:2], 3)
    assert [m["image_id"] for m in best] == [1] and [m["image_id"] for m in worst] == [0]
    best, worst = pick_best_worst(images[:1], 3)
    assert len(best) == 1 and worst == []


# ------------------------------------------------------------------- confusion matrix


def _rle(box, size=32):
    """The RLE of a filled box (x0, y0, x1, y1) in a size x size image."""
    mask = np.zeros((size, size), dtype=np.uint8, order="F")
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    rle = mask_util.encode(mask)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _coco(gt, images=(1,), num_classes=3):
    """A COCO ground truth of (image_id, category_id, box) instances."""
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "height": 32, "width": 32} for i in images],
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, num_classes + 1)],
        "annotations": [{"id": n + 1, "image_id": i, "category_id": c, "segmentation": _rle(b),
                         "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                        for n, (i, c, b) in enumerate(gt)],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints
        coco.createIndex()
    return coco


def _pred(image_id, category_id, box, score):
    return {"image_id": image_id, "category_id": category_id, "score": score,
            "segmentation": _rle(box), "bbox": [box[0], box[1], box[2] - box[0],
                                                box[3] - box[1]]}


NAMES = ["c1", "c2", "c3"]
A, B, C, D = (0, 0, 8, 8), (10, 0, 18, 8), (20, 0, 28, 8), (0, 20, 8, 28)


def test_confusion_of_a_perfect_prediction_is_diagonal():
    coco = _coco([(1, 1, A), (1, 2, B), (1, 3, C)])
    results = [_pred(1, 1, A, 0.9), _pred(1, 2, B, 0.8), _pred(1, 3, C, 0.7)]
    matrix = confusion_matrix(coco, results, NAMES, 0.5)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[[0, 1, 2], [0, 1, 2]] = 1
    assert (matrix == expected).all()
    assert "missed" in format_confusion(matrix, NAMES)


def test_confusion_counts_a_swap_a_miss_and_spurious_predictions():
    coco = _coco([(1, 1, A), (1, 2, B), (1, 1, C)])
    results = [
        _pred(1, 1, A, 0.9),  # right
        _pred(1, 1, B, 0.8),  # ground truth c2 called c1: a swap
        _pred(1, 1, C, 0.1),  # on C but below the threshold: C is missed
        _pred(1, 3, D, 0.7),  # nothing there: spurious c3
        _pred(1, 2, A, 0.6),  # A is taken by the higher score: spurious c2
    ]
    matrix = confusion_matrix(coco, results, NAMES, 0.5)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = 1  # c1 -> c1
    expected[1, 0] = 1  # c2 -> c1
    expected[0, 3] = 1  # c1 missed (C)
    expected[3, 2] = 1  # spurious c3 (D)
    expected[3, 1] = 1  # spurious c2 (second prediction on A)
    assert (matrix == expected).all()
    assert matrix[:3].sum() == 3  # every ground truth once
    assert matrix[:, :3].sum() == 4  # every prediction at or above the threshold once
    # at threshold 0 the weak prediction on C finds it
    assert confusion_matrix(coco, results, NAMES, 0.0)[0, 0] == 2


def test_confusion_iou_threshold_and_images_without_instances():
    coco = _coco([(1, 1, A), (2, 2, B)], images=(1, 2, 3))
    shifted = (0, 4, 8, 12)  # IoU with A: 32 / 96 = 1/3
    results = [_pred(1, 1, shifted, 0.9), _pred(3, 2, C, 0.9)]
    matrix = confusion_matrix(coco, results, NAMES, 0.5)
    assert matrix[0, 3] == 1 and matrix[1, 3] == 1  # A and B missed
    assert matrix[3, 0] == 1 and matrix[3, 1] == 1  # both predictions spurious
    assert confusion_matrix(coco, results, NAMES, 0.5, iou=0.3)[0, 0] == 1
    with pytest.raises(ValueError, match="image_id 7"):
        confusion_matrix(coco, [_pred(7, 1, A, 0.9)], NAMES, 0.5)


def test_match_greedy_goes_by_score():
    ious = np.array([[0.6, 0.9], [0.95, 0.0]])
    assert match_greedy(ious, [0.5, 0.9]) == [(1, 0), (0, 1)]
    assert match_greedy(ious, [0.9, 0.5]) == [(0, 1), (1, 0)]
    assert match_greedy(np.array([[0.7], [0.8]]), [0.9, 0.5]) == [(0, 0)]
    assert match_greedy(np.zeros((0, 3)), []) == []
