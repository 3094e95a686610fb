"""From a run's step times and facts to the recipe's numbers, steady-state statistics and a
verdict against the recipe's published tables. Pure: no files, no printing.

- The recipe's numbers come from the LAST logged step, as its README computes them.
- Steady state: median, mean, std, min, max of the step times in a window that leaves out
  the warm-up (default: iterations 35-44 as later releases average, or the second half of
  a shorter run; an own run's flagged warm-up steps are never in the default window), and
  the same derived numbers from the median.
- Comparison: tokens/s of the run over the published cell of the same model, dtype, GPU
  count, layers and GBS; ``gap_pct`` = 100 * (ratio - 1), positive = faster than published.
  A complete run passes when ``gap_pct >= -tolerance``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trainbench.errors import ConfigError
from trainbench.metrics.flops import model_flops_per_sample
from trainbench.metrics.peaks import peak_tflops
from trainbench.metrics.steady import default_window, derived, window_stats
from trainbench.recipe import tables
from trainbench.report.discover import Run

REQUIRED_FACTS = ("model", "dtype", "gpus", "gbs")
STATUSES = ("complete", "incomplete", "failed", "NaN", "unreadable")
VERDICTS = ("pass", "fail", "invalid", "no-reference", "proxy-other-scale", "unknown")
BASES = ("last", "steady")


@dataclass(frozen=True)
class Options:
    window: tuple[int, int] | None = None  # None: default_window, past any flagged warm-up
    tolerance_pct: float = 5.0
    flops_convention: str = "recipe"
    basis: str = "last"  # what the verdict compares: the last step (the recipe's way) or the steady median
    peak_tflops: float | None = None  # the user's peak for every run (a GPU type not in the table)


def run_window(run: Run, opts: Options) -> tuple[int, int] | None:
    if not run.step_times_s:
        return None
    if opts.window is not None:
        return opts.window
    last = max(run.step_times_s)
    first, end = default_window(last)
    if run.warmup_steps and max(run.warmup_steps) + 1 <= end:
        first = max(first, max(run.warmup_steps) + 1)
    return first, end


def _missing(run: Run) -> list[str]:
    missing = [k for k in REQUIRED_FACTS if run.facts.get(k) is None]
    if run.shape is None and "model" not in missing:
        missing.append("model shape")
    return missing


def _flops_and_peak(run: Run, opts: Options, notes: list[str]) -> tuple[float | None, float | None]:
    flops = model_flops_per_sample(**run.shape, convention=opts.flops_convention) if run.shape else None  # type: ignore[arg-type]
    try:
        peak = peak_tflops(run.facts["gpu_type"], run.facts["dtype"], opts.peak_tflops or run.peak_tflops_override)
    except ConfigError as exc:
        notes.append(f"no MFU: {exc}")
        peak = None
    return flops, peak


def analyze(run: Run, opts: Options) -> dict[str, Any]:
    """One run's report object (the ``--json`` element)."""
    missing = _missing(run) if run.status != "unreadable" else []
    f = run.facts
    row: dict[str, Any] = {
        "source": run.source,
        "format": run.format,
        "status": run.status,
        **{k: f.get(k) for k in ("model", "dtype", "gpus", "gpu_type", "gbs", "layers", "seq_len")},
        "proxy": run.proxy,
        "facts_from": run.facts_from,
        "missing": missing,
        "steps": len(run.step_times_s),
        "last_step": max(run.step_times_s, default=None),
        "planned_steps": run.planned_steps,
        "flops_convention": opts.flops_convention,
        "model_flops_per_sample": None,
        "peak_tflops": None,
        "last_step_time_s": run.step_times_s[max(run.step_times_s)] if run.step_times_s else None,
        "tokens_per_s": None,
        "tflops_per_gpu": None,
        "mfu_pct": None,
        "ttt_days": None,
        "mem_peak_gib": run.mem_peak_gib,
        "time_to_first_step_s": run.time_to_first_step_s,
        "process_to_first_step_s": run.process_to_first_step_s,
        "steady_state": None,
        "reference": None,
        "comparison": None,
        "notes": list(run.notes),
        "error": run.error,
    }
    window = run_window(run, opts)
    stats = window_stats(run.step_times_s, window) if window else None
    if window:
        row["steady_state"] = {
            "window": f"{window[0]}:{window[1]}",
            "first_step": window[0],
            "last_step": window[1],
            "n": 0,
            "complete": False,
        }
    if stats:
        row["steady_state"].update(asdict(stats))
        row["steady_state"]["complete"] = stats.n == window[1] - window[0] + 1  # type: ignore[index]
    known = run.status != "unreadable" and not missing and run.step_times_s
    if known:
        flops, peak = _flops_and_peak(run, opts, row["notes"])
        row["model_flops_per_sample"], row["peak_tflops"] = flops, peak
        kw = dict(
            seq_len=f["seq_len"],
            gbs=f["gbs"],
            gpus=f["gpus"],
            flops_per_sample=flops,
            peak_tflops=peak,
            proxy=bool(run.proxy),
        )
        last = derived(row["last_step_time_s"], **kw)  # type: ignore[arg-type]
        row.update({k: v for k, v in last.items() if k != "step_time_s"})
        if stats:
            median = derived(stats.median_s, **kw)  # type: ignore[arg-type]
            row["steady_state"].update({f"median_{k}": v for k, v in median.items() if k != "step_time_s"})
    row["reference"], row["comparison"] = compare(row, opts)
    return row


def compare(row: dict[str, Any], opts: Options) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(published cell, comparison) for one analysed row."""
    comparison: dict[str, Any] = {
        "basis": opts.basis,
        "tolerance_pct": opts.tolerance_pct,
        "ratio": None,
        "gap_pct": None,
        "mfu_gap_pts": None,
        "verdict": "unknown",
        "reason": None,
    }
    if row["status"] == "unreadable":
        comparison["reason"] = "unreadable"
        return None, comparison
    if row["missing"]:
        comparison["reason"] = "missing " + ", ".join(row["missing"])
        return None, comparison
    if not row["steps"]:
        comparison["reason"] = "no steps logged"
        return None, comparison
    ref = tables.find_reference(row["model"], row["dtype"], row["gpus"], row["layers"], row["gbs"])
    if ref is None:
        proxy = row["proxy"]
        comparison["verdict"] = "proxy-other-scale" if proxy else "no-reference"
        comparison["reason"] = (
            f"proxy ({row['layers']} layers, GBS {row['gbs']}) matches no published proxy cell"
            if proxy
            else f"no published cell for {row['model']} {row['dtype']} on {row['gpus']} GPUs with GBS {row['gbs']}"
        )
        return None, comparison
    steady = row["steady_state"] or {}
    tps, mfu = (
        (row["tokens_per_s"], row["mfu_pct"])
        if opts.basis == "last"
        else (steady.get("median_tokens_per_s"), steady.get("median_mfu_pct"))
    )
    if tps is None:
        comparison["reason"] = "no steps in the steady-state window"
        return ref.as_dict(), comparison
    ratio = tps / ref.tokens_per_s
    comparison.update(ratio=ratio, gap_pct=100.0 * (ratio - 1.0))
    if mfu is not None and opts.flops_convention == "recipe":
        comparison["mfu_gap_pts"] = mfu - ref.mfu_pct
    if row["gpu_type"] != ref.gpu_type:
        row["notes"].append(f"reference measured on {ref.gpu_type}, run on {row['gpu_type']}")
    if row["status"] != "complete":
        comparison.update(verdict="invalid", reason=f"run is {row['status']}")
    elif comparison["gap_pct"] >= -opts.tolerance_pct:
        comparison["verdict"] = "pass"
    else:
        comparison.update(verdict="fail", reason=f"{-comparison['gap_pct']:.1f}% slower than published")
    return ref.as_dict(), comparison


def _order(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["status"] == "unreadable", row["model"] or "~", row["dtype"] or "~", row["gpus"] or 0, row["source"])


def analyze_all(runs: list[Run], opts: Options) -> list[tuple[Run, dict[str, Any]]]:
    """Every run analysed, sorted by model, dtype, GPU count, then source; unreadable ones last."""
    pairs = [(run, analyze(run, opts)) for run in runs]
    return sorted(pairs, key=lambda p: _order(p[1]))
