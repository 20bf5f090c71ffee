"""Shared fixtures: a small synthetic dataset in the course layout, tiny training configs,
and one short training run that several tests reuse."""

import importlib.util
import logging
import os
from pathlib import Path

import pytest

import seg_project  # noqa: F401  (registers the datasets, quiets import warnings)
from seg_project.data.synthetic import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
QUICK_CONFIG = REPO / "configs" / "quick_schedules" / "mask_rcnn_R_18_FPN_cells_quick.yaml"


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module (tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def quiet_earlier_runs():
    """Take off the run loggers the console handlers of earlier in-process runs: Detectron2's
    ``setup_logger`` points them at that test's captured output, closed by now, and logging
    would print a traceback to this test's stderr for every line (a tool run from the shell
    has one run per process and never meets this)."""
    for name in ("detectron2", "fvcore", "seg_project"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep the dataset conversion cache of the test session out of the user's home."""
    os.environ["SEG_PROJECT_CACHE"] = str(tmp_path_factory.mktemp("seg_project_cache"))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """6 annotated images (64..96 px) and 3 test images, in the course formats."""
    root = tmp_path_factory.mktemp("synthetic") / "cells"
    make_synthetic_dataset(root, num_train=6, num_test=3, seed=0, min_size=64, max_size=96,
                           cells_per_image=(6, 12))
    return root


# A CroppedMasks / BitMasks target sample whose exact value is 0.5 (a tie) lies on the
# threshold: float32 rounding of its position (image vs crop coordinates) decides it.
# Detectron2's own soft values at such ties lie within 4e-5 of 0.5 on real data.
TIE = 1e-4


def quick_cfg(**opts):
    """The quick config with ``{"KEY.PATH": value}`` overrides (values as Python objects)."""
    from seg_project.config import load_config

    cfg = load_config(QUICK_CONFIG)
    for key, value in opts.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


def tiny_opts(root: Path, output_dir: Path, epochs: int = 2, **extra) -> list:
    """Overrides of the quick config for a CPU run of a few seconds per epoch:
    4 training images (2 iterations per epoch), 2 validation images, 64-96 px inputs."""
    opts = {
        "DATASETS.CELLS.ROOT": str(root),
        "DATASETS.CELLS.VAL_FRACTION": 0.34,
        "OUTPUT_DIR": str(output_dir),
        "SOLVER.EPOCHS": epochs,
        "SOLVER.WARMUP_ITERS": 0,
        "INPUT.MIN_SIZE_TRAIN": (64,),
        "INPUT.MAX_SIZE_TRAIN": 96,
        "INPUT.MIN_SIZE_TEST": 64,
        "INPUT.MAX_SIZE_TEST": 96,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN": 200,
        "MODEL.RPN.POST_NMS_TOPK_TEST": 200,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64,
        "TEST.DETECTIONS_PER_IMAGE": 100,
    }
    opts.update(extra)
    flat = []
    for key, value in opts.items():
        flat += [key, str(value)]
    return flat


def train_args(root: Path, output_dir: Path, *extra_args, epochs: int = 2, **opts) -> list:
    """Command-line arguments of tools/train_net.py for a tiny run."""
    return ["--config-file", str(QUICK_CONFIG), *extra_args, *tiny_opts(root, output_dir,
                                                                        epochs, **opts)]


def run_train_net(argv: list):
    """Run tools/train_net.py's setup + main in this process (single process)."""
    train_net = load_tool("train_net")
    args = train_net.build_parser().parse_args(argv)
    return train_net.main(args)


@pytest.fixture(scope="session")
def trained_run(synthetic_root, tmp_path_factory) -> Path:
    """A finished 2-epoch training run (2 iterations per epoch) on the synthetic data."""
    out = tmp_path_factory.mktemp("trained_run")
    run_train_net(train_args(synthetic_root, out))
    return out
