"""``trainbench run``: resolve the cell, refuse what cannot fit, run it, print the summary."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from trainbench.config import Plan
from trainbench.errors import ConfigError
from trainbench.metrics.peaks import gpu_type_from_device_name
from trainbench.recipe.resolve import resolve
from trainbench.train.launch import DEFAULT_DIST_TIMEOUT_S, NodeSpec, node_spec

if TYPE_CHECKING:
    import torch

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
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help="processes (GPUs) on this node, started through torchrun; default: every visible GPU "
        "(--gpus / nodes when --gpus is given; nodes from SLURM_NNODES or NNODES)",
    )
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=DEFAULT_DIST_TIMEOUT_S,
        metavar="SECONDS",
        help=f"process-group timeout: how long a rank waits for a hung peer before the job fails "
        f"(default {DEFAULT_DIST_TIMEOUT_S})",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="as in plan, e.g. model.layers=2 train.gbs=8")
    p.set_defaults(func=cmd_run)


def _window(text: str) -> tuple[int, int]:
    from trainbench.metrics.steady import parse_window

    try:
        return parse_window(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolve_for_here(args: argparse.Namespace) -> tuple[Plan, torch.device]:
    import torch  # imported when a run starts: other subcommands stay fast

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
    gpus = node_for_here(args).world_size
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


def node_for_here(args: argparse.Namespace) -> NodeSpec:
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return node_spec(args.gpus, args.nproc_per_node, visible, os.environ)


# A plan that fills the GPU (the one-GPU proxies take 90% of it) fragments the caching allocator's
# fixed-size segments: the 405B-shaped proxy held 134 GiB reserved for a 124 GiB peak and ran 17 s
# steps; with growable segments it runs 1.84 s steps with no allocation retries (BENCHMARKS.md).
ALLOCATOR_DEFAULT = "expandable_segments:True"


def cmd_run(args: argparse.Namespace) -> int:
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", ALLOCATOR_DEFAULT)  # before CUDA's first allocation
    import torch

    from trainbench.train.files import default_results_root, new_run_id
    from trainbench.train.progress import ProgressView, echo_wanted
    from trainbench.train.run import check_fits, execute

    plan, device = resolve_for_here(args)
    check_fits(plan)
    if args.profile and args.profile[1] > plan.train.steps:
        raise ConfigError(
            f"--profile {args.profile[0]}:{args.profile[1]} ends after the run's {plan.train.steps} steps"
        )
    if device.type == "cpu":
        print("trainbench run: no GPU here; CPU numbers are smoke tests, not benchmark numbers.", file=sys.stderr)
    if plan.gpus > 1:
        return run_parallel(args, plan)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    view = ProgressView(plan, enabled=not args.no_progress and sys.stderr.isatty(), echo=echo_wanted())
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


def run_parallel(args: argparse.Namespace, plan: Plan) -> int:
    """Several processes: this node's share of the job through torchrun (see ``train.launch``)."""
    from trainbench.parallel.pipeline import pipeline_problems
    from trainbench.train.files import default_results_root, new_run_id
    from trainbench.train.launch import run_workers
    from trainbench.train.progress import ProgressView
    from trainbench.train.records import RunSummary
    from trainbench.train.run import Outcome

    if problems := pipeline_problems(plan):
        raise ConfigError(problems)
    node = node_for_here(args)
    if node.nnodes > 1 and not args.run_id:
        raise ConfigError(f"a job of {node.nnodes} nodes needs --run-id, the same on every node")
    results_root = args.results_dir or default_results_root()
    run_id = args.run_id or new_run_id()
    result = run_workers(
        plan, results_root=results_root, run_id=run_id, node=node, dist_timeout_s=args.dist_timeout,
        progress=not args.no_progress and sys.stderr.isatty(), profile=args.profile,
    )  # fmt: skip
    if node.node_rank == 0:
        from trainbench.train.files import RunFiles

        path = RunFiles(results_root, plan.dtype, plan.model.name, plan.gpus, run_id).summary_path
        summary = RunSummary.read(path) if path.exists() else None
        ProgressView(plan, enabled=False).print_summary(Outcome(result.status, path, result.exit_code, summary))
    elif result.failure:
        print(f"trainbench run: node {node.node_rank}: {result.failure}", file=sys.stderr)
    return result.exit_code
