"""What a person watching ``trainbench run`` sees: a progress bar, then a summary table."""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trainbench.config import Plan
from trainbench.train.files import JOB_OUT_ENV
from trainbench.train.records import StepRecord, memory_measured, out_step_line

if TYPE_CHECKING:
    from trainbench.train.run import Outcome


class ProgressView:
    """A progress bar on a terminal. Without one (a pipe, nohup, a CI log) ``echo`` prints
    each step's recipe-style line to stdout instead, so a run is never silent until it ends;
    a Slurm job, whose stdout already receives those lines, passes ``echo=False``."""

    def __init__(self, plan: Plan, enabled: bool, echo: bool = False):
        self.plan = plan
        self.echo = echo and not enabled
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=self.console, disable=not enabled,
        )  # fmt: skip
        self.task = self.progress.add_task(
            f"{plan.model.name} {plan.dtype} x{plan.gpus}", total=plan.train.steps, info="building model"
        )

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()

    def update(self, rec: StepRecord) -> None:
        mfu = "" if rec.mfu_pct is None else f" mfu {rec.mfu_pct:.1f}%"
        mem = memory_measured(rec)
        info = f"loss {rec.loss:.3f} step {rec.step_time_s:.3f}s{mfu}" + ("" if mem is None else f" mem {mem:.1f}GiB")
        self.progress.update(self.task, completed=rec.step, info=info)
        if self.echo:
            print(out_step_line(rec, self.plan.train.steps), flush=True)

    def print_summary(self, outcome: Outcome) -> None:
        s = outcome.summary
        if s is None:
            return
        res = s.results
        t = Table(title=f"trainbench run {s.run_id}: {s.status}")
        t.add_column("")
        t.add_column("last step (recipe)", justify="right")
        t.add_column("steady-state median", justify="right")
        last, steady = res.get("last_step") or {}, res.get("steady_state") or {}

        def fmt(v: object, spec: str) -> str:
            return "n/a" if v is None else format(v, spec)

        for label, key, spec in [
            ("step time (s)", "step_time_s", ".3f"),
            ("tokens/s", "tokens_per_s", ",.0f"),
            ("TFLOP/s per GPU", "tflops_per_gpu", ".1f"),
            ("MFU (%)", "mfu_pct", ".2f"),
            ("time to train 1T tokens (days)", "ttt_days", ".2f"),
        ]:
            t.add_row(label, fmt(last.get(key), spec), fmt(steady.get(f"median_{key}"), spec))
        self.console.print(t)
        if steady:
            self.console.print(
                f"steady-state window: steps {steady['first_step']}-{steady['last_step']} "
                f"(n={steady['n']}, std {steady['std_s']:.4f}s, min {steady['min_s']:.4f}s, max {steady['max_s']:.4f}s)"
            )
        if res.get("mem_peak_gib") is not None:
            plan_gib = s.provenance.get("plan_memory_gib", {}).get("total_gib")
            planned = "" if plan_gib is None else f" (plan {plan_gib:.1f} GiB)"
            self.console.print(
                f"peak memory: {res['mem_peak_gib']:.1f} GiB{planned}, allocator retries {res.get('alloc_retries', 0)}"
            )
        if line := startup_line(res):
            self.console.print(line)
        if s.failure:
            self.console.print(f"[red]{escape(s.failure)}[/red]")  # error texts may hold [brackets]
        self.console.print(f"records: {outcome.summary_path}")


def startup_line(results: dict[str, Any]) -> str | None:
    """The summary line: start to first finished step: 66.0s (build 12.5s, step 1 53.5s); 71.2s from process start"""
    first = results.get("time_to_first_step_s")
    if first is None:
        return None
    parts = results.get("startup") or {}
    inner = [f"{label} {parts[key]:.1f}s" for key, label in (("build_s", "build"), ("first_step_s", "step 1"))
             if parts.get(key) is not None]  # fmt: skip
    text = f"start to first finished step: {first:.1f}s" + (f" ({', '.join(inner)})" if inner else "")
    if parts.get("process_to_first_step_s") is not None:
        text += f"; {parts['process_to_first_step_s']:.1f}s from process start"
    return text


def echo_wanted() -> bool:
    """Echo step lines unless this is a trainbench Slurm job (its stdout is the .out log)."""
    return os.environ.get(JOB_OUT_ENV) is None
