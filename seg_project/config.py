"""seg_project's config: its keys, the one loader of config files, the checks of their values
and their resolution.

- :func:`add_seg_project_config`: the project's keys and defaults (one comment per key);
- :func:`load_config`: a config file plus ``KEY VALUE`` overrides, every error naming the file
  or key (with a suggestion for a misspelled key); :func:`read_config_dict` reads a run's
  ``config.yaml`` as plain data, for tools that only look at it. These two are the only
  readers of YAML in the project;
- :func:`check_config`: values that would otherwise fail deep inside a run; each check is
  written once (:func:`check_class_names`, :func:`check_step_fractions`, ...);
- :func:`register_datasets_from_config`: the cells_* datasets for ``DATASETS.CELLS``
  (:func:`register_run_datasets`: as a run folder saw them); :func:`resolve_epochs`:
  ``SOLVER.EPOCHS`` turned into iterations; :func:`update_run_config`: keys set in a run's
  ``config.yaml`` after the fact (the operating point).

Detectron2 is imported when a config is built, not with this module, so that tools which only
read a run's ``config.yaml`` stay light.
"""

import difflib
import math
import os
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import yaml

from .utils.cli import config_error
from .utils.errors import ConfigError, DatasetError
from .utils.paths import check_output_dir, require_file

__all__ = [
    "BEST_METRIC_MODES",
    "CPU_DTYPES",
    "add_seg_project_config",
    "check_best_metric_mode",
    "check_class_names",
    "check_config",
    "check_cpu_dtype",
    "check_instance_outputs",
    "check_step_fractions",
    "get_seg_project_cfg",
    "load_config",
    "read_config_dict",
    "register_datasets_from_config",
    "register_run_datasets",
    "resolve_epochs",
    "update_run_config",
]

# The values of SOLVER.AMP.CPU_DTYPE (see its comment in add_seg_project_config).
CPU_DTYPES = ("auto", "bfloat16", "float32")
# The values of TEST.BEST_METRIC_MODE.
BEST_METRIC_MODES = ("max", "min")


def add_seg_project_config(cfg):
    """Add seg_project's keys (with their defaults) to a Detectron2 config, in place."""
    from detectron2.config import CfgNode as CN

    from .data.instance_map import DEFAULT_RULE

    _C = cfg

    _C.DATASETS.CELLS = CN()
    # Dataset root in the course layout (train/, test_release/, the mapping file);
    # "" means $DETECTRON2_DATASETS/cells (default datasets/cells).
    _C.DATASETS.CELLS.ROOT = ""
    # Names of the classes of classN.tif, N = 1..K (K must equal MODEL.ROI_HEADS.NUM_CLASSES).
    _C.DATASETS.CELLS.CLASS_NAMES = ["class1", "class2", "class3", "class4"]
    # Share of the train/ folders held out as cells_val.
    _C.DATASETS.CELLS.VAL_FRACTION = 0.2
    # Seed of the train/val split (same folders, fraction and seed give the same split).
    _C.DATASETS.CELLS.SPLIT_SEED = 0
    # A text file of validation folder names, or an earlier run's cells_split.json; overrides
    # VAL_FRACTION and SPLIT_SEED when set.
    _C.DATASETS.CELLS.VAL_LIST = ""
    # Where converted dataset records are cached; "" means $SEG_PROJECT_CACHE or
    # ~/.cache/seg_project, "off" disables the cache.
    _C.DATASETS.CELLS.CACHE_DIR = ""

    # Probability of a vertical flip in training (cells have no up and down); 0 disables it.
    _C.INPUT.VFLIP_PROB = 0.5
    # Drop ground-truth instances with fewer pixels than this in training (the reader keeps
    # every instance; 2-3 pixel specks of some datasets are unlearnable noise).
    _C.INPUT.MIN_INSTANCE_AREA = 0
    # 16-bit/float images: stored values [low, high] map linearly to 0..255 in every non-uint8
    # image of the dataset; () = computed from the training images at setup (stays () when
    # no image needs it). Stored in config.yaml and intensity_rule.json beside the weights.
    _C.INPUT.INTENSITY_RANGE = ()

    # Train for this many epochs; 0 keeps MAX_ITER, STEPS, EVAL_PERIOD and CHECKPOINT_PERIOD
    # as given (in iterations).
    _C.SOLVER.EPOCHS = 0
    # With EPOCHS: the LR is multiplied by GAMMA at these fractions of training
    # (empty: constant LR).
    _C.SOLVER.STEP_FRACTIONS = (0.8, 0.9)
    # With EPOCHS: write a checkpoint every this many epochs.
    _C.SOLVER.CHECKPOINT_EVERY_EPOCHS = 1
    # Periodic checkpoints kept on disk (model_best.pth and model_final.pth are always kept).
    _C.SOLVER.CHECKPOINTS_TO_KEEP = 3
    # Resolved, not set by users: iterations per epoch, ceil(train images / IMS_PER_BATCH).
    _C.SOLVER.ITERS_PER_EPOCH = 0
    # What SOLVER.AMP.ENABLED means on a CPU (Detectron2's AMP is CUDA-only): "auto" is
    # bfloat16 autocast where the CPU has native bfloat16 (AVX512_BF16, AMX, ARM BF16) and
    # float32 elsewhere; "bfloat16" forces autocast; "float32" trains in full precision.
    # On CUDA, AMP always means float16 with a grad scaler.
    _C.SOLVER.AMP.CPU_DTYPE = "auto"

    # With SOLVER.EPOCHS: evaluate every this many epochs (and after the last iteration).
    _C.TEST.EVAL_EVERY_EPOCHS = 1
    # The evaluation metric that picks model_best.pth (segm/AP50 is the grader's exact figure,
    # at most 100 detections per image and class; the high-cap one is segm/AP50@<cap>).
    _C.TEST.BEST_METRIC = "segm/AP50"
    # "max" if a larger BEST_METRIC is better, "min" otherwise.
    _C.TEST.BEST_METRIC_MODE = "max"
    # Stop after this many evaluations in a row without a better BEST_METRIC (0: never).
    _C.TEST.EARLY_STOP_PATIENCE = 0
    # Use faster-coco-eval's COCOeval_faster (same stats as pycocotools, 2-3x faster).
    _C.TEST.FAST_COCO_EVAL = True
    _C.TEST.PATHOLOGY = CN()
    # Compute PQ, SQ, DQ, AJI, AJI+, Dice, F1 and mPQ with every evaluation (pathology/...).
    _C.TEST.PATHOLOGY.ENABLED = True
    # Detections scoring below this are no cells: left out of the pathology metrics, the
    # label TIFF / GeoJSON exports, the pictures and the report; -1: the run's operating
    # point (TEST.OPERATING_POINT, or operating_point.json beside the weights), else 0.5.
    _C.TEST.PATHOLOGY.SCORE_THRESHOLD = -1.0
    _C.TEST.INSTANCE_MAP = CN()
    # Cells are painted in descending score order; one left with less than this fraction of
    # its own pixels by the higher-scored ones is dropped (0: only fully covered ones are).
    _C.TEST.INSTANCE_MAP.MIN_VISIBLE_FRACTION = DEFAULT_RULE.min_visible_fraction
    # A cell whose mask IoU with a higher-scored kept one exceeds this is dropped (1.0: off).
    _C.TEST.INSTANCE_MAP.MAX_MASK_IOU = DEFAULT_RULE.max_mask_iou
    _C.TEST.OPERATING_POINT = CN()
    # At the end of training, choose the score threshold of highest PQ on DATASETS.TEST[0]
    # (operating_point.json beside the weights; tools/choose_operating_point.py does it later).
    _C.TEST.OPERATING_POINT.ENABLED = True
    # The score thresholds tried.
    _C.TEST.OPERATING_POINT.GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
    # Written by the search into the run's config.yaml, not set by users: the chosen score
    # threshold (-1: none chosen).
    _C.TEST.OPERATING_POINT.SCORE_THRESHOLD = -1.0
    # Written by the search: the dataset the threshold was chosen on.
    _C.TEST.OPERATING_POINT.DATASET = ""
    # The mask head's probability at which a pixel is inside a predicted mask.
    _C.TEST.MASK_THRESHOLD = 0.5
    # Test-time augmentation also flips top-bottom (TEST.AUG.FLIP is the left-right flip).
    _C.TEST.AUG.VFLIP = True

    # How images are resized: "short_side" (Detectron2's INPUT.MIN_SIZE_*/MAX_SIZE_*) or
    # "scale" (multiplied by INPUT.SCALE_*: cells keep their size in pixels whatever the image's).
    _C.INPUT.RESIZE_MODE = "short_side"
    # With RESIZE_MODE "scale": training factors, one of them ("choice") or a range of two
    # ("range"), as INPUT.MIN_SIZE_TRAIN_SAMPLING says. 1.0 is the native pixel scale.
    _C.INPUT.SCALE_TRAIN = (1.0,)
    # With RESIZE_MODE "scale": the factor at inference.
    _C.INPUT.SCALE_TEST = 1.0
    # With RESIZE_MODE "scale": test-time augmentation views at SCALE_TEST times these factors
    # (TEST.AUG.MIN_SIZES serves RESIZE_MODE "short_side").
    _C.TEST.AUG.SCALES = (1.0,)
    _C.TEST.TILE = CN()
    # Images larger than this (in model pixels, after the resize) in height or width are
    # predicted in overlapping SIZE x SIZE tiles and merged (seg_project/inference/tiling.py);
    # 0 predicts every image whole.
    _C.TEST.TILE.SIZE = 0
    # Pixels shared by neighbouring tiles: at least the largest cell's diameter, so that every
    # cell lies whole in the tile that keeps it.
    _C.TEST.TILE.OVERLAP = 64
    # Tiles per forward pass.
    _C.TEST.TILE.BATCH_SIZE = 4

    # -- training augmentations beyond resize and flips (all off by default) --
    # Detectron2's INPUT.CROP.ENABLED/TYPE/SIZE crop the training images (cut instances keep
    # their visible part and its tight box). With AFTER_RESIZE the crop follows the resize
    # (a fixed output size for "absolute"); False crops first, as Detectron2's DatasetMapper.
    _C.INPUT.CROP.AFTER_RESIZE = True
    _C.INPUT.ROT90 = CN()
    # One of the 8 orientations of a square (quarter turns, transposes) per training image.
    _C.INPUT.ROT90.ENABLED = False
    _C.INPUT.STAIN_JITTER = CN()
    # H&E stain jitter in skimage's HED colour space (image only).
    _C.INPUT.STAIN_JITTER.ENABLED = False
    # Each stain density is multiplied by U(1 - SIGMA, 1 + SIGMA).
    _C.INPUT.STAIN_JITTER.SIGMA = 0.05
    # Then U(-BIAS, BIAS) is added to each stain density.
    _C.INPUT.STAIN_JITTER.BIAS = 0.02
    _C.INPUT.COPY_PASTE = CN()
    # Copy-paste (Ghiasi et al. 2021): instances of another training image pasted at random
    # places on top of a training image's own (seg_project/data/copy_paste.py).
    _C.INPUT.COPY_PASTE.ENABLED = False
    # Share of training images that receive pasted instances.
    _C.INPUT.COPY_PASTE.PROB = 0.5
    # At most this many instances pasted into an image (drawn uniformly from 1..MAX_INSTANCES).
    _C.INPUT.COPY_PASTE.MAX_INSTANCES = 20
    _C.INPUT.COLOR_JITTER = CN()
    # Brightness, contrast and saturation jitter (image only).
    _C.INPUT.COLOR_JITTER.ENABLED = False
    # Brightness factor drawn from U(1 - BRIGHTNESS, 1 + BRIGHTNESS); 0 disables it.
    _C.INPUT.COLOR_JITTER.BRIGHTNESS = 0.1
    # Contrast factor drawn from U(1 - CONTRAST, 1 + CONTRAST); 0 disables it.
    _C.INPUT.COLOR_JITTER.CONTRAST = 0.1
    # Saturation factor drawn from U(1 - SATURATION, 1 + SATURATION); 0 disables it.
    _C.INPUT.COLOR_JITTER.SATURATION = 0.1


def get_seg_project_cfg():
    """A Detectron2 default config with seg_project's keys added."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_seg_project_config(cfg)
    return cfg


def _all_keys(cfg, prefix: str = "") -> List[str]:
    keys = []
    for key, value in cfg.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, dict):
            keys += _all_keys(value, f"{full}.")
    return keys


def _with_suggestion(error: ConfigError, cfg) -> ConfigError:
    if error.problem != "no such config key":
        return error
    close = difflib.get_close_matches(error.path, _all_keys(cfg), n=1, cutoff=0.75)
    if close:
        return ConfigError(error.path, f"no such config key (did you mean {close[0]}?)")
    return error


_YAML_TAG_PREFIX = "tag:yaml.org,2002:"


def _yaml_problem(error: yaml.YAMLError) -> Tuple[str, str]:
    """The file a YAML error is in ("" if unknown) and the problem, in one line.

    A tag that plain YAML does not know (``!!python/object/apply:os.system``) is named as such:
    config files are read with ``yaml.safe_load`` only, since building Python objects from a
    file can run code.
    """
    mark = getattr(error, "problem_mark", None)
    where = mark.name if mark is not None and os.path.isfile(str(mark.name)) else ""
    line = f" (line {mark.line + 1})" if mark is not None else ""
    problem = str(getattr(error, "problem", "") or error).strip().splitlines()[0]
    tag = re.match(r"could not determine a constructor for the tag '(.+)'$", problem)
    if isinstance(error, yaml.constructor.ConstructorError) and tag:
        name = tag.group(1)
        name = "!!" + name[len(_YAML_TAG_PREFIX):] if name.startswith(_YAML_TAG_PREFIX) else name
        return where, (f"holds the YAML tag {name}{line}, which is refused: config files are "
                       "read as plain data (a Python tag could run code)")
    return where, f"is not a readable YAML file: {problem}{line}"


def load_config(config_file=None, opts: Sequence[str] = ()):
    """A seg_project config from a YAML file and ``KEY VALUE`` overrides (not yet frozen).

    Every config file the project reads goes through here. YAML is read as plain data
    (``yaml.safe_load``, ``_BASE_`` files included): a Python tag is refused, never run.

    Args:
        config_file: the YAML config; None: the defaults of :func:`get_seg_project_cfg`.
        opts: ``KEY VALUE`` overrides.

    Raises:
        ConfigError: a missing or unreadable config file (naming it, or the ``_BASE_`` file
            at fault), a Python tag, or a key that does not exist or a value of the wrong
            type (naming the key).
    """
    cfg = get_seg_project_cfg()
    if config_file is not None:
        config_file = str(config_file)
        if not os.path.isfile(config_file):
            raise ConfigError(config_file, "config file not found")
        try:
            cfg.merge_from_file(config_file, allow_unsafe=False)
        except yaml.YAMLError as e:  # the file itself or one of its _BASE_ files
            where, problem = _yaml_problem(e)
            if where and os.path.abspath(where) != os.path.abspath(config_file):
                problem += f" (it is a _BASE_ of {config_file})"
            raise ConfigError(where or config_file, problem) from None
        except Exception as e:  # noqa: BLE001 - yacs and IO errors all mean a bad file
            error = config_error(e)
            if error is not None:
                raise ConfigError(config_file, str(_with_suggestion(error, cfg))) from None
            first_line = str(e).strip().splitlines()[0] if str(e) else ""
            raise ConfigError(config_file, f"cannot read this config: {type(e).__name__}: "
                                           f"{first_line}") from None
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as e:
        error = config_error(e)
        if error is None:
            raise
        raise _with_suggestion(error, cfg) from None
    return cfg


def read_config_dict(path) -> Dict:
    """A config file as plain data (a dict; no defaults added, no ``_BASE_`` followed), for
    tools that only look at a run's ``config.yaml``; Detectron2 is not imported.

    Raises:
        DatasetError: a missing or empty file, one that is not YAML (or holds a Python tag,
            which is never run), or whose top level is not a mapping.
    """
    path = require_file(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DatasetError(path, _yaml_problem(e)[1]) from None
    except UnicodeDecodeError as e:
        raise DatasetError(path, f"is not a readable YAML file ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DatasetError(path, "is not a Detectron2 config (its top level is not a mapping)")
    return data


def check_class_names(cfg) -> None:
    """``DATASETS.CELLS.CLASS_NAMES`` has ``MODEL.ROI_HEADS.NUM_CLASSES`` names.

    Raises:
        ConfigError: naming ``DATASETS.CELLS.CLASS_NAMES``.
    """
    names, k = list(cfg.DATASETS.CELLS.CLASS_NAMES), cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if len(names) != k:
        raise ConfigError("DATASETS.CELLS.CLASS_NAMES", f"has {len(names)} names but "
                                                        f"MODEL.ROI_HEADS.NUM_CLASSES is {k}")


def check_step_fractions(cfg) -> None:
    """With ``SOLVER.EPOCHS``, every ``SOLVER.STEP_FRACTIONS`` lies in (0, 1).

    Raises:
        ConfigError: naming ``SOLVER.STEP_FRACTIONS``.
    """
    if cfg.SOLVER.EPOCHS <= 0:
        return
    for fraction in cfg.SOLVER.STEP_FRACTIONS:
        if not 0 < fraction < 1:
            raise ConfigError("SOLVER.STEP_FRACTIONS", f"must lie in (0, 1), got {fraction}")


def check_cpu_dtype(value: str) -> None:
    """``value`` is one of :data:`CPU_DTYPES`.

    Raises:
        ConfigError: naming ``SOLVER.AMP.CPU_DTYPE``.
    """
    if value not in CPU_DTYPES:
        raise ConfigError("SOLVER.AMP.CPU_DTYPE", f"must be one of {', '.join(CPU_DTYPES)}, "
                                                  f"got {value!r}")


def check_best_metric_mode(value: str) -> None:
    """``value`` is one of :data:`BEST_METRIC_MODES`.

    Raises:
        ConfigError: naming ``TEST.BEST_METRIC_MODE``.
    """
    if value not in BEST_METRIC_MODES:
        raise ConfigError("TEST.BEST_METRIC_MODE", f"must be max or min, got {value!r}")


def check_instance_outputs(cfg) -> None:
    """``TEST.PATHOLOGY.SCORE_THRESHOLD`` is -1 or in [0, 1], and ``TEST.INSTANCE_MAP``'s
    overlap rule is valid (see :class:`seg_project.data.instance_map.OverlapRule`).

    Raises:
        ConfigError: naming the key.
    """
    from .data.instance_map import OverlapRule

    threshold = cfg.TEST.PATHOLOGY.SCORE_THRESHOLD
    if threshold != -1 and not 0 <= threshold <= 1:
        raise ConfigError("TEST.PATHOLOGY.SCORE_THRESHOLD", f"must be -1 (the operating point) "
                                                            f"or in [0, 1], got {threshold}")
    node = cfg.TEST.INSTANCE_MAP
    for key, value in (("MIN_VISIBLE_FRACTION", node.MIN_VISIBLE_FRACTION),
                       ("MAX_MASK_IOU", node.MAX_MASK_IOU)):
        try:
            OverlapRule(**{key.lower(): value})
        except ValueError as e:
            raise ConfigError(f"TEST.INSTANCE_MAP.{key}", str(e).split(" ", 1)[1]) from None


def check_config(cfg, eval_only: bool = False) -> None:
    """Check the values that would otherwise fail deep inside a run (or silently do the wrong
    thing): class names vs. classes, ``SOLVER.AMP.CPU_DTYPE``, ``TEST.BEST_METRIC_MODE``,
    ``SOLVER.STEP_FRACTIONS``, the cells' score threshold and overlap rule,
    ``SOLVER.IMS_PER_BATCH``, the datasets to train on
    (``eval_only``: to evaluate) and an ``OUTPUT_DIR`` that cannot be a folder.

    Raises:
        ConfigError: naming the key and the problem.
    """
    check_class_names(cfg)
    check_cpu_dtype(cfg.SOLVER.AMP.CPU_DTYPE)
    check_best_metric_mode(cfg.TEST.BEST_METRIC_MODE)
    check_step_fractions(cfg)
    check_instance_outputs(cfg)
    if cfg.SOLVER.IMS_PER_BATCH < 1:
        raise ConfigError("SOLVER.IMS_PER_BATCH", f"must be at least 1, got "
                                                  f"{cfg.SOLVER.IMS_PER_BATCH}")
    if not eval_only and not cfg.DATASETS.TRAIN:
        raise ConfigError("DATASETS.TRAIN", "is empty: name at least one dataset to train on")
    if eval_only and not cfg.DATASETS.TEST:
        raise ConfigError("DATASETS.TEST", "is empty: --eval-only needs a dataset to evaluate")
    try:
        check_output_dir(cfg.OUTPUT_DIR, "run folder")
    except DatasetError as e:
        raise ConfigError("OUTPUT_DIR", f"{e.path}: {e.problem}") from None


def register_datasets_from_config(cfg) -> None:
    """(Re-)register the predefined cells_* datasets for the root, classes and split of
    ``cfg.DATASETS.CELLS``.

    Raises:
        ConfigError: ``DATASETS.CELLS.CLASS_NAMES`` does not have
            ``MODEL.ROI_HEADS.NUM_CLASSES`` names.
    """
    from .data.catalog import register_cells_splits

    check_class_names(cfg)
    cells = cfg.DATASETS.CELLS
    cache = cells.CACHE_DIR
    register_cells_splits(
        cells.ROOT or None,
        class_names=list(cells.CLASS_NAMES),
        val_fraction=cells.VAL_FRACTION,
        seed=cells.SPLIT_SEED,
        val_list=cells.VAL_LIST or None,
        cache_dir=False if cache == "off" else (cache or None),
    )


def register_run_datasets(run_dir):
    """Register the datasets of a run folder as the run saw them: its ``config.yaml``, with
    its ``cells_split.json`` as ``DATASETS.CELLS.VAL_LIST`` when the config names none, so
    that ``cells_val`` holds the very images the run evaluated.

    Returns:
        the run's config (not frozen).

    Raises:
        ConfigError: a missing or unreadable ``config.yaml``, or bad class names.
    """
    from .utils.run_files import CONFIG_FILE, SPLIT_FILE

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / CONFIG_FILE)
    split_file = run_dir / SPLIT_FILE
    if not cfg.DATASETS.CELLS.VAL_LIST and split_file.is_file():
        cfg.DATASETS.CELLS.VAL_LIST = str(split_file)
    register_datasets_from_config(cfg)
    return cfg


def update_run_config(run_dir, values: Dict[str, object]) -> Path:
    """Set keys of a run's ``config.yaml`` (e.g. the operating point), rewriting it atomically
    as Detectron2 writes it.

    Args:
        run_dir: the run folder.
        values: dotted key -> value (keys that exist in the config).

    Returns:
        Path: the ``config.yaml`` written.

    Raises:
        ConfigError: a missing or unreadable ``config.yaml``, or an unknown key.
    """
    from .utils.atomic_files import write_text
    from .utils.run_files import CONFIG_FILE

    path = Path(run_dir) / CONFIG_FILE
    cfg = load_config(path)
    for key, value in values.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise ConfigError(key, "no such config key")
        node[leaf] = value
    return write_text(path, cfg.dump())


def resolve_epochs(cfg, num_train_images: int) -> str:
    """Turn ``SOLVER.EPOCHS`` into iterations, in place (``cfg`` must not be frozen).

    With ``SOLVER.EPOCHS > 0``: ``ITERS_PER_EPOCH = ceil(num_train_images / IMS_PER_BATCH)``,
    ``MAX_ITER = EPOCHS * ITERS_PER_EPOCH``, ``STEPS`` from ``STEP_FRACTIONS``, and
    ``TEST.EVAL_PERIOD`` / ``SOLVER.CHECKPOINT_PERIOD`` every N epochs. With ``EPOCHS == 0``
    nothing changes (plain iteration configs), except that ``ITERS_PER_EPOCH`` is recorded.

    Returns:
        str: a one-line account of the resolution, for the log.

    Raises:
        ValueError: an empty training set.
        ConfigError: ``SOLVER.STEP_FRACTIONS`` outside (0, 1).
    """
    if num_train_images <= 0:
        raise ValueError("cannot resolve epochs: the training set is empty")
    check_step_fractions(cfg)
    solver = cfg.SOLVER
    iters_per_epoch = math.ceil(num_train_images / solver.IMS_PER_BATCH)
    solver.ITERS_PER_EPOCH = iters_per_epoch
    if solver.EPOCHS <= 0:
        return (f"{num_train_images} training images, {iters_per_epoch} iterations per epoch; "
                f"MAX_ITER {solver.MAX_ITER} is {solver.MAX_ITER / iters_per_epoch:.2f} epochs")
    solver.MAX_ITER = solver.EPOCHS * iters_per_epoch
    # Detectron2's scheduler needs 0 < step < MAX_ITER; tiny runs may merge steps.
    solver.STEPS = tuple(sorted({min(max(1, round(f * solver.MAX_ITER)), solver.MAX_ITER - 1)
                                 for f in solver.STEP_FRACTIONS} - {0}))
    solver.CHECKPOINT_PERIOD = max(1, solver.CHECKPOINT_EVERY_EPOCHS) * iters_per_epoch
    cfg.TEST.EVAL_PERIOD = max(1, cfg.TEST.EVAL_EVERY_EPOCHS) * iters_per_epoch
    solver.WARMUP_ITERS = min(solver.WARMUP_ITERS, solver.MAX_ITER)
    return (
        f"Epochs resolved: {solver.EPOCHS} epochs x {iters_per_epoch} iterations "
        f"({num_train_images} images / batch {solver.IMS_PER_BATCH}) = MAX_ITER "
        f"{solver.MAX_ITER}; LR steps at {list(solver.STEPS)}; evaluation every "
        f"{cfg.TEST.EVAL_PERIOD} and checkpoint every {solver.CHECKPOINT_PERIOD} iterations"
    )
