#!/usr/bin/env python
"""Train Mask R-CNN on a cell dataset in the course layout, evaluating every epoch.

Examples:
    python tools/train_net.py --config-file configs/mask_rcnn_R_50_FPN_cells.yaml \
        DATASETS.CELLS.ROOT /data/hw3 SOLVER.EPOCHS 100
    python tools/train_net.py --config-file configs/mask_rcnn_R_50_FPN_cells.yaml --resume
    python tools/train_net.py --config-file configs/mask_rcnn_R_50_FPN_cells.yaml --eval-only \
        MODEL.WEIGHTS output/mask_rcnn_R_50_FPN_cells/model_best.pth
    python tools/train_net.py --config-file ... --num-gpus 2
"""

import seg_project  # noqa: F401, I001  (first: registers datasets, quiets import warnings)
from detectron2.engine import default_argument_parser, launch
from seg_project.engine import CellsTrainer, evaluate_weights, setup_cfg


def setup(args):
    """Config from ``--config-file`` and trailing ``KEY VALUE`` overrides, datasets
    registered, epochs resolved, logging and the output folder set up."""
    return setup_cfg(args)


def main(args):
    cfg = setup(args)
    if args.eval_only:
        return evaluate_weights(cfg)
    trainer = CellsTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
