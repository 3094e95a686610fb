"""Campaign planning and the thin executor, with sbatch stood in by a recorded fake."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.launch.helpers import request
from trainbench.errors import ConfigError
from trainbench.launch.jobs import read_records
from trainbench.launch.submit import plan_jobs, submit_jobs

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def fake_sbatch(refuse_after: int | None = None):
    calls: list[list[str]] = []

    def run(argv):
        calls.append(list(argv))
        if refuse_after is not None and len(calls) > refuse_after:
            return subprocess.CompletedProcess(argv, 1, "", "sbatch: error: Invalid account or account/partition\n")
        return subprocess.CompletedProcess(argv, 0, f"{1000 + len(calls)};cluster\n", "")

    run.calls = calls
    return run


def test_campaign_is_every_cell_times_repeats_each_its_own_job():
    jobs = plan_jobs(request(gpus=[576, 1152, 2304], dtypes=["bf16", "fp8"], repeats=3))
    assert len(jobs) == 18
    cells = {(j.spec.plan.dtype, j.spec.plan.gpus) for j in jobs}
    assert cells == {(d, g) for d in ("bf16", "fp8") for g in (576, 1152, 2304)}
    assert sorted({j.repeat for j in jobs}) == [1, 2, 3]
    assert {j.spec.plan.train.gbs for j in jobs if j.spec.plan.gpus == 2304} == {1008}


def test_every_problem_of_every_cell_at_once_before_anything_is_submitted():
    with pytest.raises(ConfigError) as err:
        plan_jobs(request(gpus=[576, 100, 12], dtypes=["fp8", "fp4"], job_name="bad name"))
    text = str(err.value)
    assert "fp4" in text and "100" in text and "12" in text and "job name" in text


def test_cells_given_twice_are_refused():
    with pytest.raises(ConfigError, match="--repeats"):
        plan_jobs(request(gpus=[576, 576]))


def test_submit_records_each_job_with_its_own_results(tmp_path):
    run = fake_sbatch()
    jobs = plan_jobs(request(stage_path=str(tmp_path), gpus=[576, 1152], repeats=2))
    records = submit_jobs(jobs, run, NOW)
    assert [r.job_id for r in records] == ["1001", "1002", "1003", "1004"]
    assert all(call[:2] == ["sbatch", "--parsable"] for call in run.calls)
    assert read_records(tmp_path) == records
    r = records[2]
    assert (r.gpus, r.nodes, r.repeat, r.repeats) == (1152, 144, 1, 2)
    assert r.out == f"{tmp_path}/results/24.11/fp8/405b/1152/log-trainbench_llama3.1_405b_1152_1003.out"
    assert r.err.endswith("_1003.err") and Path(r.run_dir).is_dir()
    scripts = {Path(c[-1]) for c in run.calls}
    assert len(scripts) == 4 and all(p.parent == tmp_path / "trainbench" / "scripts" for p in scripts)
    assert Path(r.script).read_text().startswith("#!/bin/bash") and r.campaign == "20250102T030405Z"


def test_profile_runs_are_kept_apart_from_performance_results(tmp_path):
    [job] = plan_jobs(request(stage_path=str(tmp_path), profile=True))
    [rec] = submit_jobs([job], fake_sbatch(), NOW)
    assert rec.run_dir == f"{tmp_path}/profile/24.11/fp8/405b/576" and rec.profile
    assert rec.job_name.endswith("_profile")
    assert "--profile 20:30" in Path(rec.script).read_text()


def test_a_refusal_stops_the_campaign_and_names_what_was_submitted(tmp_path):
    jobs = plan_jobs(request(stage_path=str(tmp_path), gpus=[576, 1152]))
    with pytest.raises(ConfigError) as err:
        submit_jobs(jobs, fake_sbatch(refuse_after=1), NOW)
    assert "Invalid account" in str(err.value) and "already submitted: 1001" in str(err.value)
    assert [r.job_id for r in read_records(tmp_path)] == ["1001"]
    assert len(list((tmp_path / "trainbench" / "scripts").iterdir())) == 1  # the refused script is not kept
