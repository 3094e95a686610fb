"""``trainbench run``: resolve the cell, refuse what cannot fit, run it, print the summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from trainbench.config import Plan
from trainbench.errors import ConfigError
from trainbench.metrics.peaks import gpu_type_from_device_name
from trainbench.recipe.resolve import resolve

CPU_DEFAULT_STEPS = 10


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run the workload here: the 8B-shaped proxy that fits one GPU by default (the tiny preset on CPU)",
    )
    p.add_argument("--model", default=None, help="tiny, 8b, 70b, 405b (default: 8b with a GPU, tiny without)")
    p.add_argument("--dtype", default="bf16", help="bf16 or fp8 (default bf16)")
    p.add_argument("--gpus", type=int, default=None, help="total GPUs (processes on CPU); default: this node's")
    p.add_argument("--gpu-type", default=None, help="peak-FLOPS table key; default: detected from the device")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense peak TFLOP/s for a GPU not in the table")
    p.add_argument("--flops-convention", default="recipe", choices=["recipe", "causal"])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (recipe: 50; CPU default: 10)")
    p.add_argument("--results-dir", type=Path, default=None, help="results root (default $STAGE_PATH/results)")
    p.add_argument("--run-id", default=None, help="names the run's files (default: a timestamp)")
    p.add_argument(
        "--profile",
        type=_window,
        default=None,
        metavar="FIRST:LAST",
        help="profile these steps (recipe: 20:30): a trace and a kernel table; the run is marked profiled",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="as in plan, e.g. model.layers=2 train.gbs=8")
    p.set_defaults(func=cmd_run)


def _window(text: str) -> tuple[int, int]:
    from trainbench.metrics.steady import parse_window

    try:
        return parse_window(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolve_for_here(args: argparse.Namespace) -> tuple[Plan, torch.device]:
    """The plan for this machine: the CPU default is the tiny preset, a GPU's is the 8B proxy."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    model = args.model or ("8b" if cuda else "tiny")
    gpu_type = args.gpu_type
    if gpu_type is None:
        if cuda:
            gpu_type = gpu_type_from_device_name(torch.cuda.get_device_name(device))
            if gpu_type is None and args.peak_tflops is None:
                raise ConfigError(
                    f"GPU {torch.cuda.get_device_name(device)!r} is not in the peak-FLOPS table: "
                    "give --gpu-type or --peak-tflops"
                )
            gpu_type = gpu_type or "unknown"
        else:
            gpu_type = "cpu"
    gpus = args.gpus or 1
    overrides = list(args.overrides)
    steps = args.steps if args.steps is not None else (None if cuda else CPU_DEFAULT_STEPS)
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    plan = resolve(
        model, gpus, args.dtype, gpu_type, overrides,
        flops_convention=args.flops_convention, peak_tflops=args.peak_tflops,
    )  # fmt: skip
    if plan.dtype == "fp8" and not cuda:
        raise ConfigError("dtype fp8 needs a GPU with FP8 tensor cores (H100, H200, B200, ...); use bf16 on CPU")
    return plan, device


def cmd_run(args: argparse.Namespace) -> int:
    from trainbench.train.files import default_results_root, new_run_id
    from trainbench.train.progress import ProgressView
    from trainbench.train.run import check_fits, execute

    plan, device = resolve_for_here(args)
    check_fits(plan)
    if args.profile and args.profile[1] > plan.train.steps:
        raise ConfigError(
            f"--profile {args.profile[0]}:{args.profile[1]} ends after the run's {plan.train.steps} steps"
        )
    if plan.gpus > 1:
        raise ConfigError(f"{plan.gpus} GPUs asked for; this build runs one process (use --gpus 1)")
    if device.type == "cpu":
        print("trainbench run: no GPU here; CPU numbers are smoke tests, not benchmark numbers.", file=sys.stderr)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    view = ProgressView(plan, enabled=not args.no_progress and sys.stderr.isatty())
    with view:
        outcome = execute(
            plan,
            results_root=args.results_dir or default_results_root(),
            run_id=args.run_id or new_run_id(),
            device=device,
            on_step=view.update,
            profile=args.profile,
        )
    view.print_summary(outcome)
    return outcome.exit_code
