"""Execute a plan on this process's device(s): the records, the timing, the fault handling."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import trainbench
from trainbench.config import Plan
from trainbench.errors import ConfigError
from trainbench.metrics.peaks import peak_tflops
from trainbench.metrics.steady import default_window, summarize
from trainbench.recipe.describe import describe, flops_per_sample
from trainbench.train import provenance
from trainbench.train.dist import DistContext
from trainbench.train.files import RunFiles
from trainbench.train.loop import (
    NonFiniteLoss,
    Terminated,
    Trainer,
    check_finite,
    memory_gib,
    sigterm_as_exception,
)
from trainbench.train.optim import lr_at
from trainbench.train.profiling import StepProfiler
from trainbench.train.records import GSW_VERSION, RunSummary, StepRecord, provenance_line
from trainbench.train.timing import StepTimer, process_age_s

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


@dataclass
class Outcome:
    status: str
    summary_path: Path | None
    exit_code: int
    summary: RunSummary | None


def run_peak_tflops(plan: Plan) -> float | None:
    """Dense peak for MFU; None for CPU smoke runs (they get no MFU at all)."""
    if plan.gpu_type == "cpu" and plan.peak_tflops_override is None:
        return None
    return peak_tflops(plan.gpu_type, plan.dtype, plan.peak_tflops_override)


def gsw_fields(plan: Plan, run_id: str, nodes: int, gpus_per_node: int) -> dict[str, Any]:
    """The recipe's provenance-line fields, plus the facts report needs to read our logs."""
    return {
        "MODEL": "llama3.1", "FRAMEWORK": "trainbench", "MODEL_SIZE": plan.model.name,
        "JOB_NUM_NODES": nodes, "GPUS_PER_NODE": gpus_per_node, "DTYPE": plan.dtype,
        "SYNTHETIC_DATA": "true", "GSW_VERSION": GSW_VERSION, "FW_VERSION": trainbench.__version__,
        "JOB_ID": run_id, "JOB_MODE": "training", "LAYERS": plan.model.layers, "GBS": plan.train.gbs,
        "SEQ_LEN": plan.model.seq_len, "GPU_TYPE": plan.gpu_type,
    }  # fmt: skip


def execute(
    plan: Plan,
    *,
    results_root: Path,
    run_id: str,
    device: torch.device,
    ctx: DistContext | None = None,
    make_trainer: Callable[[Plan, torch.device, DistContext], Any] = Trainer,
    nodes: int = 1,
    on_step: Callable[[StepRecord], None] | None = None,
    profile: tuple[int, int] | None = None,
) -> Outcome:
    """Run ``plan.train.steps`` steps. Rank 0 writes the run files; every rank trains."""
    ctx = ctx or DistContext()
    t_begin = time.perf_counter()
    age_at_begin_s = process_age_s()  # interpreter start, imports, resolving the plan
    files = RunFiles(results_root, plan.dtype, plan.model.name, plan.gpus, run_id) if ctx.is_rank0 else None
    summary = RunSummary(
        status="running",
        run_id=run_id,
        config=plan.to_dict(),
        provenance=provenance.collect(device, ctx.world_size),
        started_at=provenance.now_iso(),
    )
    summary.provenance["plan_memory_gib"] = describe(plan)["memory_breakdown_gib"]
    if profile:
        summary.provenance["profile_window"] = list(profile)  # marks the run: not a performance result
    profiler = StepProfiler(profile if ctx.is_rank0 else None, files.stem if files else Path("."), device)
    if files:
        files.create()
        files.write_line(provenance_line(gsw_fields(plan, run_id, nodes, max(1, plan.gpus // nodes))))
        files.write_summary(summary)
    flops = flops_per_sample(plan)
    peak = run_peak_tflops(plan)
    steps = plan.train.steps
    window = default_window(steps)
    step_times: dict[int, float] = {}
    mem_peak_gib = 0.0
    first_step_s: float | None = None
    build_s: float | None = None
    exit_code = 0
    try:
        with sigterm_as_exception():
            trainer = make_trainer(plan, device, ctx)
            build_s = time.perf_counter() - t_begin
            timer = StepTimer(device, ctx.reduce_max)
            memory_gib(device)  # reset the peak: step 1 reports its own
            for step in range(1, steps + 1):
                batches = trainer.batches(step)
                profiler.before_step(step)
                timer.start()
                loss, grad_norm = trainer.step(batches, lr_at(step - 1, plan.train))
                step_time_s = timer.stop()
                profiler.after_step(step)
                result = trainer.read(loss, grad_norm)
                peak_gib, reserved_gib = memory_gib(device)
                step_times[step] = step_time_s
                if first_step_s is None:
                    first_step_s = time.perf_counter() - t_begin
                tflops = plan.train.gbs * flops / step_time_s / plan.gpus / 1e12
                rec = StepRecord(
                    step=step,
                    step_time_s=step_time_s,
                    loss=result.loss,
                    tokens_per_s=plan.model.seq_len * plan.train.gbs / step_time_s,
                    tflops_per_gpu=tflops,
                    mfu_pct=None if peak is None else 100 * tflops / peak,
                    lr=lr_at(step - 1, plan.train),
                    grad_norm=result.grad_norm,
                    consumed_samples=step * plan.train.gbs,
                    mem_peak_gib=ctx.reduce_max(peak_gib),
                    mem_reserved_gib=ctx.reduce_max(reserved_gib),
                    warmup=step < window[0],
                )
                mem_peak_gib = max(mem_peak_gib, rec.mem_peak_gib)  # already the most loaded rank's
                if files:
                    files.write_step(rec, steps)
                    summary.steps_done = step
                if on_step:
                    on_step(rec)
                check_finite(step, result)  # after the record: the bad step stays in the log
        summary.status = "complete"
    except NonFiniteLoss as exc:
        summary.status, summary.failure, exit_code = "failed", f"non-finite loss: {exc}", EXIT_FAILED
    except torch.OutOfMemoryError as exc:
        summary.status, exit_code = "failed", EXIT_FAILED
        summary.failure = oom_message(plan, str(exc).splitlines()[0] if str(exc) else "")
    except (KeyboardInterrupt, Terminated) as exc:
        summary.status, exit_code = "incomplete", EXIT_INTERRUPTED
        summary.failure = f"interrupted ({type(exc).__name__} {exc}) after {len(step_times)} of {steps} steps"
    except Exception as exc:  # a bug or an environment fault: record it, then let it surface
        summary.status = "failed"
        summary.failure = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        profiler.finish()
        summary.ended_at = provenance.now_iso()
        summary.steps_done = len(step_times)
        summary.results = summarize(
            step_times, seq_len=plan.model.seq_len, gbs=plan.train.gbs, gpus=plan.gpus,
            flops_per_sample=flops, peak_tflops=peak, proxy=plan.proxy, window=window,
        )  # fmt: skip
        summary.results["time_to_first_step_s"] = first_step_s
        summary.results["startup"] = startup_breakdown(age_at_begin_s, build_s, step_times.get(1), first_step_s)
        if device.type == "cuda":
            summary.results["mem_peak_gib"] = mem_peak_gib
            # this rank's allocations that failed, emptied the allocator's cache and retried: a slow-down sign
            summary.results["alloc_retries"] = torch.cuda.memory_stats(device).get("num_alloc_retries", 0)
        if files:
            if summary.failure:
                files.write_line(f"trainbench: run {summary.status}: {summary.failure}")
            files.write_summary(summary)
            files.close()
    return Outcome(summary.status, files.summary_path if files else None, exit_code, summary)


def startup_breakdown(
    before_run_s: float | None, build_s: float | None, step1_s: float | None, run_to_step1_s: float | None
) -> dict[str, float | None]:
    """Where the time to the first finished step went, in seconds. ``run_to_step1_s`` (the summary's
    ``time_to_first_step_s``) counts from the start of the run (the model's build onwards);
    ``process_to_first_step_s`` adds what came before it in this process (interpreter start, imports,
    the plan), None where the process age is unknown."""
    return {
        "before_run_s": before_run_s,
        "build_s": build_s,  # model, parameters, optimizer state, fp8 weight cache
        "first_step_s": step1_s,  # compiling (cold or from cache) and running step 1
        "process_to_first_step_s": (
            None if before_run_s is None or run_to_step1_s is None else before_run_s + run_to_step1_s
        ),
    }


def oom_message(plan: Plan, detail: str) -> str:
    info = describe(plan)
    mem = info["memory_breakdown_gib"]
    parts = ", ".join(f"{k.removesuffix('_gib')} {v:.1f}" for k, v in mem.items() if k != "total_gib")
    return (
        f"CUDA out of memory ({detail}). Plan: {plan.model.name} {plan.dtype}, {plan.model.layers} layers, "
        f"TP {plan.parallel.tp} PP {plan.parallel.pp} CP {plan.parallel.cp} DP {plan.dp}, MBS {plan.train.mbs}; "
        f"estimated {mem['total_gib']:.1f} GiB per GPU ({parts}) on a {info['gpu_memory_gib']} GiB GPU. "
        f"Try fewer layers (model.layers={max(1, plan.model.layers // 2)}), activation checkpointing "
        "(train.activation_checkpointing=true), or more GPUs."
    )


def check_fits(plan: Plan) -> None:
    """Refuse, before anything starts, a plan whose estimate exceeds the GPU's memory."""
    info = describe(plan)
    if info["fits"] is False:
        mem = info["memory_breakdown_gib"]
        raise ConfigError(
            f"the plan does not fit: estimated {mem['total_gib']:.1f} GiB per GPU (weights {mem['weights_gib']:.1f}, "
            f"gradients {mem['gradients_gib']:.1f}, optimizer {mem['optimizer_gib']:.1f}, activations "
            f"{mem['activations_gib']:.1f}, overhead {mem['overhead_gib']:.1f}) > {info['gpu_memory_gib']:.0f} GiB "
            f"on {plan.gpu_type}; use fewer layers, more GPUs, or train.activation_checkpointing=true"
        )
