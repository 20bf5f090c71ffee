#!/usr/bin/env python
"""Plot the training curves of Detectron2 runs and tabulate their best and final metric.

Each RUN is a run folder (holding metrics.json and, optionally, config.yaml) or a metrics.json
file. Writes into --out (created if needed; files of the same names are replaced):
loss.png, loss_components.png, lr.png, ap.png, ap50_per_class.png (when per-class AP50 was
logged), summary.csv and summary.md; the summary table is printed too.

Example (the with-/without-scheduler comparison):
    python tools/plot_curves.py output/step_lr output/constant_lr \\
        --labels "step LR" "constant LR" --out figures/scheduler
"""

import argparse
import logging
import sys


def main(argv=None) -> int:
    """Run the tool; returns the exit status (0 on success, 2 on bad input, printed as one
    ``error: <file>: <problem>`` line)."""
    from seg_project.utils.cli import run_tool

    return run_tool(_main, argv, expected=(ValueError,))


def _main(argv) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="a run folder or its metrics.json")
    parser.add_argument("--out", required=True, help="folder for the figures and the summary")
    parser.add_argument("--labels", nargs="+", metavar="LABEL",
                        help="one legend label per run (default: the run folder names)")
    parser.add_argument("--metric", default="segm/AP50",
                        help="metric of the summary's best/final columns (default: %(default)s)")
    parser.add_argument("--mode", choices=("max", "min"), default="max",
                        help="whether the largest or smallest --metric is best "
                             "(default: %(default)s)")
    parser.add_argument("--smooth", type=int, default=20, metavar="N",
                        help="points of the moving median of the loss curves "
                             "(default: %(default)s)")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of expected errors too (or set "
                             "SEG_PROJECT_DEBUG=1)")
    args = parser.parse_args(argv)
    if args.smooth < 1:
        parser.error("--smooth must be at least 1")
    logging.basicConfig(level=logging.INFO, format="[plot_curves] %(levelname)s: %(message)s")

    from seg_project.analysis.plots import (
        format_summary,
        load_runs,
        plot_runs,
        summarize_runs,
        write_summary,
    )
    runs = load_runs(args.runs, args.labels)
    rows = summarize_runs(runs, args.metric, args.mode)
    written = plot_runs(runs, args.out, args.metric, args.mode, args.smooth)
    written += write_summary(rows, args.out)
    for run in runs:
        epochs = f"epochs from {run.epoch_source}" if run.epoch_source else "epochs unknown"
        print(f"{run.name}: {run.metrics_file} ({epochs})")
    print(format_summary(rows))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
