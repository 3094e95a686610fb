"""One rank of a multi-process run: ``python -m trainbench.train.worker --plan PLAN.json ...``.

``trainbench run`` starts these through torchrun's agent (see ``launch``), which sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Each rank joins the process group
(NCCL on GPUs, gloo on CPU) with the run's ``--dist-timeout``, builds the device mesh, and runs
``train.run.execute`` with the trainer of its layout; rank 0 writes the run's files. An exception is
recorded (``@record``) for the launcher, which names the failed rank in the run's summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from trainbench.config import Plan
from trainbench.errors import ConfigError
from trainbench.train.dist import DistContext
from trainbench.train.launch import DEFAULT_DIST_TIMEOUT_S


def init_distributed(device: torch.device, timeout_s: float) -> None:
    """Join the job's process group from torchrun's environment variables."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        timeout=dt.timedelta(seconds=timeout_s),
        device_id=device if device.type == "cuda" else None,
    )


def context_for(plan: Plan, device: torch.device) -> DistContext:
    """This rank's place in ``plan``'s layout (after ``init_distributed``): mesh, DP rank."""
    from trainbench.parallel.mesh import build_mesh, mesh_shape

    world = dist.get_world_size()
    if world != plan.gpus:
        raise ConfigError(f"the plan is for {plan.gpus} GPUs but the job has {world} ranks")
    mesh = build_mesh(plan, device.type)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ctx = DistContext(
        rank=dist.get_rank(), world_size=world, local_rank=local_rank, dp_rank=mesh.get_local_rank("dp"), mesh=mesh
    )
    ctx.extras["mesh_shape"] = dict(zip(("pp", "dp", "cp", "tp"), mesh_shape(plan), strict=True))
    return ctx


def trainer_for(plan: Plan) -> Callable[[Plan, torch.device, DistContext], Any]:
    if plan.parallel.pp > 1:
        from trainbench.parallel.trainer import PipelineTrainer

        return PipelineTrainer
    from trainbench.train.loop import Trainer

    return Trainer


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trainbench.train.worker")
    p.add_argument("--plan", type=Path, required=True, help="the resolved plan, as JSON (Plan.to_dict)")
    p.add_argument("--results-dir", type=Path, required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--dist-timeout", type=float, default=DEFAULT_DIST_TIMEOUT_S)
    p.add_argument("--progress", action="store_true", help="rank 0 shows a progress bar on stderr")
    p.add_argument("--profile", default=None, metavar="FIRST:LAST", help="as trainbench run --profile")
    return p.parse_args(argv)


@record
def main(argv: Sequence[str] | None = None) -> int:
    from trainbench.metrics.steady import parse_window
    from trainbench.train.progress import ProgressView, echo_wanted
    from trainbench.train.run import execute

    args = parse_args(argv)
    plan = Plan.from_dict(json.loads(args.plan.read_text()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    init_distributed(device, args.dist_timeout)
    ctx = context_for(plan, device)
    view = ProgressView(plan, enabled=args.progress and ctx.is_rank0, echo=ctx.is_rank0 and echo_wanted())
    with view:
        outcome = execute(
            plan,
            results_root=args.results_dir,
            run_id=args.run_id,
            device=device,
            ctx=ctx,
            make_trainer=trainer_for(plan),
            nodes=args.nodes,
            on_step=view.update,
            profile=parse_window(args.profile) if args.profile else None,
        )
    # Only after a clean end: after a peer's failure, tearing down (NCCL) could block on it.
    dist.destroy_process_group()
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
