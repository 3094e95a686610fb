"""The recipe's environment variables as submit defaults; the command line wins."""

from __future__ import annotations

import pytest

from tests.launch.helpers import STAGE
from trainbench.cli import build_parser
from trainbench.errors import ConfigError
from trainbench.launch.cli import request_from_args
from trainbench.launch.env import RECIPE_JOB_ENV, defaults_from_env, job_environment, merge_overrides
from trainbench.launch.submit import plan_jobs

RECIPE_SHELL = {
    "DTYPE": "FP8",  # the recipe's DTYPE is case-insensitive
    "MODEL_SIZE": "405b",
    "STAGE_PATH": STAGE,
    "SLURM_ACCOUNT": "llm_perf",
    "SLURM_PARTITION": "batch",
    "SLURM_GPUS_PER_NODE": "8",
    "MAX_STEPS": "30",
    "TP": "4",
    "VP": "null",
    "GBS": "504",
    "NUM_LAYERS": "63",
}


def submit_request(argv, environ):
    return request_from_args(build_parser().parse_args(["submit", *argv]), environ)


def test_recipe_shell_gives_every_default():
    req = submit_request(["--gpus", "576"], RECIPE_SHELL)
    assert (req.models, req.dtypes, req.gpus, req.stage_path) == (["405b"], ["fp8"], [576], STAGE)
    assert (req.account, req.partition, req.gpus_per_node, req.request_gpus) == ("llm_perf", "batch", 8, True)
    assert req.steps == 30
    assert req.overrides == ["parallel.tp=4", "parallel.vp=null", "train.gbs=504", "model.layers=63"]


def test_command_line_wins_over_the_environment():
    argv = ["--gpus", "1152", "--model", "70b", "--dtype", "bf16", "--stage-path", "/other", "-A", "a2", "-p", "p2",
            "--gpus-per-node", "4", "--steps", "10", "parallel.tp=8", "train.gbs=64"]  # fmt: skip
    req = submit_request(argv, RECIPE_SHELL)
    assert (req.models, req.dtypes, req.stage_path, req.account, req.partition) == (
        ["70b"],
        ["bf16"],
        "/other",
        "a2",
        "p2",
    )
    assert (req.gpus_per_node, req.steps) == (4, 10)
    assert req.overrides == ["parallel.vp=null", "model.layers=63", "parallel.tp=8", "train.gbs=64"]


def test_train_steps_on_the_command_line_beats_max_steps_and_zero_gpus_per_node_is_refused():
    req = submit_request(["--gpus", "576", "train.steps=12"], RECIPE_SHELL)
    assert req.steps is None and req.overrides[-1] == "train.steps=12"
    with pytest.raises(ConfigError, match="--gpus-per-node must be positive"):
        plan_jobs(submit_request(["--gpus", "576", "--gpus-per-node", "0"], RECIPE_SHELL))


def test_gpus_per_node_null_means_no_gpu_request_with_eight_per_node():
    d = defaults_from_env({"SLURM_GPUS_PER_NODE": "null"})
    assert (d.gpus_per_node, d.request_gpus) == (None, False)
    req = submit_request(["--gpus", "16", "--model", "8b"], {"SLURM_GPUS_PER_NODE": "null", "STAGE_PATH": "/s"})
    assert (req.gpus_per_node, req.request_gpus) == (8, False)


def test_dtype_defaults_to_fp8_as_the_recipe_and_model_is_required():
    assert submit_request(["--gpus", "8", "--model", "8b"], {"STAGE_PATH": "/s"}).dtypes == ["fp8"]
    with pytest.raises(ConfigError, match="MODEL_SIZE"):
        submit_request(["--gpus", "8"], {"STAGE_PATH": "/s"})
    with pytest.raises(ConfigError, match="STAGE_PATH"):
        submit_request(["--gpus", "8", "--model", "8b"], {})


def test_every_malformed_variable_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        defaults_from_env({"TP": "eight", "MAX_STEPS": "-1", "SLURM_GPUS_PER_NODE": "$(id)", "ENABLE_PROFILE": "maybe"})
    assert len(err.value.reasons) == 4
    for name in ("TP", "MAX_STEPS", "SLURM_GPUS_PER_NODE", "ENABLE_PROFILE"):
        assert name in str(err.value)


def test_enable_profile_and_empty_values():
    assert defaults_from_env({"ENABLE_PROFILE": "True"}).profile
    assert not defaults_from_env({"ENABLE_PROFILE": ""}).profile
    assert defaults_from_env({"TP": " ", "DTYPE": ""}).overrides == []


def test_merge_overrides_drops_environment_keys_set_again():
    assert merge_overrides(["parallel.tp=4", "train.gbs=8"], ["parallel.tp=2"]) == ["train.gbs=8", "parallel.tp=2"]


def test_job_environment_is_the_recipes_plus_model_specific_plus_user():
    assert job_environment("8b", {}) == RECIPE_JOB_ENV
    env = job_environment("405b", {"NCCL_DEBUG": "INFO", "PYTHONUNBUFFERED": "0"})
    assert env["NCCL_P2P_NET_CHUNKSIZE"] == "262144" and env["NCCL_DEBUG"] == "INFO"
    assert env["PYTHONUNBUFFERED"] == "0"  # the user's --env wins
