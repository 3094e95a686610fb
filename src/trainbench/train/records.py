"""Run records: the structured truth of a run, and the recipe-style text views of it.

A run directory is ``<results root>/<GSW version>/<dtype>/<model>/<gpus>/`` (the recipe's
layout); one run's files share the stem ``log-trainbench_llama3.1_<model>_<gpus>_<run id>``:

- ``<stem>.out``          provenance line, then one recipe-style line per step (grep-able
                          ``train_step_timing in s=``), then a closing status line
- ``<stem>.steps.jsonl``  one ``StepRecord`` object per line, every step, warm-up included
- ``<stem>.summary.json`` ``RunSummary``: status, resolved config, provenance, results

Nothing is ever overwritten: a run id that already has files is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GSW_VERSION = "24.11"  # the recipe release whose workload trainbench runs
FRAMEWORK = "trainbench"
STATUSES = ("running", "complete", "incomplete", "failed")


def run_dir(results_root: Path, dtype: str, model: str, gpus: int) -> Path:
    return Path(results_root) / GSW_VERSION / dtype / model / str(gpus)


def run_stem(model: str, gpus: int, run_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id):
        raise ValueError(f"run id {run_id!r} may hold only letters, digits, '.', '_' and '-'")
    return f"log-{FRAMEWORK}_llama3.1_{model}_{gpus}_{run_id}"


@dataclass
class StepRecord:
    """One optimizer step. ``step`` counts from 1, like the recipe's iterations."""

    step: int
    step_time_s: float
    loss: float
    tokens_per_s: float
    tflops_per_gpu: float
    mfu_pct: float | None  # None where the device has no published peak (CPU smoke runs)
    lr: float
    grad_norm: float
    consumed_samples: int
    mem_peak_gib: float  # max over ranks of the allocator's peak since the previous step
    mem_reserved_gib: float
    warmup: bool  # inside the timing warm-up (compile, autotuning): kept, but outside steady state

    def to_json(self) -> str:
        return json.dumps(asdict(self), allow_nan=True)

    @classmethod
    def from_json(cls, line: str) -> StepRecord:
        return cls(**json.loads(line))


def out_step_line(rec: StepRecord, total_steps: int) -> str:
    """The NeMo-2-style per-step line users ``grep train_step_timing``; parsed back by report."""
    return (
        f"Training epoch 0, iteration {rec.step - 1}/{total_steps - 1} | lr: {rec.lr:.4e} | "
        f"global_step: {rec.step - 1} | consumed_samples: {rec.consumed_samples} | "
        f"reduced_train_loss: {rec.loss:.4f} | train_step_timing in s={rec.step_time_s:.4f} | "
        f"tokens_per_s: {rec.tokens_per_s:.1f} | mfu_pct: {_fmt(rec.mfu_pct)} | "
        f"peak_memory_gib: {_fmt(memory_measured(rec))}"
    )


def memory_measured(rec: StepRecord) -> float | None:
    """The step's peak GiB, or None where no device memory was measured (CPU runs record 0)."""
    return None if rec.mem_peak_gib == 0 and rec.mem_reserved_gib == 0 else rec.mem_peak_gib


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def provenance_line(fields: dict[str, Any]) -> str:
    """The recipe's first log line: ``GSW: MODEL=llama3.1 FRAMEWORK=... KEY=value ...``.
    Values with spaces are single-quoted, as the recipe does for IMAGE."""
    parts = []
    for k, v in fields.items():
        s = str(v)
        parts.append(f"{k}='{s}'" if (" " in s or not s) else f"{k}={s}")
    return "GSW: " + " ".join(parts)


def parse_provenance_line(line: str) -> dict[str, str]:
    if not line.startswith("GSW:"):
        return {}
    return {m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
            for m in re.finditer(r"(\w+)=(?:'([^']*)'|(\S*))", line[4:])}  # fmt: skip


@dataclass
class RunSummary:
    status: str  # one of STATUSES
    run_id: str
    config: dict[str, Any]  # Plan.to_dict()
    provenance: dict[str, Any]
    started_at: str
    ended_at: str | None = None
    failure: str | None = None  # what stopped the run, in words, when status != complete
    steps_done: int = 0
    results: dict[str, Any] = field(default_factory=dict)  # see trainbench.train.stats.summarize

    def write(self, path: Path) -> None:
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, allow_nan=True) + "\n")
        tmp.replace(path)  # atomic: a reader never sees half a summary

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        return cls(**json.loads(Path(path).read_text()))
