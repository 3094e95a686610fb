"""``trainbench run`` on several processes: this node's workers, started and watched by torchrun's agent.

One ``trainbench run`` per node (as ``srun --ntasks-per-node=1`` starts it) runs torchrun's elastic
agent in-process (``elastic_launch``, what the ``torchrun`` command runs) with one worker per GPU
(``python -m trainbench.train.worker``). Where the node sits comes from the scheduler's environment:

- node count: ``SLURM_NNODES``, else ``NNODES``, else 1
- node rank: ``SLURM_NODEID``, else ``NODE_RANK``, else 0
- rendezvous: ``MASTER_ADDR:MASTER_PORT`` (torch's static rendezvous: node 0 hosts the store);
  a single node without them rendezvouses on a free local port, as ``torchrun --standalone``

Faults: the agent runs with no restarts. When a worker exits non-zero or is killed, the agent stops
the node's other workers (SIGTERM, then SIGKILL after its 30 s grace) and raises ``ChildFailedError``,
which names every failed rank with its exit code or signal and the exception ``@record`` saved. On
node 0 the launcher then marks the run's summary failed and names the rank, keeping every record
written before. A hung rank is bounded by the process-group timeout (``--dist-timeout``): the other
ranks' collectives time out, they exit with an error, and the same teardown follows.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainbench.config import Plan
from trainbench.errors import ConfigError
from trainbench.train import provenance
from trainbench.train.files import RunFiles, _is_job_out, _is_stdout
from trainbench.train.records import RunSummary

DEFAULT_DIST_TIMEOUT_S = 600  # process-group timeout: what bounds a hang (``--dist-timeout``)
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
TEARDOWN_GRACE_S = 30  # torch's agent: SIGTERM to the remaining workers, SIGKILL after this
MONITOR_INTERVAL_S = 0.5  # how often the agent polls its workers


@dataclass(frozen=True)
class NodeSpec:
    """This node's place in the job."""

    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def _env_int(environ: Mapping[str, str], names: tuple[str, ...], default: int) -> tuple[int, str | None]:
    for name in names:
        value = environ.get(name)
        if value:
            try:
                return int(value), name
            except ValueError:
                raise ConfigError(f"{name}={value!r} is not a whole number") from None
    return default, None


def node_spec(gpus: int | None, nproc_per_node: int | None, visible_gpus: int, environ: Mapping[str, str]) -> NodeSpec:
    """Where this node sits, from ``--gpus``, ``--nproc-per-node``, the visible GPUs and the environment.

    Without ``--nproc-per-node`` a node runs one process per visible GPU (one process on a CPU
    machine), or ``--gpus / nodes`` when ``--gpus`` is given; without ``--gpus`` the job has
    ``nodes x processes per node`` GPUs.
    """
    nnodes, nnodes_from = _env_int(environ, ("SLURM_NNODES", "NNODES"), 1)
    node_rank, rank_from = _env_int(environ, ("SLURM_NODEID", "NODE_RANK"), 0)
    if gpus is not None and gpus < 1:
        raise ConfigError(f"--gpus must be a positive whole number, got {gpus}")
    problems = []
    if nproc_per_node is None:
        nproc_per_node = gpus // nnodes if gpus else max(visible_gpus, 1)
    if gpus is None:
        gpus = nproc_per_node * nnodes
    where = f" ({nnodes_from}={nnodes})" if nnodes_from else ""
    if nproc_per_node < 1:
        problems.append(f"--nproc-per-node must be positive, got {nproc_per_node}")
    elif nproc_per_node * nnodes != gpus:
        problems.append(
            f"--gpus {gpus} must equal --nproc-per-node {nproc_per_node} x {nnodes} node(s){where}; "
            "a job of several nodes runs trainbench run once on each node"
        )
    if visible_gpus and nproc_per_node > visible_gpus:
        problems.append(f"{nproc_per_node} processes on this node but only {visible_gpus} GPUs are visible")
    if not 0 <= node_rank < nnodes:
        problems.append(f"node rank {node_rank} ({rank_from}) is outside the job's {nnodes} node(s)")
    addr = environ.get("MASTER_ADDR") or None
    port_text = environ.get("MASTER_PORT") or None
    port = None
    if port_text is not None:
        try:
            port = int(port_text)
        except ValueError:
            problems.append(f"MASTER_PORT={port_text!r} is not a port number")
    if nnodes > 1 and (addr is None or port_text is None):
        problems.append(
            f"a job of {nnodes} nodes needs MASTER_ADDR and MASTER_PORT (the rendezvous on node 0) in the environment"
        )
    if problems:
        raise ConfigError(problems)
    return NodeSpec(nnodes, node_rank, nproc_per_node, addr, port)


def worker_args(
    plan_path: Path,
    *,
    results_root: Path,
    run_id: str,
    node: NodeSpec,
    dist_timeout_s: float,
    progress: bool,
    profile: tuple[int, int] | None,
) -> list[str]:
    """What each worker runs after the Python interpreter."""
    args = ["-m", "trainbench.train.worker", "--plan", str(plan_path), "--results-dir", str(results_root),
            "--run-id", run_id, "--nodes", str(node.nnodes), "--dist-timeout", str(dist_timeout_s)]  # fmt: skip
    if progress:
        args.append("--progress")
    if profile:
        args += ["--profile", f"{profile[0]}:{profile[1]}"]
    return args


def launch_config(node: NodeSpec, run_id: str, log_dir: Path) -> object:
    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig

    if node.master_addr is not None and node.master_port is not None:
        backend, endpoint, configs = "static", f"{node.master_addr}:{node.master_port}", {"rank": node.node_rank}
    else:  # one node, nothing given: a store on a free local port (torchrun --standalone)
        backend, endpoint, configs = "c10d", "localhost:0", {}
    return LaunchConfig(
        min_nodes=node.nnodes,
        max_nodes=node.nnodes,
        nproc_per_node=node.nproc_per_node,
        run_id=run_id,
        rdzv_backend=backend,
        rdzv_endpoint=endpoint,
        rdzv_configs=configs,
        max_restarts=0,
        monitor_interval=MONITOR_INTERVAL_S,
        logs_specs=DefaultLogsSpecs(log_dir=str(log_dir)),
    )


@dataclass
class JobResult:
    exit_code: int
    status: str  # complete | failed | incomplete
    failure: str | None = None


def run_workers(
    plan: Plan,
    *,
    results_root: Path,
    run_id: str,
    node: NodeSpec,
    dist_timeout_s: float,
    progress: bool = False,
    profile: tuple[int, int] | None = None,
) -> JobResult:
    """Start this node's workers and wait for the whole job; on node 0, mark the summary of a failed job."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.WARNING)
    if node.nproc_per_node > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: no thread oversubscription
    with tempfile.TemporaryDirectory(prefix="trainbench-launch-") as tmp:
        plan_path = Path(tmp) / "plan.json"
        plan_path.write_text(json.dumps(plan.to_dict()))
        args = worker_args(plan_path, results_root=results_root, run_id=run_id, node=node,
                           dist_timeout_s=dist_timeout_s, progress=progress, profile=profile)  # fmt: skip
        config = launch_config(node, run_id, Path(tmp) / "logs")
        try:
            elastic_launch(config, sys.executable)(*args)  # type: ignore[arg-type]
        except ChildFailedError as exc:
            result = JobResult(EXIT_FAILED, "failed", describe_failures(exc.failures, node))
        except SignalException as exc:
            name = signal.Signals(exc.sigval).name
            result = JobResult(EXIT_INTERRUPTED, "incomplete", f"the launcher received {name} and stopped the workers")
        else:
            return JobResult(0, "complete")
    if node.node_rank == 0:
        mark_summary(plan, results_root, run_id, result)
    return result


def describe_failures(failures: Mapping[int, object], node: NodeSpec) -> str:
    """The failed ranks in words, the likeliest cause first: a rank killed by a signal other than the
    agent's SIGTERM (a crash, the OOM killer, a kill, or the agent's SIGKILL of a rank that ignored
    SIGTERM: a hung one), then one that raised something other than a communication error (the others
    noticing the first one's absence), then the earliest."""

    def key(item: tuple[int, object]) -> tuple[bool, bool, int, int]:
        rank, f = item
        exitcode = getattr(f, "exitcode", 0)
        killed = exitcode < 0 and -exitcode != signal.SIGTERM
        return (not killed, _is_comm_error(_message(f)), int(getattr(f, "timestamp", 0)), rank)

    ordered = sorted(failures.items(), key=key)
    parts = [_describe_one(rank, f, node) for rank, f in ordered]
    head = f"rank {ordered[0][0]} failed: {parts[0]}"
    if len(parts) > 1:
        head += "; then " + "; ".join(f"rank {r}: {p}" for (r, _), p in zip(ordered[1:], parts[1:], strict=True))
    return head


def _describe_one(rank: int, f: object, node: NodeSpec) -> str:
    exitcode = getattr(f, "exitcode", 0)
    local = getattr(f, "local_rank", "?")
    where = f"node {node.node_rank}, local rank {local}, pid {getattr(f, 'pid', '?')}"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name} ({where})"
    message = _message(f)
    detail = "" if "pytorch.org/docs" in message or not message else f": {message.strip().splitlines()[-1][:300]}"
    return f"exited with code {exitcode} ({where}){detail}"


def _message(f: object) -> str:
    """The exception a worker's ``@record`` saved (a string, or a dict holding it), or ''."""
    message = getattr(f, "message", "")
    if isinstance(message, dict):
        message = message.get("message", "")
    return str(message)


COMM_ERROR_WORDS = ("connection", "timed out", "timeout", "closed by peer", "reset by peer", "nccl", "gloo",
                    "distbackenderror", "broken pipe")  # fmt: skip


def _is_comm_error(message: str) -> bool:
    low = message.lower()
    return any(word in low for word in COMM_ERROR_WORDS)


def mark_summary(plan: Plan, results_root: Path, run_id: str, result: JobResult) -> None:
    """Record the job's end in its summary, keeping what rank 0 wrote: every step record stays; the status
    becomes the job's (failed when any rank failed), and the failure names the rank, followed by what rank
    0 recorded itself. A summary is created if rank 0 never wrote one."""
    files = RunFiles(results_root, plan.dtype, plan.model.name, plan.gpus, run_id)
    if files.summary_path.exists():
        summary = RunSummary.read(files.summary_path)
    else:
        files.directory.mkdir(parents=True, exist_ok=True)
        summary = RunSummary(status="running", run_id=run_id, config=plan.to_dict(), provenance={},
                             started_at=provenance.now_iso())  # fmt: skip
    if result.status == "incomplete" and summary.status != "running":
        return  # rank 0 recorded the interruption itself
    rank0 = summary.failure if summary.status != "complete" else None
    summary.failure = result.failure or ""
    if rank0 and rank0 not in summary.failure:
        summary.failure += f" (rank 0 recorded: {rank0})"
    summary.status = result.status
    summary.ended_at = provenance.now_iso()
    if files.steps_path.exists():
        summary.steps_done = sum(1 for line in files.steps_path.read_text().splitlines() if line.strip())
    summary.write(files.summary_path)
    line = f"trainbench: run {summary.status}: {summary.failure}"
    if _is_stdout(files.out_path) or _is_job_out(files.out_path):  # a Slurm job's .out: as rank 0 wrote it
        print(line, flush=True)
    else:
        with files.out_path.open("a") as out:
            out.write(line + "\n")
