"""Config keys of seg_project and their resolution (epochs -> iterations, dataset roots)."""

import math

from detectron2.config import CfgNode as CN

__all__ = [
    "add_seg_project_config",
    "get_seg_project_cfg",
    "register_datasets_from_config",
    "resolve_epochs",
]


def add_seg_project_config(cfg):
    """Add seg_project's keys (with their defaults) to a Detectron2 config, in place."""
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
    # Predictions with a score below this are left out of the pathology metrics.
    _C.TEST.PATHOLOGY.SCORE_THRESHOLD = 0.5
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


def register_datasets_from_config(cfg) -> None:
    """(Re-)register the predefined cells_* datasets for the root, classes and split of
    ``cfg.DATASETS.CELLS``."""
    from .data.catalog import register_cells_splits

    cells = cfg.DATASETS.CELLS
    cache = cells.CACHE_DIR
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if len(cells.CLASS_NAMES) != num_classes:
        raise ValueError(
            f"DATASETS.CELLS.CLASS_NAMES has {len(cells.CLASS_NAMES)} names but "
            f"MODEL.ROI_HEADS.NUM_CLASSES is {num_classes}"
        )
    register_cells_splits(
        cells.ROOT or None,
        class_names=list(cells.CLASS_NAMES),
        val_fraction=cells.VAL_FRACTION,
        seed=cells.SPLIT_SEED,
        val_list=cells.VAL_LIST or None,
        cache_dir=False if cache == "off" else (cache or None),
    )


def resolve_epochs(cfg, num_train_images: int) -> str:
    """Turn ``SOLVER.EPOCHS`` into iterations, in place (``cfg`` must not be frozen).

    With ``SOLVER.EPOCHS > 0``: ``ITERS_PER_EPOCH = ceil(num_train_images / IMS_PER_BATCH)``,
    ``MAX_ITER = EPOCHS * ITERS_PER_EPOCH``, ``STEPS`` from ``STEP_FRACTIONS``, and
    ``TEST.EVAL_PERIOD`` / ``SOLVER.CHECKPOINT_PERIOD`` every N epochs. With ``EPOCHS == 0``
    nothing changes (plain iteration configs), except that ``ITERS_PER_EPOCH`` is recorded.

    Returns:
        str: a one-line account of the resolution, for the log.
    """
    if num_train_images <= 0:
        raise ValueError("cannot resolve epochs: the training set is empty")
    solver = cfg.SOLVER
    iters_per_epoch = math.ceil(num_train_images / solver.IMS_PER_BATCH)
    solver.ITERS_PER_EPOCH = iters_per_epoch
    if solver.EPOCHS <= 0:
        return (f"{num_train_images} training images, {iters_per_epoch} iterations per epoch; "
                f"MAX_ITER {solver.MAX_ITER} is {solver.MAX_ITER / iters_per_epoch:.2f} epochs")
    for fraction in solver.STEP_FRACTIONS:
        if not 0 < fraction < 1:
            raise ValueError(f"SOLVER.STEP_FRACTIONS must lie in (0, 1), got {fraction}")
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
