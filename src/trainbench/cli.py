"""``trainbench`` subcommands: parse arguments, call library functions, print. Nothing else."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from trainbench import __version__
from trainbench.errors import ConfigError
from trainbench.report.cli import register as register_report

EXIT_USAGE = 2


def _add_cell_arguments(p: argparse.ArgumentParser, *, gpus_default: int | None = None) -> None:
    p.add_argument("--model", default="8b", help="preset: tiny, 8b, 70b, 405b (default 8b)")
    p.add_argument("--dtype", default="bf16", help="bf16 or fp8 (default bf16)")
    p.add_argument(
        "--gpus", type=int, default=gpus_default, required=gpus_default is None and False, help="total GPU count"
    )
    p.add_argument("--gpu-type", default="h100", help="peak-FLOPS table key: h100 (recipe's), h200, a100, b200, ...")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense peak TFLOP/s of a GPU not in the table")
    p.add_argument(
        "--flops-convention",
        default="recipe",
        choices=["recipe", "causal"],
        help="recipe: full attention as the recipe counts (default); causal: halve the score term",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. parallel.tp=4 model.layers=8 train.gbs=64")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainbench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"trainbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="resolve and validate a recipe cell; print its numbers")
    _add_cell_arguments(plan, gpus_default=8)
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.add_argument(
        "--dry-run",
        action="store_true",
        help="also build each pipeline stage on the meta device for the plan's world size (fake process group): "
        "parameters per rank, the stage split, memory per rank; no GPU needed",
    )
    plan.set_defaults(func=cmd_plan)
    register_report(sub)

    from trainbench.train.cli import register as register_run

    register_run(sub)
    from trainbench.launch.cli import register as register_launch

    register_launch(sub)
    return parser


def cmd_plan(args: argparse.Namespace) -> int:
    from trainbench.recipe.describe import describe
    from trainbench.recipe.resolve import resolve

    plan = resolve(
        args.model,
        args.gpus,
        args.dtype,
        args.gpu_type,
        args.overrides,
        flops_convention=args.flops_convention,
        peak_tflops=args.peak_tflops,
    )
    info = describe(plan)
    if args.dry_run:
        from trainbench.parallel.dryrun import dry_run

        info["dry_run"] = dry_run(plan)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        from trainbench.views import print_plan

        print_plan(info)
        if args.dry_run:
            from trainbench.parallel.dryrun import format_dry_run

            print("\n".join(format_dry_run(plan, info["dry_run"])))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: Any = args.func(args)
    except ConfigError as exc:
        print(f"trainbench {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
