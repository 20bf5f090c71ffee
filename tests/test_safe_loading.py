"""No file a user hands us runs code when it is loaded (issue 19): weights and configs.

Weights: a Detectron2 model-zoo ``.pkl`` (numpy arrays) loads and fits the model; a pickle
whose ``__reduce__`` calls ``os.system`` is refused, naming the file and the global, on every
path that loads weights (``predict.py --weights``, ``--eval-only``, training from
``MODEL.WEIGHTS``, ``--resume``), and its marker file is never created; only
``SEG_PROJECT_TRUSTED_WEIGHTS`` lets a listed file through. Configs: a Python YAML tag is
refused by every tool that reads a config, ``_BASE_`` files and a run's ``config.yaml``
included, and never run.
"""

import datetime
import io
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import QUICK_CONFIG, load_tool, tiny_opts, train_args
from test_reliability import _default_registration, error_line, listing, train  # noqa: F401

from seg_project.checkpoint import TRUSTED_WEIGHTS_ENV, CellsCheckpointer, read_weights
from seg_project.checkpoint.safe_load import WeightsUnpickler
from seg_project.utils.errors import WeightsError

predict_tool = load_tool("predict")
visualize_tool = load_tool("visualize")
evaluate_tool = load_tool("evaluate")
report_tool = load_tool("report")
plot_curves_tool = load_tool("plot_curves")


class _Plant:
    """Pickles as a call of ``os.system`` that creates ``marker`` when it is unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _zoo_state(trained_run: Path) -> "OrderedDict[str, np.ndarray]":
    state = torch.load(trained_run / "model_final.pth", map_location="cpu",
                       weights_only=True)["model"]
    return OrderedDict((k, v.numpy()) for k, v in state.items())


@pytest.fixture(scope="module")
def zoo_pkl(trained_run, tmp_path_factory) -> Path:
    """The trained weights as a Detectron2 model-zoo file: a pickled dict of numpy arrays."""
    path = tmp_path_factory.mktemp("zoo") / "model_zoo.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": _zoo_state(trained_run), "__author__": "Detectron2 Model Zoo",
                     "matching_heuristics": True}, f, protocol=2)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "pwned"


def _malicious(folder: Path, marker: Path, suffix: str, trained_run: Path) -> Path:
    """Real weights with a planted ``os.system`` call, as ``.pkl`` (pickle) or ``.pth``
    (torch.save)."""
    path = folder / f"weights{suffix}"
    if suffix == ".pkl":
        data = {"model": _zoo_state(trained_run), "__author__": _Plant(marker)}
        path.write_bytes(pickle.dumps(data, protocol=2))
    else:
        state = torch.load(trained_run / "model_final.pth", map_location="cpu",
                           weights_only=True)["model"]
        torch.save({"model": state, "note": _Plant(marker)}, path)
    return path


# ------------------------------------------------------------------ weights


def test_a_model_zoo_pkl_loads_and_fits_the_model(zoo_pkl, trained_run):
    from detectron2.modeling import build_model

    from seg_project.config import load_config

    data = read_weights(str(zoo_pkl))
    assert data["__author__"] == "Detectron2 Model Zoo"
    assert all(isinstance(v, np.ndarray) for v in data["model"].values())
    model = build_model(load_config(QUICK_CONFIG))
    CellsCheckpointer(model).load_for_inference(str(zoo_pkl))
    trained = torch.load(trained_run / "model_final.pth", map_location="cpu",
                         weights_only=True)["model"]
    loaded = model.state_dict()
    assert set(trained) <= set(loaded)
    for key, value in trained.items():
        assert torch.equal(loaded[key], value), key


def test_the_unpickler_builds_numpy_1_and_2_arrays_and_plain_containers():
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float64(2.5),
            "o": OrderedDict(x=[1, (2, 3)]), "set": {1, 2}, "c": 1 + 2j, "b": b"\x00\x01"}
    for protocol in (2, 4):
        raw = pickle.dumps(data, protocol=protocol)
        names = [raw]
        if protocol == 2:  # numpy 1 wrote numpy.core; numpy 2 writes numpy._core
            names.append(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
            assert names[1] != raw
        for text in names:
            got = WeightsUnpickler(io.BytesIO(text), encoding="latin1").load()
            assert got.keys() == data.keys()
            assert np.array_equal(got["a"], data["a"]) and got["a"].dtype == np.float32
            assert got["s"] == 2.5 and got["o"] == data["o"] and got["set"] == {1, 2}
            assert got["c"] == 1 + 2j and got["b"] == b"\x00\x01"


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_a_planted_global_is_refused_naming_the_file_and_the_global(
        trained_run, tmp_path, marker, suffix):
    path = _malicious(tmp_path, marker, suffix, trained_run)
    with pytest.raises(WeightsError) as raised:
        read_weights(str(path))
    text = str(raised.value)
    assert text.startswith(f"{path}: refuses to load posix.system ("), text
    assert f"{TRUSTED_WEIGHTS_ENV}={path} (unsafe" in text and "\n" not in text
    assert not marker.exists()


def test_only_a_listed_file_is_trusted(trained_run, tmp_path, monkeypatch):
    legacy = tmp_path / "legacy.pkl"
    legacy.write_bytes(pickle.dumps({"model": _zoo_state(trained_run), "__author__": "me",
                                     "saved": datetime.date(2020, 1, 2)}, protocol=2))
    other = tmp_path / "other.pkl"
    other.write_bytes(legacy.read_bytes())
    with pytest.raises(WeightsError, match=r"refuses to load datetime\.date"):
        read_weights(str(legacy))
    monkeypatch.setenv(TRUSTED_WEIGHTS_ENV, f"{tmp_path / 'x.pkl'}{os.pathsep}{legacy}")
    assert read_weights(str(legacy))["saved"] == datetime.date(2020, 1, 2)
    with pytest.raises(WeightsError, match=r"refuses to load datetime\.date"):
        read_weights(str(other))  # the same bytes, not listed


def _predict_argv(synthetic_root, weights, out):
    return ["--config-file", str(QUICK_CONFIG), "--weights", str(weights), "--images",
            str(synthetic_root / "test_release"), "--out", str(out),
            *tiny_opts(synthetic_root, out)]


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
@pytest.mark.parametrize("path_", ["predict", "visualize", "eval-only", "train", "resume"])
def test_a_malicious_weights_file_is_refused_on_every_path(
        synthetic_root, trained_run, tmp_path, marker, capsys, suffix, path_):
    out = tmp_path / "out"
    if path_ == "resume":  # the run's own last_checkpoint names the planted file
        out.mkdir()
        weights = _malicious(out, marker, suffix, trained_run)
        (out / "last_checkpoint").write_text(weights.name)
    else:
        weights = _malicious(tmp_path, marker, suffix, trained_run)
    before = listing(out)
    if path_ == "predict":
        code = predict_tool.main(_predict_argv(synthetic_root, weights, out))
    elif path_ == "visualize":
        code = visualize_tool.main(["--config-file", str(QUICK_CONFIG), "--weights",
                                    str(weights), "--images",
                                    str(synthetic_root / "test_release"), "--out", str(out),
                                    "DATASETS.CELLS.ROOT", str(synthetic_root)])
    else:
        extra = {"eval-only": ["--eval-only"], "resume": ["--resume"], "train": []}[path_]
        opts = {} if path_ == "resume" else {"MODEL.WEIGHTS": weights}
        code = train_net_command(train_args(synthetic_root, out, *extra, **opts))
    assert code == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {weights}: refuses to load posix.system ("), line
    assert not marker.exists()
    assert listing(out) == before


def train_net_command(argv):
    return load_tool("train_net").command([str(a) for a in argv])


@pytest.mark.parametrize("name", ["absolute", "climbing"])
def test_resume_refuses_a_last_checkpoint_outside_the_run_folder(
        synthetic_root, trained_run, tmp_path, marker, capsys, name):
    weights = _malicious(tmp_path, marker, ".pkl", trained_run)
    out = tmp_path / "run"
    out.mkdir()
    tag = out / "last_checkpoint"
    tag.write_text(str(weights) if name == "absolute" else f"../{weights.name}")
    before = listing(out)
    code, line, _ = train(capsys, train_args(synthetic_root, out, "--resume"))
    assert code == 2
    assert line.startswith(f"error: {tag}: names "), line
    assert "which is not a file of this run folder" in line
    assert not marker.exists()
    assert listing(out) == before


def test_training_from_weights_of_another_model_writes_nothing(
        synthetic_root, trained_run, tmp_path, capsys):
    """Checked in plan_run, against the model built on the meta device: before, such weights
    replaced config.yaml, appended to log.txt and added events before failing."""
    weights = tmp_path / "other_model.pth"
    torch.save({"model": {"encoder.layer1.weight": torch.zeros(3, 3)}}, weights)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("# the user's earlier run\n")
    (run / "log.txt").write_text("earlier log\n")
    before = listing(run)
    code, line, _ = train(capsys, train_args(synthetic_root, run, **{"MODEL.WEIGHTS": weights}))
    assert code == 2
    assert line == (f"error: {weights}: holds none of this model's weights (it has 1 tensors, "
                    "e.g. encoder.layer1.weight): weights of another kind of model")
    assert listing(run) == before


# ------------------------------------------------------------------ configs

EVIL_YAML = 'MODEL:\n  DEVICE: !!python/object/apply:os.system ["touch {marker}"]\n'
REFUSED = ("holds the YAML tag !!python/object/apply:os.system (line 2), which is refused: "
           "config files are read as plain data (a Python tag could run code)")


def _evil_config(folder: Path, marker: Path, via_base: bool) -> "tuple[Path, Path]":
    """(the config to pass, the file holding the tag)."""
    evil = folder / "evil.yaml"
    evil.write_text(EVIL_YAML.format(marker=marker))
    if not via_base:
        return evil, evil
    top = folder / "top.yaml"
    top.write_text('_BASE_: "evil.yaml"\nSOLVER:\n  BASE_LR: 0.1\n')
    return top, evil


@pytest.mark.parametrize("via_base", [False, True], ids=["file", "base"])
@pytest.mark.parametrize("tool", ["train_net", "predict", "evaluate", "visualize"])
def test_a_python_yaml_tag_is_refused_by_every_tool(
        synthetic_root, trained_run, tmp_path, marker, capsys, tool, via_base):
    config, holder = _evil_config(tmp_path, marker, via_base)
    out = tmp_path / "out"
    weights = trained_run / "model_final.pth"
    if tool == "train_net":
        code = train_net_command(["--config-file", config, *tiny_opts(synthetic_root, out)])
    elif tool == "predict":
        argv = _predict_argv(synthetic_root, weights, out)
        argv[1] = str(config)
        code = predict_tool.main(argv)
    elif tool == "evaluate":
        results = trained_run / "inference" / "cells_val" / "coco_instances_results.json"
        code = evaluate_tool.main([str(results), "--dataset", "cells_val", "--config-file",
                                   str(config), "DATASETS.CELLS.ROOT", str(synthetic_root)])
    else:
        code = visualize_tool.main(["--config-file", str(config), "--weights", str(weights),
                                    "--images", str(synthetic_root / "test_release"), "--out",
                                    str(out), "DATASETS.CELLS.ROOT", str(synthetic_root)])
    assert code == 2
    line = error_line(capsys.readouterr().err)
    expected = f"error: {holder}: {REFUSED}"
    if via_base:
        expected += f" (it is a _BASE_ of {config})"
    assert line == expected
    assert not marker.exists()
    assert not out.exists()


def test_a_runs_config_yaml_with_a_python_tag_is_refused_by_report_and_plot_curves(
        trained_run, tmp_path, marker, capsys):
    """tools/report.py and plot_curves.py read a run's config.yaml as plain data: the tag is
    one error line naming the file, never run, and nothing is written."""
    from seg_project.config import read_config_dict
    from seg_project.utils.errors import DatasetError

    run = tmp_path / "run"
    run.mkdir()
    for name in ("metrics.json", "log.txt"):
        (run / name).write_bytes((trained_run / name).read_bytes())
    config = run / "config.yaml"
    config.write_text(EVIL_YAML.format(marker=marker))
    with pytest.raises(DatasetError) as raised:
        read_config_dict(config)
    assert str(raised.value) == f"{config}: {REFUSED}"
    before = listing(run)
    curves = tmp_path / "curves"
    for tool, argv in ((report_tool, [str(run)]),
                       (plot_curves_tool, [str(run), "--out", str(curves)])):
        assert tool.main(argv) == 2
        assert error_line(capsys.readouterr().err) == f"error: {config}: {REFUSED}"
    assert listing(run) == before and not curves.exists()
    assert not marker.exists()
