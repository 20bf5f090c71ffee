"""Run every benchmark and write their tables to benchmarks/RESULTS.md.

Runs, one after the other in one process: bench_dataset (conversion), bench_training
(training step, ours vs torchvision v2 and v1, plus ours with CPU AMP), bench_dataloader
(waiting for data in CellsTrainer), bench_inference (per image, to submission entries),
bench_submission (the 14 CoNSeP test images to a checked test-results.json),
bench_evaluation (pycocotools vs faster-coco-eval through the project's evaluate_coco) and
bench_profile (where our step's time goes, and each optimisation's before/after). It writes
the machine, the exact command that reproduces each table alone, each table and its notes,
and the issue's targets with which hold. A benchmark that fails is reported in the file (with
its error) and makes the exit status 1; the others still run.

Run: ``python benchmarks/run_all.py [--quick] [--device auto|cpu|cuda]``. The default full
run is sized for about 20 minutes on 2 otherwise idle CPU cores (training: 1 warm-up + 2
measured iterations at 512, 2 measured at 800; data loading: 3 iterations per worker count;
inference: 1 warm-up + 2 images per setting; submission: 14 images at 800; evaluation: one
run of each library on the 14 test images; profile: one step per size); a machine busy with
other work stretches it (the figures are interleaved, so the ratios hold). ``--quick`` is a
smoke run (512 px only, fewest iterations and images) that writes
benchmarks/RESULTS-quick.md instead of RESULTS.md. On CUDA everything runs with AMP.
``--only NAME ...`` reruns some benchmarks and keeps the other sections of the results file
as they were (the file's header says which sections come from which run).
bench_recipe_step (the native-scale recipe's step, float32 and bfloat16, on the CPU) adds
about 8 minutes.
"""

import argparse
import datetime
import importlib
import inspect
import os
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List

import targets
from common import (
    DEFAULT_DATA,
    REPO_ROOT,
    add_common_args,
    machine_info,
    markdown_table,
    resolve_device,
)

from seg_project.utils.atomic_files import write_text

BENCH_DIR = Path(__file__).resolve().parent
# module -> whether it takes the common --device/--data/--seed arguments of
# common.add_common_args (every one takes --quick).
BENCHMARKS = {
    # bench_dataset takes its own --data (the shared data root), not the common arguments.
    "bench_dataset": False,
    "bench_training": True,
    "bench_dataloader": True,
    "bench_inference": True,
    "bench_submission": True,
    "bench_evaluation": True,
    "bench_profile": True,
    "bench_recipe_step": False,
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--output", type=Path, default=None,
                        help="the results file (default benchmarks/RESULTS.md; with --quick "
                             "benchmarks/RESULTS-quick.md)")
    parser.add_argument("--only", nargs="+", default=None,
                        choices=list(BENCHMARKS),
                        help="run only these benchmarks")
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = BENCH_DIR / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    return args


def _bench_argv(name: str, args: argparse.Namespace, device: str) -> List[str]:
    argv = ["--quick"] if args.quick else []
    if BENCHMARKS[name]:
        argv += ["--device", device]
        if args.data != DEFAULT_DATA:
            argv += ["--data", str(args.data)]
        if args.seed != 0:
            argv += ["--seed", str(args.seed)]
    return argv


def _command(script: str, argv: List[str]) -> str:
    return shlex.join(["python", f"benchmarks/{script}.py", *argv])


def _run_one(name: str, argv: List[str]) -> Dict:
    """Import and run one benchmark; returns its section (title, command, table or error)."""
    section = {"name": name, "command": _command(name, argv), "notes": []}
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        if getattr(e, "name", None) == name:
            section["skipped"] = f"benchmarks/{name}.py is not present"
            return section
        raise
    section["title"] = getattr(module, "TITLE", name)
    doc = (module.__doc__ or "").strip()
    section["description"] = "\n\n".join(p for p in doc.split("\n\n")[1:]
                                         if not p.startswith("Run:"))
    start = time.perf_counter()
    try:
        if "notes" in inspect.signature(module.run).parameters:
            section["rows"] = module.run(argv, section["notes"])
        else:
            section["rows"] = module.run(argv)
    except (Exception, SystemExit) as e:  # a failing benchmark must not lose the others' tables
        section["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    section["seconds"] = time.perf_counter() - start
    return section


def _load_average() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "n/a"


def _render(sections: List[Dict], info: Dict[str, str], command: str, total: float,
            quick: bool, pending: int = 0) -> str:
    lines = ["# Benchmark results", ""]
    if quick:
        lines += ["**Quick smoke run (`--quick`): too few iterations for the figures to mean "
                  "much.**", ""]
    if pending:
        lines += [f"**Partial: {pending} benchmark(s) still to run.**", ""]
    info = {**info, "load average at the end": _load_average()}
    lines += [f"Written {datetime.datetime.now().isoformat(timespec='seconds')} by `{command}` "
              f"in {total / 60:.1f} min.", "", "## Machine", "",
              markdown_table([{"": key, "value": value} for key, value in info.items()]), "",
              "## Targets", "", markdown_table(targets.check({s["name"]: s for s in sections})),
              "", "Ratios are ours / theirs of medians in the same interleaved run; see each "
              "table below for what a timed call holds.", ""]
    for section in sections:
        lines += [f"## {section.get('title', section['name'])}", ""]
        if "skipped" in section:
            lines += [f"Skipped: {section['skipped']}.", ""]
            continue
        if section.get("description"):
            lines += [section["description"], ""]
        lines += ["```", section["command"], "```", ""]
        if "error" in section:
            lines += [f"**Failed** after {section['seconds']:.0f} s: `{section['error']}`", ""]
        elif isinstance(section["rows"], dict):  # several tables
            for title, rows in section["rows"].items():
                lines += [f"### {title}", "", markdown_table(rows), ""]
        else:
            lines += [markdown_table(section["rows"]), ""]
        lines += [note + "\n" for note in section["notes"]]
        if "error" not in section:
            lines += [f"({section['seconds'] / 60:.1f} min)", ""]
    return "\n".join(lines).rstrip() + "\n"


def _sections(text: str) -> List[List[str]]:
    """A results file cut at its "## " headings (the first piece is the file's header)."""
    pieces: List[List[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("## "):
            pieces.append([])
        pieces[-1].append(line)
    return pieces


def _merge(earlier: str, rerun: str, titles: List[str]) -> str:
    """The earlier results file with the sections of ``titles`` replaced by the rerun's
    (appended when the earlier file lacks them); its header, machine and targets are kept and
    a line says when and how the rerun sections were written."""
    rerun_pieces = _sections(rerun)
    new = {piece[0]: piece for piece in rerun_pieces[1:] if piece[0][3:] in titles}
    written = next((line for line in rerun_pieces[0] if line.startswith("Written")), "Written")
    old = _sections(earlier)
    note = f"Sections {', '.join(titles)}: w{written[1:]}"
    pieces = [old[0] + [note, ""]] + [new.pop(piece[0], piece) for piece in old[1:]]
    pieces += list(new.values())
    return "\n".join("\n".join(piece).rstrip() + "\n" for piece in pieces)


def run(argv=None) -> List[Dict]:
    """Run the benchmarks, write the results file; returns one section dict per benchmark
    (``rows``, or ``error`` / ``skipped``)."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    info = {**machine_info(device), "load average at the start": _load_average()}
    command = shlex.join(["python", "benchmarks/run_all.py",
                          *(sys.argv[1:] if argv is None else argv)])
    names = [name for name in BENCHMARKS if not args.only or name in args.only]
    sections, start = [], time.perf_counter()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    earlier = args.output.read_text() if args.output.exists() else ""
    for index, name in enumerate(names):
        print(f"== {name}", file=sys.stderr, flush=True)
        sections.append(_run_one(name, _bench_argv(name, args, device.type)))
        # Written after every benchmark, so that a run cut short keeps what it measured.
        text = _render(sections, info, command, time.perf_counter() - start, args.quick,
                       pending=len(names) - index - 1)
        if args.only and earlier:
            text = _merge(earlier, text, [s.get("title", s["name"]) for s in sections])
        write_text(args.output, text)
    print(text)
    try:
        shown = args.output.resolve().relative_to(REPO_ROOT)
    except ValueError:
        shown = args.output
    print(f"Wrote {shown}", file=sys.stderr)
    return sections


def main(argv=None) -> int:
    """Run everything; exit status 1 if any benchmark failed."""
    sections = run(argv)
    return 1 if any("error" in s for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
