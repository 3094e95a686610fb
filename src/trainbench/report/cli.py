"""The ``report`` subcommand: parse arguments, call ``trainbench.report.build``, print or write views."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from trainbench.errors import ConfigError
from trainbench.metrics.flops import FLOPS_CONVENTIONS
from trainbench.metrics.peaks import DTYPES, gpu_table
from trainbench.metrics.steady import parse_window
from trainbench.recipe import tables
from trainbench.report.analyze import BASES, Options

FACT_FLAGS = ("model", "dtype", "gpus", "gbs", "layers", "seq_len", "gpu_type")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="turn run directories and recipe logs into the recipe's numbers, statistics and comparisons",
        description="Read trainbench run directories, results trees in the recipe's layout "
        "(<root>/<GSW_VERSION>/<dtype>/<model>/<gpus>/) and single NeMo 24.09, NeMo 2 or Megatron .out logs; "
        "print the recipe's numbers from the last step, steady-state statistics and the published reference.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="run directory, results tree or log file")
    facts = p.add_argument_group("facts a log does not state (the log's own statements win)")
    facts.add_argument("--model", help=f"model preset: {', '.join(tables.model_names())}")
    facts.add_argument("--dtype", help="bf16 or fp8")
    facts.add_argument("--gpus", type=int, help="total GPU count")
    facts.add_argument("--gbs", type=int, help="global batch size")
    facts.add_argument("--layers", type=int, help="layers (default: the recipe's proxy table, else the preset)")
    facts.add_argument("--seq-len", type=int, help="sequence length (default: the preset's)")
    facts.add_argument("--gpu-type", help="peak-FLOPS table key (default for foreign logs: h100, the recipe's)")
    p.add_argument("--peak-tflops", type=float, help="dense peak TFLOP/s of a GPU not in the table (all runs)")
    p.add_argument(
        "--flops-convention",
        default="recipe",
        choices=FLOPS_CONVENTIONS,
        help="recipe: full attention, as the published MFU (default); causal: halve the score term",
    )
    p.add_argument(
        "--window",
        help="steady-state window FIRST:LAST (1-based, inclusive; default 35:44, or the second half of a shorter run)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=5.0,
        help="pass if tokens/s is at most this many %% below the published cell (default 5)",
    )
    p.add_argument(
        "--basis",
        choices=BASES,
        default="last",
        help="compare the last step (the recipe's way, default) or the steady-state median",
    )
    out = p.add_argument_group("output (a terminal table unless --json)")
    out.add_argument("--json", action="store_true", help="print a JSON list instead of the tables")
    out.add_argument("--csv", type=Path, metavar="FILE", help="also write a CSV file")
    out.add_argument("--markdown", type=Path, metavar="FILE", help="also write a Markdown file")
    out.add_argument("--plots", type=Path, metavar="DIR", help="also write PNG plots into DIR")
    p.add_argument(
        "--check", action="store_true", help="exit 1 if a run is unreadable, not complete, or fails its comparison"
    )
    p.set_defaults(func=cmd_report)


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The stated facts, validated: every problem in one error."""
    problems = []
    flags = {k: getattr(args, k) for k in FACT_FLAGS if getattr(args, k) is not None}
    if "model" in flags:
        flags["model"] = flags["model"].lower()
        if flags["model"] not in tables.model_names():
            problems.append(f"--model {args.model!r}: choose one of {', '.join(tables.model_names())}")
    if "dtype" in flags:
        flags["dtype"] = flags["dtype"].lower()
        if flags["dtype"] not in DTYPES:
            problems.append(f"--dtype {args.dtype!r}: choose one of {', '.join(DTYPES)}")
    if "gpu_type" in flags:
        flags["gpu_type"] = flags["gpu_type"].lower()
        if flags["gpu_type"] not in gpu_table() and args.peak_tflops is None:
            problems.append(
                f"--gpu-type {args.gpu_type!r}: known types are {', '.join(sorted(gpu_table()))}; "
                "for another GPU give its dense peak with --peak-tflops"
            )
    for key in ("gpus", "gbs", "layers", "seq_len"):
        if key in flags and flags[key] < 1:
            problems.append(f"--{key.replace('_', '-')} must be a positive whole number, got {flags[key]}")
    if args.peak_tflops is not None and not (math.isfinite(args.peak_tflops) and args.peak_tflops > 0):
        problems.append(f"--peak-tflops must be a positive number, got {args.peak_tflops}")
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        problems.append(f"--tolerance must be a non-negative percentage, got {args.tolerance}")
    for name, path in (("--csv", args.csv), ("--markdown", args.markdown)):
        if path is not None and (path.is_dir() or not path.parent.is_dir()):
            problems.append(f"{name} {path}: must be a file in an existing directory")
    if args.plots is not None and args.plots.exists() and not args.plots.is_dir():
        problems.append(f"--plots {args.plots}: exists and is not a directory")
    if problems:
        raise ConfigError(problems)
    return flags


def cmd_report(args: argparse.Namespace) -> int:
    from trainbench.report import build, render

    flags = _flags(args)
    try:
        window = parse_window(args.window) if args.window else None
    except ValueError as exc:
        raise ConfigError(f"--window: {exc}") from None
    opts = Options(
        window=window,
        tolerance_pct=args.tolerance,
        flops_convention=args.flops_convention,
        basis=args.basis,
        peak_tflops=args.peak_tflops,
    )
    pairs = build(args.paths, flags, opts)
    if not pairs:
        raise ConfigError(f"no logs found under {', '.join(args.paths)} (looked for .out, .steps.jsonl, .summary.json)")
    rows = [row for _, row in pairs]
    if args.json:
        print(render.to_json(rows))
    else:
        render.print_tables(rows, opts)
    wrote: list[Path] = []
    if args.csv:
        render.write_csv(rows, args.csv)
        wrote.append(args.csv)
    if args.markdown:
        args.markdown.write_text(render.markdown(rows, opts))
        wrote.append(args.markdown)
    if args.plots:
        from trainbench.report.plots import write_plots

        files, notes = write_plots(pairs, args.plots)
        wrote += files
        for note in notes:
            print(f"plots: {note}", file=sys.stderr)
    if wrote:
        print("wrote " + ", ".join(map(str, wrote)), file=sys.stderr)
    if args.check:
        bad = [r for r in rows if r["status"] != "complete" or r["comparison"]["verdict"] == "fail"]
        return 1 if bad else 0
    return 0
