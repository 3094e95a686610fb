"""Layouts on GPUs (NCCL), against the single-GPU run. Skipped without CUDA; not run in CPU CI.

Tolerances here are not yet measured on GPUs (the CPU ones are, in test_equivalence.py): fp32 runs
(no autocast, no compile) are held to ``FP32_REL``, bf16 runs to ``BF16_REL``.
"""

from __future__ import annotations

import pytest
import torch

from tests.parallel.harness import free_port, max_rel_diff, reference, run_job, train_steps
from tests.parallel.test_equivalence import SP, TWO_RANKS

pytestmark = pytest.mark.gpu

FP32_REL = 1e-4
BF16_REL = 2e-2
FP32 = ["train.bf16_autocast=false", "train.compile=false"]
BASE = ["train.gbs=4", "train.steps=3", "train.warmup_steps=1", "train.lr=3e-3", "train.data=pattern"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_two = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")


def gpu_type() -> str:
    from trainbench.metrics.peaks import gpu_type_from_device_name

    return gpu_type_from_device_name(torch.cuda.get_device_name(0)) or "h100"


def distributed_run(overrides: list[str], monkeypatch: pytest.MonkeyPatch) -> list:
    """The same plan through the distributed path on one GPU: NCCL process group of one rank, a
    (1, 1, 1, 1) mesh, the parallel build and clipping."""
    import torch.distributed as dist

    from trainbench.recipe.resolve import resolve
    from trainbench.train.worker import context_for, init_distributed, trainer_for

    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    init_distributed(device, 120)
    try:
        plan = resolve("tiny", 1, "bf16", gpu_type(), overrides)
        ctx = context_for(plan, device)
        assert ctx.mesh is not None
        return train_steps(trainer_for(plan)(plan, device, ctx), plan)
    finally:
        dist.destroy_process_group()


@needs_cuda
@pytest.mark.parametrize(("precision", "tol"), [(FP32, FP32_REL), ([], BF16_REL)], ids=["fp32", "bf16-default"])
def test_tp1_through_the_distributed_path_matches_the_single_device_run(precision, tol, monkeypatch):
    overrides = BASE + precision
    single = reference(overrides, torch.device("cuda", 0), gpu_type())
    parallel = distributed_run(overrides, monkeypatch)
    loss_diff, norm_diff = max_rel_diff(parallel, single)
    assert loss_diff <= tol and norm_diff <= 2 * tol, (parallel, single)


@needs_two
def test_two_gpu_layouts_and_context_parallel_match_the_single_gpu_run(tmp_path):
    cases = {name: BASE + FP32 + extra for name, extra in TWO_RANKS.items()}
    cases["CP 2"] = [*BASE, *FP32, "parallel.cp=2"]
    cases["CP 2, bf16 + compile"] = [*BASE, "parallel.cp=2"]
    single = reference(BASE + FP32, torch.device("cuda", 0), gpu_type())
    single_bf16 = reference(BASE, torch.device("cuda", 0), gpu_type())
    results = run_job(2, cases, tmp_path, device="cuda", gpu_type=gpu_type())
    for name, result in results.items():
        ref, tol = (single_bf16, BF16_REL) if "bf16" in name else (single, FP32_REL)
        loss_diff, norm_diff = max_rel_diff(result["steps"], ref)
        assert loss_diff <= tol and norm_diff <= 2 * tol, (name, result["steps"], ref)


@needs_two
def test_fp8_tensor_parallel_with_sequence_parallel_runs_close_to_one_gpu(tmp_path):
    pytest.importorskip("torchao")
    fp8 = [*BASE, "train.dtype=fp8"]
    single = reference(fp8, torch.device("cuda", 0), gpu_type())
    results = run_job(2, {"fp8 TP 2 + SP": [*fp8, "parallel.tp=2", SP]}, tmp_path, device="cuda", gpu_type=gpu_type())
    loss_diff, _ = max_rel_diff(results["fp8 TP 2 + SP"]["steps"], single)
    assert loss_diff <= 5e-2, (results, single)
