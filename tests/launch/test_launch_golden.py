"""Rendered sbatch scripts against reviewed golden files, and every cell of the recipe's 405B table."""

from __future__ import annotations

import re

import pytest

from tests.launch.helpers import STAGE, check_golden, one_job, request
from trainbench.launch.sbatch import render
from trainbench.launch.submit import dry_run_text, plan_jobs
from trainbench.recipe import tables

GOLDEN_CASES = {
    # The recipe's headline cell as a recipe user runs it: container, account, partition.
    "405b_fp8_576_container.sbatch": dict(
        account="llm_perf", partition="batch", container_image=f"{STAGE}/nvidia+nemo+24.09.sqsh"
    ),
    # Same scale in bf16, in the submitting Python environment, no account/partition.
    "405b_bf16_1152_python.sbatch": dict(dtypes=["bf16"], gpus=[1152]),
    # Largest scale, image by URI, results outside the stage dir, extra mounts and options.
    "405b_fp8_2304_uri.sbatch": dict(
        gpus=[2304],
        container_image="nvcr.io#nvidia/nemo:24.09",
        results_dir="/scratch/results",
        container_mounts=["/datasets:/data:ro"],
        sbatch_args=["--qos=high", "--gres=gpu:8"],
        srun_args=["--mpi=none"],
        time_limit="2:00:00",
    ),
    # Proxy scale, cluster without GPU gres (SLURM_GPUS_PER_NODE=null), overrides.
    "405b_bf16_32_proxy_nogres.sbatch": dict(
        dtypes=["bf16"], gpus=[32], request_gpus=False, overrides=["train.gbs=252"], steps=20
    ),
    # The profiling variant: its own results root, its own job name, --profile 20:30.
    "405b_fp8_576_profile.sbatch": dict(profile=True, account="llm_perf"),
    # One 8-GPU node of the 8B model.
    "8b_bf16_8_single_node.sbatch": dict(models=["8b"], dtypes=["bf16"], gpus=[8], partition="dgx"),
    # The CPU job of the real-Slurm tests: 2 nodes x 2 processes, extra environment.
    "tiny_bf16_4_cpu.sbatch": dict(
        models=["tiny"],
        dtypes=["bf16"],
        gpus=[4],
        gpus_per_node=2,
        gpu_type="cpu",
        steps=3,
        env={"OMP_NUM_THREADS": "1"},
        singleton=False,
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_rendered_script_matches_golden(name):
    check_golden(name, render(one_job(**GOLDEN_CASES[name]).spec))


def test_campaign_dry_run_matches_golden():
    jobs = plan_jobs(request(gpus=[576, 1152], dtypes=["bf16", "fp8"], repeats=3))
    check_golden("405b_campaign_dry_run.txt", dry_run_text(jobs))


RECIPE_405B = sorted({(r.dtype, r.gpus, r.layers, r.gbs) for r in tables.references() if r.model == "405b"})


@pytest.mark.parametrize(("dtype", "gpus", "layers", "gbs"), RECIPE_405B)
def test_every_405b_recipe_cell_renders_as_the_recipe_launches_it(dtype, gpus, layers, gbs):
    script = render(one_job(dtypes=[dtype], gpus=[gpus], account="acct", partition="batch").spec)
    nodes = gpus // 8
    sbatch = re.findall(r"^#SBATCH (.*)$", script, re.M)
    assert f"--nodes={nodes}" in sbatch and "--gpus-per-node=8" in sbatch
    assert {"--exclusive", "--mem=0", "--time=1:00:00", "--dependency=singleton"} <= set(sbatch)
    assert {"--account=acct", "--partition=batch", "--ntasks-per-node=1"} <= set(sbatch)
    out = f"--output={STAGE}/results/24.11/{dtype}/405b/{gpus}/log-trainbench_llama3.1_405b_{gpus}_%j.out"
    assert out in sbatch
    assert f"DTYPE={dtype} MODEL_SIZE=405b sbatch -N {nodes} launch.sh" in script
    assert f"GBS {gbs}, MBS 1, {layers} layers" in script
    assert f"--model 405b --gpus {gpus} --dtype {dtype} --gpu-type h100 --steps 50" in script
    assert "export NCCL_P2P_NET_CHUNKSIZE=262144" in script
