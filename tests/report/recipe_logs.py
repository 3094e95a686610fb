"""Synthetic logs shaped exactly like the recipe's examples (shared/reference/recipe_facts.md,
"Log lines users parse"), written independently of ``trainbench.report.parsers``' own writers:
the templates are those example lines with their numbers made into fields."""

from __future__ import annotations

from pathlib import Path

# The recipe's example lines, verbatim (their numbers are the oracles of the parser tests).
NEMO_BAR_EXAMPLE = (
    "Epoch 0: : 100%|██████████| 50/50 [16:26<00:00, v_num=gjbq, reduced_train_loss=11.70, "
    "global_step=49.00, consumed_samples=12600.0, train_step_timing in s=12.80]"
)
NEMO2_EXAMPLE = (
    "Training epoch 0, iteration 49/49 | lr: 7.496e-06 | global_batch_size: 128 | global_step: 49 | "
    "peak_memory_usage: 70833405952 | memory_allocated: 44271689728 | reduced_train_loss: 11.96 | "
    "train_step_timing in s: 12.39 | consumed_samples: 6400"
)
MEGATRON_EXAMPLE = (
    "[2025-01-01 12:00:00.000000] iteration       50/      50 | consumed samples:         6400 | "
    "elapsed time per iteration (ms): 12390.1 | throughput per GPU (TFLOP/s/GPU): 702.3 | "
    "learning rate: 7.496E-06 | global batch size:   128 | lm loss: 1.196E+01 | loss scale: 1.0 | "
    "grad norm: 1.234 | number of skipped iterations:   0 | number of nan iterations:   0 |"
)


def nemo_bar(step: int, total: int, t: float, gbs: int, loss: str = "11.70") -> str:
    pct = 100 * step // total
    bar = ("█" * (10 * step // total)).ljust(10)
    return (
        f"Epoch 0: : {pct}%|{bar}| {step}/{total} [16:26<00:00, v_num=gjbq, reduced_train_loss={loss}, "
        f"global_step={step - 1}.00, consumed_samples={step * gbs}.0, train_step_timing in s={t}]"
    )


def nemo2(step: int, total: int, t: float, gbs: int, loss: str = "11.96") -> str:
    return (
        f"Training epoch 0, iteration {step - 1}/{total - 1} | lr: 7.496e-06 | global_batch_size: {gbs} | "
        f"global_step: {step - 1} | peak_memory_usage: 70833405952 | memory_allocated: 44271689728 | "
        f"reduced_train_loss: {loss} | train_step_timing in s: {t} | consumed_samples: {step * gbs}"
    )


def megatron(step: int, total: int, t: float, gbs: int, loss: str = "1.196E+01", grad_norm: str = "1.234") -> str:
    return (
        f"[2025-01-01 12:00:00.000000] iteration {step:8d}/{total:8d} | consumed samples: {step * gbs:12d} | "
        f"elapsed time per iteration (ms): {t * 1000:.1f} | throughput per GPU (TFLOP/s/GPU): 702.3 | "
        f"learning rate: 7.496E-06 | global batch size: {gbs:5d} | lm loss: {loss} | loss scale: 1.0 | "
        f"grad norm: {grad_norm} | number of skipped iterations:   0 | number of nan iterations:   0 |"
    )


WRITERS = {"nemo-24.09": nemo_bar, "nemo2": nemo2, "megatron": megatron}


def provenance(model: str, gpus: int, dtype: str) -> str:
    return (
        f"GSW: MODEL=llama3.1 FRAMEWORK=nemo MODEL_SIZE={model} JOB_NUM_NODES={gpus // 8} GPUS_PER_NODE=8 "
        f"DTYPE={dtype} SYNTHETIC_DATA=true GSW_VERSION=24.11 FW_VERSION=24.09 "
        f"IMAGE='nvcr.io/nvidia/nemo:24.09' JOB_ID=4242 JOB_MODE=training"
    )


def step_times(last: float, n: int = 50, warmup: float = 4.0) -> list[float]:
    """A plausible run: a slow first step (compilation), small wobble, ``last`` at the end."""
    times = [round(last * (1 + 0.004 * ((7 * s) % 5 - 2)), 4) for s in range(1, n + 1)]
    times[0] = round(last * warmup, 2)
    times[-1] = last
    return times


def log_text(fmt: str, times: list[float], gbs: int, total: int | None = None, header: str | None = None) -> str:
    """A whole .out file; NeMo 24.09's bar updates are separated by carriage returns, as in the file."""
    total = total or len(times)
    lines = [WRITERS[fmt](s, total, t, gbs) for s, t in enumerate(times, 1)]
    sep = "\r" if fmt == "nemo-24.09" else "\n"
    head = [header] if header else []
    body = sep.join(lines)
    return "\n".join([*head, "Starting training...", body]) + "\n"


def recipe_path(root: Path, dtype: str, model: str, gpus: int, job: int, version: str = "24.11") -> Path:
    """``<root>/<GSW_VERSION>/<dtype>/<model>/<gpus>/log-nemo_llama3.1_<size>_<gpus>_<jobid>.out``."""
    d = root / version / dtype / model / str(gpus)
    d.mkdir(parents=True, exist_ok=True)
    return d / f"log-nemo_llama3.1_{model}_{gpus}_{job}.out"
