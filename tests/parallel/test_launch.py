"""``trainbench run`` on several processes: where a node sits, the records of a real run, and faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.parallel.harness import ROOT, free_port, reference
from trainbench.errors import ConfigError
from trainbench.recipe.resolve import resolve
from trainbench.train.launch import (
    TEARDOWN_GRACE_S,
    JobResult,
    NodeSpec,
    describe_failures,
    mark_summary,
    node_spec,
    worker_args,
)
from trainbench.train.records import RunSummary, StepRecord, parse_provenance_line

CLI = [sys.executable, "-m", "trainbench", "run", "--model", "tiny", "--no-progress"]


# ----- where a node sits (pure) -------------------------------------------------------------------


def test_one_process_per_visible_gpu_by_default_and_one_on_a_cpu():
    assert node_spec(None, None, 8, {}) == NodeSpec(nnodes=1, node_rank=0, nproc_per_node=8)
    assert node_spec(None, None, 0, {}).world_size == 1
    assert node_spec(4, None, 0, {}).nproc_per_node == 4  # CPU: --gpus processes
    assert node_spec(4, None, 8, {}).nproc_per_node == 4


def test_a_node_of_a_slurm_job_takes_its_place_from_the_environment():
    env = {"SLURM_NNODES": "4", "SLURM_NODEID": "2", "MASTER_ADDR": "node001", "MASTER_PORT": "24242",
           "NNODES": "9", "NODE_RANK": "7"}  # fmt: skip  # Slurm's names win over torchrun's
    node = node_spec(32, 8, 8, env)
    assert node == NodeSpec(nnodes=4, node_rank=2, nproc_per_node=8, master_addr="node001", master_port=24242)
    assert node_spec(None, None, 8, env).world_size == 32
    plain = node_spec(16, None, 8, {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert (plain.nnodes, plain.node_rank, plain.nproc_per_node) == (2, 1, 8)


@pytest.mark.parametrize(
    ("gpus", "nproc", "visible", "env", "words"),
    [
        (12, 8, 8, {"SLURM_NNODES": "2", "SLURM_NODEID": "0", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "must equal"),
        (16, 16, 8, {}, "only 8 GPUs"),
        (16, 8, 8, {"NNODES": "2", "NODE_RANK": "0"}, "MASTER_ADDR and MASTER_PORT"),
        (16, 8, 8, {"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "outside"),
        (8, 8, 8, {"SLURM_NNODES": "x"}, "not a whole number"),
        (0, None, 0, {}, "--gpus must be a positive whole number, got 0"),
        (-2, None, 8, {}, "--gpus must be a positive whole number, got -2"),
    ],
)
def test_an_impossible_node_layout_is_refused_with_its_numbers(gpus, nproc, visible, env, words):
    with pytest.raises(ConfigError, match=words):
        node_spec(gpus, nproc, visible, env)


def test_workers_get_the_plan_the_run_id_and_the_timeout():
    node = NodeSpec(nnodes=2, node_rank=1, nproc_per_node=4)
    args = worker_args(Path("/t/plan.json"), results_root=Path("/r"), run_id="42", node=node, dist_timeout_s=30,
                       progress=False, profile=(20, 30))  # fmt: skip
    assert args[:2] == ["-m", "trainbench.train.worker"]
    assert " ".join(args[2:]) == (
        "--plan /t/plan.json --results-dir /r --run-id 42 --nodes 2 --dist-timeout 30 --profile 20:30"
    )


def failure(local_rank, exitcode, message="", timestamp=100):
    return SimpleNamespace(local_rank=local_rank, pid=1000 + local_rank, exitcode=exitcode, message=message,
                           timestamp=timestamp)  # fmt: skip


def test_the_failure_names_the_killed_rank_before_the_ranks_that_noticed():
    node = NodeSpec(nnodes=2, node_rank=1, nproc_per_node=2)
    text = describe_failures(
        {2: failure(0, 1, "RuntimeError: [gloo] Connection closed by peer", 99), 3: failure(1, -9, "", 101)}, node
    )
    assert text.startswith("rank 3 failed: killed by SIGKILL (node 1, local rank 1, pid 1001)")
    assert "then rank 2: exited with code 1" in text and "Connection closed by peer" in text
    # Without a signal, an error of its own beats a communication error, whatever the clock says.
    text = describe_failures({0: failure(0, 1, "DistBackendError: timed out", 1), 1: failure(1, 1, "ValueError: x", 5)},
                             node)  # fmt: skip
    assert text.startswith("rank 1 failed: exited with code 1") and "ValueError: x" in text


def test_a_failed_job_marks_the_summary_keeps_the_records_and_says_which_rank(tmp_path):
    plan = resolve("tiny", 2, "bf16", "cpu", ["train.steps=5"])
    stem = tmp_path / "24.11" / "bf16" / "tiny" / "2" / "log-trainbench_llama3.1_tiny_2_x"
    stem.parent.mkdir(parents=True)
    Path(f"{stem}.steps.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    Path(f"{stem}.out").write_text("GSW: ...\nline 1\nline 2\n")
    RunSummary(status="failed", run_id="x", config={}, provenance={}, started_at="t",
               failure="RuntimeError: Connection closed by peer").write(Path(f"{stem}.summary.json"))  # fmt: skip
    mark_summary(plan, tmp_path, "x", JobResult(1, "failed", "rank 1 failed: killed by SIGKILL"))
    summary = RunSummary.read(Path(f"{stem}.summary.json"))
    assert summary.status == "failed" and summary.steps_done == 2
    expected = "rank 1 failed: killed by SIGKILL (rank 0 recorded: RuntimeError: Connection closed by peer)"
    assert summary.failure == expected
    assert Path(f"{stem}.out").read_text().splitlines()[-1].startswith("trainbench: run failed: rank 1 failed")
    assert Path(f"{stem}.steps.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'


def test_under_slurm_the_failure_line_goes_to_the_jobs_stdout_which_is_the_out_file(tmp_path, monkeypatch, capsys):
    plan = resolve("tiny", 2, "bf16", "cpu", ["train.steps=5"])
    out = tmp_path / "24.11" / "bf16" / "tiny" / "2" / "log-trainbench_llama3.1_tiny_2_7.out"
    out.parent.mkdir(parents=True)
    out.write_text("GSW: ...\n")
    monkeypatch.setenv("TRAINBENCH_JOB_OUT", str(out))
    mark_summary(plan, tmp_path, "7", JobResult(1, "failed", "rank 3 failed: killed by SIGKILL"))
    assert capsys.readouterr().out == "trainbench: run failed: rank 3 failed: killed by SIGKILL\n"
    assert out.read_text() == "GSW: ...\n"  # Slurm appends stdout itself


def test_a_job_that_died_before_rank_0_wrote_anything_still_gets_a_failed_summary(tmp_path):
    plan = resolve("tiny", 2, "bf16", "cpu", ["train.steps=5"])
    mark_summary(plan, tmp_path, "early", JobResult(1, "failed", "rank 0 failed: killed by SIGSEGV"))
    (path,) = tmp_path.rglob("*.summary.json")
    summary = RunSummary.read(path)
    assert summary.status == "failed" and summary.steps_done == 0 and "SIGSEGV" in summary.failure
    assert summary.config["gpus"] == 2


# ----- real jobs (torchrun's agent, gloo) -----------------------------------------------------------


def run_files(root: Path) -> tuple[Path, Path, Path]:
    (summary,) = root.rglob("*.summary.json")
    stem = str(summary).removesuffix(".summary.json")
    return Path(stem + ".out"), Path(stem + ".steps.jsonl"), summary


def env_without_scheduler() -> dict[str, str]:
    drop = {"SLURM_NNODES", "SLURM_NODEID", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"}
    return {k: v for k, v in os.environ.items() if k not in drop} | {"PYTHONWARNINGS": "ignore"}


@pytest.mark.slow
def test_tp_x_pp_on_four_processes_end_to_end_gives_the_records_and_the_single_process_loss(tmp_path):
    overrides = ["parallel.tp=2", "parallel.pp=2", "parallel.sequence_parallel=true", "train.gbs=4"]
    cmd = [*CLI, "--nproc-per-node", "4", "--steps", "3", "--results-dir", str(tmp_path), "--run-id", "e2e"]
    done = subprocess.run(cmd + overrides, cwd=ROOT, env=env_without_scheduler(), capture_output=True, text=True,
                          timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out_path, steps_path, summary_path = run_files(tmp_path)
    assert out_path.parent == tmp_path / "24.11" / "bf16" / "tiny" / "4"
    lines = out_path.read_text().splitlines()
    gsw = parse_provenance_line(lines[0])
    assert gsw["JOB_NUM_NODES"] == "1" and gsw["GPUS_PER_NODE"] == "4"
    assert sum("train_step_timing in s=" in line for line in lines) == 3  # one line per step, rank 0 only
    records = [StepRecord.from_json(line) for line in steps_path.read_text().splitlines()]
    summary = RunSummary.read(summary_path)
    assert summary.status == "complete" and summary.provenance["world_size"] == 4
    assert summary.config["parallel"]["tp"] == 2 and summary.config["dp"] == 1
    single = reference(["train.gbs=4", "train.steps=3"])
    assert [r.loss for r in records] == pytest.approx([s[0] for s in single], rel=1e-5)
    assert [r.grad_norm for r in records] == pytest.approx([s[1] for s in single], rel=1e-5)
    assert "complete" in done.stderr  # the summary table, printed by the launcher


@pytest.mark.slow
def test_two_nodes_meet_at_the_rendezvous_the_environment_names(tmp_path):
    port = free_port()
    procs = []
    for node in (0, 1):
        env = env_without_scheduler() | {"NNODES": "2", "NODE_RANK": str(node), "MASTER_ADDR": "127.0.0.1",
                                         "MASTER_PORT": str(port)}  # fmt: skip
        cmd = [*CLI, "--gpus", "2", "--nproc-per-node", "1", "--steps", "2", "--results-dir", str(tmp_path),
               "--run-id", "nodes", "train.gbs=2"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    out_path, _, summary_path = run_files(tmp_path)  # one set of files: node 0's rank 0 writes them
    gsw = parse_provenance_line(out_path.read_text().splitlines()[0])
    assert gsw["JOB_NUM_NODES"] == "2" and gsw["GPUS_PER_NODE"] == "1"
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "complete" and summary["provenance"]["world_size"] == 2 and summary["config"]["dp"] == 2


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def worker_of_rank(parent: int, rank: int) -> int:
    for pid in descendants(parent):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"trainbench.train.worker" in cmdline and f"RANK={rank}".encode() in env:
            return pid
    raise AssertionError(f"no worker of rank {rank} under pid {parent}")


@pytest.mark.slow
def test_a_rank_killed_mid_run_ends_the_job_in_bounded_time_and_the_summary_names_it(tmp_path):
    cmd = [*CLI, "--gpus", "2", "--steps", "1000", "--results-dir", str(tmp_path), "--run-id", "kill",
           "--dist-timeout", "60", "train.gbs=2"]  # fmt: skip
    log = (tmp_path / "launcher.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env_without_scheduler(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            steps = list(tmp_path.rglob("*.steps.jsonl"))
            if steps and len(steps[0].read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "launcher.log").read_text()[-3000:]
        victim = worker_of_rank(proc.pid, 1)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        code = proc.wait(timeout=TEARDOWN_GRACE_S + 60)
        took = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert code == 1
    assert took < TEARDOWN_GRACE_S + 10  # the documented bound: agent poll + SIGTERM grace (on CPU: seconds)
    out_path, steps_path, summary_path = run_files(tmp_path)
    done = [StepRecord.from_json(line).step for line in steps_path.read_text().splitlines()]
    assert len(done) >= 2 and done == list(range(1, len(done) + 1))  # every record up to the kill is kept
    summary = RunSummary.read(summary_path)
    assert summary.status == "failed" and summary.steps_done == len(done)
    assert summary.failure.startswith("rank 1 failed: killed by SIGKILL (node 0, local rank 1")
    assert out_path.read_text().splitlines()[-1].startswith("trainbench: run failed: rank 1 failed")
