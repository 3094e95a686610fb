"""``trainbench submit`` and ``trainbench jobs`` against a real Slurm cluster (two nodes on this machine).

Most jobs here run a stand-in for ``python -m trainbench run`` (passed as ``--python``) that reports what
each node's task was given; the end-to-end test runs the real ``trainbench run`` on the tiny preset.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from trainbench.launch.jobs import history_path
from trainbench.train.records import parse_provenance_line

pytestmark = pytest.mark.slow

# Prints, per node, the contract's environment and every argument it got; FAKE_MODE picks the ending.
FAKE_RUN = """#!/bin/bash
n=$SLURM_NODEID
echo "node$n env=nnodes=$SLURM_NNODES master=$MASTER_ADDR port=$MASTER_PORT hf=${HF_TOKEN:+set}"
echo "node$n out=$TRAINBENCH_JOB_OUT"
echo "node$n note=$NOTE"
for a in "$@"; do echo "node$n arg=$a"; done
case "$FAKE_MODE" in
fail) [ "$n" = 1 ] && exit 3 ;;
sleep) sleep 300 ;;
esac
exit 0
"""
HOSTILE = "$(touch {m}) `touch {m}`; touch {m} #1 \"q\" 'q'"
CELL = ["--model", "tiny", "--dtype", "bf16", "--gpus", "4", "--gpus-per-node", "2", "--gpu-type", "cpu"]


@pytest.fixture
def fake_run(tmp_path) -> Path:
    path = tmp_path / "fake-run"
    path.write_text(FAKE_RUN)
    path.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return path


def submit(cluster, stage: Path, *extra: str, env=None, own_process=False) -> dict:
    args = ["submit", *CELL, "--steps", "3", "--stage-path", str(stage), "--json", *extra]
    proc = cluster.trainbench(*args, env=env, own_process=own_process)
    [record] = json.loads(proc.stdout)
    return record


def jobs(cluster, stage: Path, job_id: str) -> dict:
    [row] = json.loads(cluster.trainbench("jobs", "--stage-path", str(stage), "--json", job_id).stdout)
    return row


def node_lines(out: str, node: int, key: str) -> list[str]:
    prefix = f"node{node} {key}="
    return [line.removeprefix(prefix) for line in out.splitlines() if line.startswith(prefix)]


def test_two_node_job_gets_the_contract_and_hostile_values_stay_literal(cluster, tmp_path, fake_run):
    marker = tmp_path / "pwned"
    hostile = HOSTILE.format(m=marker)
    stage = tmp_path / f"stage {hostile}"  # lands in #SBATCH --output and in the shell body
    secret = "hf_not_for_files_0123"
    rec = submit(cluster, stage, "--python", str(fake_run), "--env", f"NOTE={hostile}", f"model.name={hostile}",
                 "-A", "perf", "-J", "tb-contract", env={"HF_TOKEN": secret}, own_process=True)  # fmt: skip
    job_id = rec["job_id"]
    state = cluster.wait(job_id)
    row = jobs(cluster, stage, job_id)
    out_path = Path(rec["out"])
    out = out_path.read_text() if out_path.exists() else "(no .out)"
    assert (state.state, row["state"], row["exit_code"]) == ("completed", "completed", 0), out
    assert row["state_source"] == "scontrol"  # no accounting on this cluster: the fallback answers

    # Slurm put the log exactly where the recipe's layout says, hostile characters and all.
    expected = stage / "results" / "24.11" / "bf16" / "tiny" / "4" / f"log-trainbench_llama3.1_tiny_4_{job_id}.out"
    assert out_path == expected and expected.is_file() and expected.with_suffix(".err").is_file()
    assert f"StdOut={expected}" in cluster.slurm("scontrol", "show", "job", job_id)
    assert not marker.exists()

    # One task per node, each knowing its node rank; everyone meets at the first node.
    port = 20000 + int(job_id) % 20000
    for node in (0, 1):
        assert node_lines(out, node, "env") == [f"nnodes=2 master=node1 port={port} hf=set"]
        assert node_lines(out, node, "out") == [str(expected)]
        assert node_lines(out, node, "note") == [hostile]
        args = node_lines(out, node, "arg")
        assert args[:4] == ["-m", "trainbench", "run", "--model"]
        joined = " ".join(args)
        assert "--gpus 4 --dtype bf16 --gpu-type cpu --steps 3" in joined
        assert f"--run-id {job_id} --nproc-per-node 2" in joined
        assert args[args.index("--results-dir") + 1] == f"{stage}/results"
        assert args[-1] == f"model.name={hostile}"

    # The secret reached the job through the environment, and no file trainbench wrote.
    written = [Path(rec["script"]), history_path(stage), expected, expected.with_suffix(".err")]
    assert all(secret not in p.read_text() for p in written)


def test_failing_job_shows_failed_with_its_exit_code(cluster, tmp_path, fake_run):
    stage = tmp_path / "stage"
    rec = submit(cluster, stage, "--python", str(fake_run), "--env", "FAKE_MODE=fail", "-J", "tb-fail")
    assert cluster.wait(rec["job_id"]).state == "failed"
    row = jobs(cluster, stage, rec["job_id"])
    assert (row["state"], row["exit_code"], row["signal"]) == ("failed", 3, 0)
    table = cluster.trainbench("jobs", "--stage-path", str(stage)).stdout.splitlines()
    assert table[1].split()[:3] == [rec["job_id"], "failed", "3"] and table[1].endswith(rec["out"])


def test_cancelled_job_shows_cancelled(cluster, tmp_path, fake_run):
    stage = tmp_path / "stage"
    rec = submit(cluster, stage, "--python", str(fake_run), "--env", "FAKE_MODE=sleep", "-J", "tb-cancel")
    cluster.wait(rec["job_id"], states={"running"}, timeout_s=60)
    cluster.slurm("scancel", rec["job_id"])
    assert cluster.wait(rec["job_id"]).state == "cancelled"
    row = jobs(cluster, stage, rec["job_id"])
    assert row["state"] == "cancelled" and row["slurm_state"] == "CANCELLED"


def test_campaign_submits_each_cell_and_repeat_as_its_own_job(cluster, tmp_path, fake_run):
    stage = tmp_path / "stage"
    proc = cluster.trainbench("submit", "--model", "tiny", "--dtype", "bf16", "--gpus", "2,4", "--gpus-per-node", "2",
                              "--gpu-type", "cpu", "--steps", "3", "--repeats", "2", "--stage-path", str(stage),
                              "--python", str(fake_run), "--json")  # fmt: skip
    records = json.loads(proc.stdout)
    assert [(r["gpus"], r["nodes"], r["repeat"]) for r in records] == [(2, 1, 1), (2, 1, 2), (4, 2, 1), (4, 2, 2)]
    for r in records:
        assert cluster.wait(r["job_id"]).state == "completed"
    rows = json.loads(cluster.trainbench("jobs", "--stage-path", str(stage), "--json").stdout)
    assert [r["state"] for r in rows] == ["completed"] * 4
    assert len({r["out"] for r in rows}) == 4 and all(Path(r["out"]).is_file() for r in rows)
    one_node = Path(records[0]["out"]).read_text()
    assert not re.search(r"^node1 ", one_node, re.M) and "node0 arg=--nproc-per-node" in one_node


TORCHRUN_AS_RUN = """#!/bin/bash
# Joins the job as trainbench run will: torchrun with this node's rank and the script's rendezvous.
exec {python} -m torch.distributed.run --nnodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" \\
    --nproc-per-node 2 --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" {probe}
"""
ALL_REDUCE = """import os, sys, torch, torch.distributed as dist
dist.init_process_group("gloo")
x = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(x)
sys.stdout.write(f"rank {dist.get_rank()} of {dist.get_world_size()} node {os.environ['SLURM_NODEID']} "
                 f"local {os.environ['LOCAL_RANK']} sum {int(x.item())}\\n")  # one write: workers share the .out
sys.stdout.flush()
dist.destroy_process_group()
"""


def test_the_scripts_rendezvous_joins_torchrun_across_both_nodes(cluster, tmp_path):
    probe = tmp_path / "all_reduce.py"
    probe.write_text(ALL_REDUCE)
    runner = tmp_path / "torchrun-as-run"
    runner.write_text(TORCHRUN_AS_RUN.format(python=sys.executable, probe=probe))
    runner.chmod(stat.S_IRWXU)
    stage = tmp_path / "stage"
    rec = submit(cluster, stage, "--python", str(runner), "-J", "tb-rendezvous", "--env", "OMP_NUM_THREADS=1")
    state = cluster.wait(rec["job_id"], timeout_s=120)
    out = Path(rec["out"]).read_text()
    assert state.state == "completed", out + Path(rec["err"]).read_text()[-3000:]
    lines = sorted(line for line in out.splitlines() if line.startswith("rank "))
    assert lines == [f"rank {r} of 4 node {r // 2} local {r % 2} sum 10" for r in range(4)]


def test_setup_sees_the_slurm_commands(cluster, tmp_path):
    out = cluster.trainbench("setup", "--stage-path", str(tmp_path / "stage")).stdout
    for program in ("sbatch", "srun", "squeue", "scontrol"):
        assert re.search(rf"^ok\s+{program}\s", out, re.M), out


def test_tiny_preset_trains_on_two_nodes_end_to_end(cluster, tmp_path):
    helped = subprocess.run([sys.executable, "-m", "trainbench", "run", "--help"], capture_output=True, text=True)
    if "--nproc-per-node" not in helped.stdout:
        pytest.skip("trainbench run has no --nproc-per-node yet: it cannot join a multi-node job")
    stage = tmp_path / "stage"
    rec = submit(cluster, stage, "-J", "tb-e2e", "--env", "OMP_NUM_THREADS=1", "--time", "10")
    job_id = rec["job_id"]
    state = cluster.wait(job_id, timeout_s=180)
    out_path = Path(rec["out"])
    out = out_path.read_text()
    err = out_path.with_suffix(".err").read_text()
    assert state.state == "completed", f"{state}\n--- .out\n{out}\n--- .err\n{err[-4000:]}"
    assert jobs(cluster, stage, job_id)["exit_code"] == 0

    run_dir = out_path.parent
    stem = f"log-trainbench_llama3.1_tiny_4_{job_id}"
    assert run_dir == stage / "results" / "24.11" / "bf16" / "tiny" / "4"
    assert sorted(p.name for p in run_dir.glob(f"{stem}*.out")) == [f"{stem}.out"]  # one log, the job's
    first = next(line for line in out.splitlines() if line.strip())
    provenance = parse_provenance_line(first)
    assert provenance.get("MODEL_SIZE") == "tiny" and provenance.get("DTYPE") == "bf16", first
    assert len(re.findall(r"train_step_timing in s=", out)) == 3
    steps = (run_dir / f"{stem}.steps.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in steps] == [1, 2, 3]
    summary = json.loads((run_dir / f"{stem}.summary.json").read_text())
    assert (summary["status"], summary["steps_done"], summary["run_id"]) == ("complete", 3, job_id)
    assert summary["config"]["gpus"] == 4
