#!/usr/bin/env python
"""Train Mask R-CNN on a cell dataset in the course layout, evaluating every epoch.

Examples:
    python tools/train_net.py --config-file configs/mask_rcnn_R_50_FPN_cells.yaml \
        DATASETS.CELLS.ROOT /data/hw3 SOLVER.EPOCHS 100
    python tools/train_net.py --config-file configs/mask_rcnn_R_50_FPN_cells.yaml --resume
    python tools/train_net.py --config-file configs/mask_rcnn_R_50_FPN_cells.yaml --eval-only \
        MODEL.WEIGHTS output/mask_rcnn_R_50_FPN_cells/model_best.pth
    python tools/train_net.py --config-file ... --num-gpus 2

A finished training writes OUTPUT_DIR/report.html (tools/report.py), the run's report.

Bad config keys or values, data, weights or checkpoints stop the run before anything is
written, with ``error: <file or key>: <problem>`` and exit status 2 (``--debug`` or
``SEG_PROJECT_DEBUG=1`` for the traceback). A run holds OUTPUT_DIR/.lock while it runs: a
second run into the same folder is refused the same way.
"""

import argparse
import contextlib
import os
import sys

import seg_project  # noqa: F401  (registers datasets when Detectron2 loads, quiets warnings)
from seg_project.utils.cli import (
    DEBUG_FLAG,
    add_debug_argument,
    debug_requested,
    run_tool,
    user_errors,
)
from seg_project.utils.run_lock import run_folder_lock


@contextlib.contextmanager
def setup(args):
    """The frozen config of the run, with logging and the run folder set up, for the block:
    the config file and trailing ``KEY VALUE`` overrides checked, datasets registered and
    read, epochs resolved, weights or the resume checkpoint checked, all before anything is
    written; then the run folder's lock taken (released when the block ends) and the folder
    started.

    Yields:
        the config, or None when ``--resume`` finds nothing left to do (said on stdout; the
        run folder is left as it is).

    Raises:
        RunFolderInUseError: another run is using ``OUTPUT_DIR``.
    """
    from detectron2.utils import comm

    from seg_project.engine import plan_run, start_run

    plan = plan_run(args)
    if plan.nothing_to_do:
        print(plan.nothing_to_do, flush=True)
        yield None
        return
    # Processes started by launch run under the lock their launching process holds.
    lock = (run_folder_lock(plan.cfg.OUTPUT_DIR) if comm.get_world_size() == 1
            else contextlib.nullcontext())
    with lock as note:
        if note:
            plan.notes.append(note)
        yield start_run(plan, args)


def main(args):
    """One process's run (what ``launch`` calls): :func:`setup`, then train or evaluate.
    Returns the last evaluation results (or None)."""
    from seg_project.engine import CellsTrainer, evaluate_weights
    from seg_project.engine.report import write_run_report

    with setup(args) as cfg:
        if cfg is None:
            return None
        if args.eval_only:
            return evaluate_weights(cfg)
        trainer = CellsTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
        write_run_report(cfg.OUTPUT_DIR)
        return results


def _worker(args):
    # A spawned process prints an expected error as one line and exits with status 2 (the
    # parent then exits 2 too); anything else keeps its traceback.
    with user_errors(debug=args.debug):
        return main(args)


def build_parser() -> argparse.ArgumentParser:
    """Detectron2's training command line (``--config-file``, ``--resume``, ``--eval-only``,
    ``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url``, trailing
    ``KEY VALUE`` overrides), plus ``--debug``. Built without importing Detectron2, so that
    ``--help`` answers at once."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Config overrides follow the options: KEY VALUE pairs, e.g. SOLVER.EPOCHS 50.")
    parser.add_argument("--config-file", default="", metavar="FILE", help="the config (YAML)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUTPUT_DIR from its newest complete "
                             "checkpoint (model, optimizer, LR schedule, hooks)")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate MODEL.WEIGHTS on DATASETS.TEST, no training")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine (GPUs, or CPU processes with GLOO)")
    parser.add_argument("--num-machines", type=int, default=1, help="machines in all")
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's rank")
    # A fixed port per user, as Detectron2 picks it: an orphaned process shows as a busy port.
    port = 2 ** 15 + 2 ** 14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2 ** 14
    parser.add_argument("--dist-url", default=f"tcp://127.0.0.1:{port}",
                        help="initialization URL of torch.distributed (several machines)")
    add_debug_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=None,
                        help="config overrides: KEY VALUE ...")
    return parser


def _command(argv) -> int:
    args = build_parser().parse_args(argv)
    if DEBUG_FLAG in args.opts:  # given after the KEY VALUE overrides
        args.opts = [a for a in args.opts if a != DEBUG_FLAG]
        args.debug = True
    args.debug = args.debug or debug_requested()
    print("Command Line Args:", args)
    if args.num_gpus * args.num_machines == 1:
        main(args)
        return 0
    # Several processes: check config, data and weights here first, so that an expected
    # error is one line from this process rather than one traceback per worker.
    from detectron2.engine import launch

    from seg_project.engine import plan_run

    plan = plan_run(args)
    if plan.nothing_to_do:
        print(plan.nothing_to_do, flush=True)
        return 0
    # The first machine's launching process holds the run folder's lock for all of them.
    with (run_folder_lock(plan.cfg.OUTPUT_DIR) if args.machine_rank == 0
          else contextlib.nullcontext()) as note:
        if note:
            print(note, flush=True)
        launch(_worker, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    return 0


def command(argv=None) -> int:
    """The command line; returns the exit status (2 for bad input, see the module doc)."""
    return run_tool(_command, argv, strip_debug=False)


if __name__ == "__main__":
    sys.exit(command())
