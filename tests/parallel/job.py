"""One rank of a multi-process test job: ``python -m tests.parallel.job SPEC.json`` (see ``harness``).

The spec names cases (a tiny-preset plan's overrides each), the device kind and where rank 0 writes
the result. Every case runs its plan's steps with the layout's real trainer, built by the worker's
own functions, inside one process group (gloo on CPU, NCCL on GPUs), each case on its own device
mesh; rank 0 records (loss, grad norm) per step as ``execute`` reads them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from tests.parallel.harness import train_steps
from trainbench.recipe.resolve import resolve
from trainbench.train.worker import context_for, init_distributed, trainer_for


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec["device"] == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    init_distributed(device, spec["timeout_s"])
    results: dict[str, object] = {}
    for name, overrides in spec["cases"].items():
        t0 = time.perf_counter()
        plan = resolve("tiny", dist.get_world_size(), "bf16", spec["gpu_type"], overrides)
        ctx = context_for(plan, device)
        steps = train_steps(trainer_for(plan)(plan, device, ctx), plan)
        results[name] = {"steps": steps, "seconds": time.perf_counter() - t0}
    if dist.get_rank() == 0:
        Path(spec["out"]).write_text(json.dumps(results))
    # Both ranks reach teardown together: once, in about ten runs of this job, rank 1 aborted in
    # gloo's teardown ("terminate called without an active exception") after its work was done.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
