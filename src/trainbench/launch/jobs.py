"""Jobs trainbench submitted: a small local history in the stage directory, and their state from Slurm.

The history is ``<stage>/trainbench/jobs.jsonl``, one ``JobRecord`` per line, appended after each
successful ``sbatch``. It holds what a job was (cell, repeat, paths of its script and logs), never
its environment, so no secret can land there. States come from ``sacct`` when Slurm accounting is on,
else from ``scontrol show job`` (which knows jobs until the controller forgets them, ``MinJobAge``).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from trainbench.errors import ConfigError

HISTORY_FILE = "trainbench/jobs.jsonl"

# Slurm's job states, in the words trainbench shows.
_STATES = {
    "PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
    "RESV_DEL_HOLD": "pending", "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running",
    "RESIZING": "running", "SIGNALING": "running", "STAGE_OUT": "running", "SUSPENDED": "suspended",
    "STOPPED": "suspended", "COMPLETED": "completed", "FAILED": "failed", "NODE_FAIL": "failed",
    "BOOT_FAIL": "failed", "TIMEOUT": "timeout", "DEADLINE": "timeout", "CANCELLED": "cancelled",
    "OUT_OF_MEMORY": "out-of-memory", "PREEMPTED": "preempted", "REVOKED": "cancelled",
}  # fmt: skip
TERMINAL = frozenset({"completed", "failed", "timeout", "cancelled", "out-of-memory", "preempted"})

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a scheduler command; a missing program reads as exit 127, like the shell says it."""
    try:
        return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError:
        return subprocess.CompletedProcess(list(argv), 127, "", f"{argv[0]}: command not found")


@dataclass
class JobRecord:
    """One submitted job, as the history keeps it."""

    job_id: str
    submitted_at: str  # UTC, ISO 8601
    job_name: str
    model: str
    dtype: str
    gpus: int
    nodes: int
    repeat: int  # 1-based, of ``repeats``
    repeats: int
    profile: bool
    run_dir: str
    out: str  # the job's .out log
    err: str
    script: str
    campaign: str  # shared by every job of one submit command
    overrides: list[str] = field(default_factory=list)
    container_image: str | None = None

    @property
    def cell(self) -> str:
        return f"{self.model} {self.dtype} {self.gpus}" + (" profile" if self.profile else "")


def history_path(stage_path: str | Path) -> Path:
    return Path(stage_path) / HISTORY_FILE


def append_record(stage_path: str | Path, record: JobRecord) -> None:
    path = history_path(stage_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:  # one write per line: concurrent submits interleave whole lines
        f.write(json.dumps(asdict(record)) + "\n")


def read_records(stage_path: str | Path) -> list[JobRecord]:
    path = history_path(stage_path)
    if not path.exists():
        return []
    known = {f.name for f in fields(JobRecord)}
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            records.append(JobRecord(**{k: v for k, v in data.items() if k in known}))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"{path}, line {n}: not a job record ({exc}); fix or remove that line") from None
    return records


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # one of _STATES' values, or "unknown"
    slurm_state: str  # as Slurm says it, e.g. "CANCELLED by 0"
    exit_code: int | None = None
    signal: int | None = None
    source: str = "none"  # sacct | scontrol | none

    @property
    def exit_text(self) -> str:
        if self.exit_code is None:
            return "-"
        return f"{self.exit_code}" + (f" (signal {self.signal})" if self.signal else "")


def normalize_state(slurm_state: str) -> str:
    word = slurm_state.split()[0].rstrip("+") if slurm_state.strip() else ""
    return _STATES.get(word, word.lower() or "unknown")


def _exit(text: str) -> tuple[int | None, int | None]:
    m = re.fullmatch(r"(\d+):(\d+)", text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def parse_sacct(text: str) -> dict[str, JobState]:
    """``sacct -n -P -X -o JobIDRaw,State,ExitCode`` lines."""
    out = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[0].strip():
            continue
        code, sig = _exit(parts[2])
        job = parts[0].strip()
        out[job] = JobState(job, normalize_state(parts[1]), parts[1].strip(), code, sig, "sacct")
    return out


def parse_scontrol(text: str) -> dict[str, JobState]:
    """``scontrol show job -o`` lines (one job per line of ``Key=value`` fields)."""
    out = {}
    for line in text.splitlines():
        job = re.match(r"JobId=(\d+)", line)
        state = re.search(r"(?:^|\s)JobState=(\S+)", line)
        if not job or not state:
            continue
        code_field = re.search(r"(?:^|\s)ExitCode=(\S+)", line)
        code, sig = _exit(code_field.group(1)) if code_field else (None, None)
        out[job.group(1)] = JobState(
            job.group(1), normalize_state(state.group(1)), state.group(1), code, sig, "scontrol"
        )
    return out


def query_states(job_ids: Iterable[str], runner: Runner = run_command) -> dict[str, JobState]:
    """Each job's state: sacct for all at once when accounting answers, scontrol for what it did not."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return {}
    found: dict[str, JobState] = {}
    proc = runner(["sacct", "-n", "-P", "-X", "-o", "JobIDRaw,State,ExitCode", "-j", ",".join(ids)])
    if proc.returncode == 0:
        found.update({k: v for k, v in parse_sacct(proc.stdout).items() if k in ids})
    for job_id in ids:
        if job_id in found:
            continue
        proc = runner(["scontrol", "show", "job", "-o", job_id])
        state = parse_scontrol(proc.stdout).get(job_id) if proc.returncode == 0 else None
        found[job_id] = state or JobState(job_id, "unknown", _why_unknown(proc))
    return {job_id: found[job_id] for job_id in ids}


def _why_unknown(proc: subprocess.CompletedProcess[str]) -> str:
    if proc.returncode == 127:
        return "no scontrol here"
    if "Invalid job id" in proc.stderr:
        return "forgotten by slurmctld and not in accounting"
    return (proc.stderr.strip().splitlines() or ["scontrol failed"])[-1]


def table(records: Sequence[JobRecord], states: dict[str, JobState]) -> str:
    """The ``trainbench jobs`` listing: one line per job, newest last."""
    header = ("JOB", "STATE", "EXIT", "CELL", "REPEAT", "SUBMITTED", "RESULTS")
    rows = [header]
    for r in records:
        s = states.get(r.job_id) or JobState(r.job_id, "unknown", "")
        rows.append((r.job_id, s.state, s.exit_text, r.cell, f"{r.repeat}/{r.repeats}", r.submitted_at, r.out))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows
    )


def as_json(records: Sequence[JobRecord], states: dict[str, JobState]) -> list[dict[str, object]]:
    out = []
    for r in records:
        s = states.get(r.job_id) or JobState(r.job_id, "unknown", "")
        out.append({**asdict(r), "state": s.state, "slurm_state": s.slurm_state, "exit_code": s.exit_code,
                    "signal": s.signal, "state_source": s.source})  # fmt: skip
    return out
