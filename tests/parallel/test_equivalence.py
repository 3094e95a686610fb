"""Every CPU-runnable layout gives the single process's losses and gradient norms, step by step.

Real multi-process jobs (gloo), the tiny preset in fp32, the same global batch by construction
(``SyntheticTokens``) and the same initial weights (``parallel.init``). Both the loss and the global
gradient norm are compared: Adam's update hardly depends on the gradient's scale, so a wrongly scaled
gradient (a missing average, a doubled micro-batch) would leave the losses alone but not the norm.

Measured on CPU (torch 2.13, 3 steps, lr 3e-3 on the learnable stream): the largest relative
differences are below 1e-6 for every layout (summation order only). Asserted: ``REL_TOL``.
Context parallel needs CUDA SDPA kernels: its test is in test_gpu.py.
"""

from __future__ import annotations

import pytest

from tests.parallel.harness import max_rel_diff, reference, run_job

pytestmark = pytest.mark.slow

REL_TOL = 1e-5  # measured <= 1e-6 on CPU, fp32
BASE = ["train.gbs=4", "train.steps=3", "train.warmup_steps=1", "train.lr=3e-3", "train.data=pattern"]
SP = "parallel.sequence_parallel=true"

TWO_RANKS = {
    "DP 2 (FSDP)": [],
    "TP 2 + sequence parallel": ["parallel.tp=2", SP],
    "TP 2 without sequence parallel": ["parallel.tp=2"],
    "PP 2, 1F1B": ["parallel.pp=2"],
    "PP 2 x VP 2, interleaved 1F1B": ["parallel.pp=2", "parallel.vp=2"],
}
EIGHT_RANKS = {
    "TP 2 x PP 2 x DP 2": ["parallel.tp=2", "parallel.pp=2", SP],
    "TP 2 x PP 2 (VP 2) x DP 2": ["parallel.tp=2", "parallel.pp=2", "parallel.vp=2", SP],
}


@pytest.fixture(scope="module")
def single_process() -> list:
    return reference(BASE)


def check(results: dict, single: list, record) -> None:
    failures = []
    for name, result in results.items():
        loss_diff, norm_diff = max_rel_diff(result["steps"], single)
        record(name, f"loss {loss_diff:.1e}, grad norm {norm_diff:.1e}, {result['seconds']:.1f} s")
        if loss_diff > REL_TOL or norm_diff > REL_TOL:
            failures.append(f"{name}: {result['steps']} vs single process {single}")
    assert not failures, "\n".join(failures)


def test_two_rank_layouts_match_the_single_process(tmp_path, single_process, record_property):
    results = run_job(2, {name: BASE + extra for name, extra in TWO_RANKS.items()}, tmp_path)
    check(results, single_process, record_property)


def test_tp_x_pp_x_dp_on_eight_ranks_matches_the_single_process(tmp_path, single_process, record_property):
    results = run_job(8, {name: BASE + extra for name, extra in EIGHT_RANKS.items()}, tmp_path)
    check(results, single_process, record_property)
