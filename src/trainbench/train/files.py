"""A run's files: created once, never overwriting an earlier run's, written as steps finish."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import sys
from pathlib import Path
from typing import TextIO

from trainbench.errors import ConfigError
from trainbench.train.records import RunSummary, StepRecord, out_step_line, run_dir, run_stem

JOB_OUT_ENV = "TRAINBENCH_JOB_OUT"  # set by trainbench's sbatch scripts: the job's own .out file


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)


def default_results_root() -> Path:
    stage = os.environ.get("STAGE_PATH")
    return Path(stage) / "results" if stage else Path("results")


class RunFiles:
    """The ``.out`` log, the step JSONL and the summary JSON of one run (rank 0 writes)."""

    def __init__(self, results_root: Path, dtype: str, model: str, gpus: int, run_id: str):
        self.directory = run_dir(results_root, dtype, model, gpus)
        stem = run_stem(model, gpus, run_id)
        self.stem = self.directory / stem
        self.out_path = self.directory / f"{stem}.out"
        self.steps_path = self.directory / f"{stem}.steps.jsonl"
        self.summary_path = self.directory / f"{stem}.summary.json"
        self._out: TextIO | None = None
        self._steps: TextIO | None = None
        self.out_is_stdout = False

    def create(self) -> None:
        """Refuse an existing run; the one exception is a ``.out`` that is our own stdout:
        a Slurm job's ``--output``, as the recipe's logs are. srun hands tasks a pipe to it,
        so the sbatch script names the file in ``TRAINBENCH_JOB_OUT``; our lines then go to stdout."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.out_is_stdout = _is_stdout(self.out_path) or _is_job_out(self.out_path)
        taken = [p for p in (self.steps_path, self.summary_path) if p.exists()]
        if self.out_path.exists() and not self.out_is_stdout:
            taken.append(self.out_path)
        if taken:
            raise ConfigError(
                f"run files already exist and are never overwritten: {', '.join(map(str, taken))}; "
                "choose another --run-id"
            )
        self._steps = self.steps_path.open("x", buffering=1)
        self._out = sys.stdout if self.out_is_stdout else self.out_path.open("x", buffering=1)

    def write_line(self, line: str) -> None:
        assert self._out is not None
        self._out.write(line + "\n")
        self._out.flush()

    def write_step(self, rec: StepRecord, total_steps: int) -> None:
        assert self._steps is not None
        self._steps.write(rec.to_json() + "\n")
        self._steps.flush()
        self.write_line(out_step_line(rec, total_steps))

    def write_summary(self, summary: RunSummary) -> None:
        summary.write(self.summary_path)

    def close(self) -> None:
        for f in (self._steps, self._out):
            if f is not None and f is not sys.stdout:
                f.close()


def _is_job_out(path: Path) -> bool:
    job_out = os.environ.get(JOB_OUT_ENV)
    return job_out is not None and Path(job_out).resolve() == path.resolve()


def _is_stdout(path: Path) -> bool:
    try:
        out = os.fstat(sys.stdout.fileno())
        st = path.stat()
    except (OSError, ValueError, AttributeError):
        return False
    return (out.st_dev, out.st_ino) == (st.st_dev, st.st_ino)
