"""The recipe's derived numbers from a step time: pure functions, SI units in names."""

from __future__ import annotations

SECONDS_PER_DAY = 86_400.0


def tokens_per_s(*, seq_len: int, gbs: int, step_time_s: float) -> float:
    """Recipe: (sequence length) * (global batch size) / (training step time)."""
    _check_positive(step_time_s)
    return seq_len * gbs / step_time_s


def tflops_per_gpu(*, flops_per_sample: float, gbs: int, step_time_s: float, gpus: int) -> float:
    """Achieved model TFLOP/s per GPU (the numerator of MFU)."""
    _check_positive(step_time_s)
    return gbs * flops_per_sample / step_time_s / gpus / 1e12


def mfu_pct(*, flops_per_sample: float, gbs: int, step_time_s: float, gpus: int, peak_tflops: float) -> float:
    """Recipe: MFU = GBS * model flops / step time / GPUs / peak FLOPS, in percent."""
    return (
        100.0
        * tflops_per_gpu(flops_per_sample=flops_per_sample, gbs=gbs, step_time_s=step_time_s, gpus=gpus)
        / peak_tflops
    )


def time_to_train_days(*, total_tokens: float, tokens_per_second: float) -> float:
    """Recipe: (total tokens) / (tokens per second) / (seconds in a day)."""
    _check_positive(tokens_per_second)
    return total_tokens / tokens_per_second / SECONDS_PER_DAY


def _check_positive(value: float) -> None:
    if not value > 0:
        raise ValueError(f"expected a positive time or rate, got {value}")
