"""Multi-process jobs for the tests: N ranks of ``tests.parallel.job`` as plain subprocesses, and the
single-process reference they are compared with."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from trainbench.config import Plan
from trainbench.recipe.resolve import resolve
from trainbench.train.dist import DistContext
from trainbench.train.loop import Trainer
from trainbench.train.optim import lr_at

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_job(
    world: int, cases: dict[str, list[str]], tmp: Path, *, device: str = "cpu", gpu_type: str = "cpu",
    timeout_s: float = 300,
) -> dict[str, dict]:  # fmt: skip
    """Run ``cases`` on ``world`` ranks; {case: {"steps": [[loss, grad norm], ...], "seconds": s}}."""
    spec = tmp / "spec.json"
    out = tmp / "result.json"
    spec.write_text(json.dumps({"cases": cases, "out": str(out), "device": device, "gpu_type": gpu_type,
                                "timeout_s": 120}))  # fmt: skip
    port = free_port()
    procs, logs = [], []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}  # fmt: skip
        log = (tmp / f"rank{rank}.log").open("w")
        logs.append(log)
        cmd = [sys.executable, "-m", "tests.parallel.job", str(spec)]
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    codes = [p.returncode for p in procs]
    if any(codes):
        tails = "\n".join(f"--- rank {r} (exit {c}) ---\n" + (tmp / f"rank{r}.log").read_text()[-3000:]
                          for r, c in enumerate(codes) if c)  # fmt: skip
        raise AssertionError(f"job of {world} ranks failed: exit codes {codes}\n{tails}")
    return json.loads(out.read_text())


def reference(overrides: list[str], device: torch.device | None = None, gpu_type: str = "cpu") -> list:
    """The single-process run of the same plan: [[loss, grad norm], ...] per step."""
    plan = resolve("tiny", 1, "bf16", gpu_type, overrides)
    return train_steps(Trainer(plan, device or torch.device("cpu"), DistContext()), plan)


def train_steps(trainer: Trainer, plan: Plan) -> list:
    """Run the plan's steps as ``execute`` does: [[loss, grad norm], ...] per step, as read back."""
    steps = []
    for step in range(1, plan.train.steps + 1):
        loss, grad_norm = trainer.step(trainer.batches(step), lr_at(step - 1, plan.train))
        r = trainer.read(loss, grad_norm)
        steps.append([r.loss, r.grad_norm])
    return steps


def max_rel_diff(a: list, b: list) -> tuple[float, float]:
    """(loss, grad norm) largest relative differences over the steps."""
    loss = max(abs(x[0] - y[0]) / abs(y[0]) for x, y in zip(a, b, strict=True))
    norm = max(abs(x[1] - y[1]) / abs(y[1]) for x, y in zip(a, b, strict=True))
    return loss, norm
