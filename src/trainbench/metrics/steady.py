"""Steady-state statistics of step times, and the recipe's numbers derived from one step time.

Window convention: steps are numbered from 1. The default window is the one later
releases of the recipe average, iterations 35-44, when a run has at least 44 steps;
shorter runs use their second half (never the first step, where compilation lands).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from trainbench.metrics.throughput import mfu_pct, tflops_per_gpu, time_to_train_days, tokens_per_s

RECIPE_WINDOW = (35, 44)
TTT_TOKENS = 1e12  # the recipe's time-to-train reference: 1T tokens


def default_window(n_steps: int) -> tuple[int, int]:
    """Inclusive 1-based (first, last) step of the steady-state window."""
    if n_steps >= RECIPE_WINDOW[1]:
        return RECIPE_WINDOW
    first = max(2, n_steps // 2 + 1) if n_steps >= 2 else 1
    return (min(first, n_steps), n_steps)


def parse_window(text: str) -> tuple[int, int]:
    """``"35:44"`` -> (35, 44); both ends inclusive, 1-based."""
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"window {text!r} must be FIRST:LAST step numbers, e.g. 35:44") from None
    if not 1 <= a <= b:
        raise ValueError(f"window {text!r} must satisfy 1 <= FIRST <= LAST")
    return a, b


@dataclass(frozen=True)
class WindowStats:
    first_step: int
    last_step: int
    n: int
    median_s: float
    mean_s: float
    std_s: float
    min_s: float
    max_s: float


def window_stats(step_times_s: dict[int, float], window: tuple[int, int]) -> WindowStats | None:
    """Statistics of the step times whose step number lies in ``window``; None if none do."""
    times = [t for s, t in sorted(step_times_s.items()) if window[0] <= s <= window[1] and math.isfinite(t)]
    if not times:
        return None
    return WindowStats(
        first_step=window[0],
        last_step=window[1],
        n=len(times),
        median_s=statistics.median(times),
        mean_s=statistics.fmean(times),
        std_s=statistics.stdev(times) if len(times) > 1 else 0.0,
        min_s=min(times),
        max_s=max(times),
    )


def derived(
    step_time_s: float,
    *,
    seq_len: int,
    gbs: int,
    gpus: int,
    flops_per_sample: float | None,
    peak_tflops: float | None,
    proxy: bool,
) -> dict[str, float | None]:
    """The recipe's numbers from one step time; time to train is None for proxies, as the recipe says."""
    tps = tokens_per_s(seq_len=seq_len, gbs=gbs, step_time_s=step_time_s)
    tflops = (
        None
        if flops_per_sample is None
        else tflops_per_gpu(flops_per_sample=flops_per_sample, gbs=gbs, step_time_s=step_time_s, gpus=gpus)
    )
    mfu = (
        None
        if tflops is None or peak_tflops is None
        else mfu_pct(flops_per_sample=flops_per_sample or 0.0, gbs=gbs, step_time_s=step_time_s, gpus=gpus,
                     peak_tflops=peak_tflops)
    )  # fmt: skip
    return {
        "step_time_s": step_time_s,
        "tokens_per_s": tps,
        "tflops_per_gpu": tflops,
        "mfu_pct": mfu,
        "ttt_days": None if proxy else time_to_train_days(total_tokens=TTT_TOKENS, tokens_per_second=tps),
    }


def summarize(
    step_times_s: dict[int, float],
    *,
    seq_len: int,
    gbs: int,
    gpus: int,
    flops_per_sample: float | None,
    peak_tflops: float | None,
    proxy: bool,
    window: tuple[int, int] | None = None,
) -> dict[str, object]:
    """Last-step numbers (the recipe's way) and steady-state statistics (ours), as one dict."""
    if not step_times_s:
        return {"steps": 0, "last_step": None, "steady_state": None}
    kw = dict(seq_len=seq_len, gbs=gbs, gpus=gpus, flops_per_sample=flops_per_sample, peak_tflops=peak_tflops,
              proxy=proxy)  # fmt: skip
    last = max(step_times_s)
    window = window or default_window(last)
    stats = window_stats(step_times_s, window)
    steady: dict[str, object] | None = None
    if stats is not None:
        steady = {**asdict(stats), **{f"median_{k}": v for k, v in derived(stats.median_s, **kw).items()}}  # type: ignore[arg-type]
    return {
        "steps": len(step_times_s),
        "last_step": {"step": last, **derived(step_times_s[last], **kw)},  # type: ignore[arg-type]
        "steady_state": steady,
    }
