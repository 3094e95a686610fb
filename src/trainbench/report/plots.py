"""PNG plots of a report; the only module that imports matplotlib (Agg backend, no display).

- ``step_times[_NN].png``: step time per step of each run (up to 12 runs a page), the
  warm-up that the steady window leaves out shaded grey, the window shaded green, its
  median dashed, the last step (the recipe's number) in red, the published step time dotted.
  Step times above 1.5x the run's median (compilation) are drawn as triangles at the top, value written.
- ``scaling.png``: tokens/s and MFU against GPU count, the runs' last steps over the
  recipe's published curve for the same model and dtype (hollow markers: proxies).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

from trainbench.recipe import tables
from trainbench.report.discover import Run

PER_PAGE = 12
MAX_PAGES = 10
COLS = 3
CLIP_FACTOR = 1.5  # step times above this multiple of the run's median are drawn at the top edge
WARMUP, WINDOW, STEP, LAST, REF = "0.6", "tab:green", "tab:blue", "tab:red", "black"


def _step_axes(ax: Any, run: Run, row: dict[str, Any]) -> None:
    steps = sorted(run.step_times_s)
    times = [run.step_times_s[s] for s in steps]
    top = CLIP_FACTOR * statistics.median(times)
    steady = row["steady_state"]
    said = []
    if steady:
        first, last = steady["first_step"], steady["last_step"]
        if first > 1:
            ax.axvspan(0.5, first - 0.5, color=WARMUP, alpha=0.3, lw=0)
        ax.axvspan(first - 0.5, last + 0.5, color=WINDOW, alpha=0.15, lw=0)
        said.append(f"window {first}-{last}")
        if steady.get("median_s") is not None:
            ax.axhline(steady["median_s"], color=WINDOW, ls="--", lw=1)
            said[-1] += f" median {steady['median_s']:.3g} s"
    ax.plot(steps, times, marker=".", ms=3, lw=0.8, color=STEP)
    # Outliers (compilation, autotuning) would flatten the rest: mark them at the top edge instead.
    clipped = [(s, t) for s, t in zip(steps, times, strict=True) if t > top]
    edge = ax.get_xaxis_transform()  # x in steps, y in axes fraction
    for i, (s, t) in enumerate(clipped):
        ax.plot([s], [0.97], "^", color=STEP, ms=5, transform=edge, clip_on=False)
        if i < 3:
            ax.annotate(f"{t:.3g} s", (s, 0.97), xycoords=edge, xytext=(5, -3), textcoords="offset points", fontsize=6)
    ax.plot([steps[-1]], [times[-1]], "o", color=LAST, ms=5)
    said.append(f"last {times[-1]:.3g} s")
    values = [t for t in times if t <= top]
    if row["reference"]:
        ref_t = row["reference"]["step_time_s"]
        ax.axhline(ref_t, color=REF, ls=":", lw=1)
        said.append(f"published {ref_t:.3g} s")
        values.append(ref_t)
    low, high = min(values), max(values)
    pad = max(0.08 * (high - low), 0.02 * high)
    ax.set_ylim(low - pad, high + (3 if clipped else 1) * pad)  # room for the outlier marks
    facts = " ".join(str(row[k]) for k in ("model", "dtype") if row[k]) or "model/dtype unknown"
    gpus = f" x{row['gpus']}" if row["gpus"] else ""
    ax.set_title(f"{Path(row['source']).name}\n{facts}{gpus}, {row['status']}: {', '.join(said)}", fontsize=6.5)
    ax.set_xlabel("step", fontsize=7)
    ax.set_ylabel("step time (s)", fontsize=7)
    # the planned extent, so that a run cut short shows where it stopped
    ax.set_xlim(0.5, max(steps[-1], row["planned_steps"] or 0, steady["last_step"] if steady else 0) + 0.5)
    ax.tick_params(labelsize=6)


def step_time_figure(pairs: list[tuple[Run, dict[str, Any]]]) -> Figure:
    rows = (len(pairs) + COLS - 1) // COLS
    cols = min(COLS, len(pairs))
    fig = Figure(figsize=(4.2 * cols, 0.6 + 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (run, row) in zip(axes.flat, pairs, strict=False):
        _step_axes(ax, run, row)
    for ax in axes.flat[len(pairs) :]:
        ax.set_visible(False)
    handles = [
        Patch(color=WARMUP, alpha=0.3, label="before the window (warm-up and settling)"),
        Patch(color=WINDOW, alpha=0.15, label="steady-state window"),
        Line2D([], [], color=WINDOW, ls="--", label="window median"),
        Line2D([], [], color=STEP, marker=".", label="step time"),
        Line2D([], [], color=STEP, marker="^", ls="", label=f"above {CLIP_FACTOR:g}x median (value written)"),
        Line2D([], [], color=LAST, marker="o", ls="", label="last step (the recipe's number)"),
        Line2D([], [], color=REF, ls=":", label="published step time"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=4, fontsize=7, frameon=False)
    return fig


def _gpu_axis(ax: Any, gpus: list[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(gpus)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("GPUs")
    ax.grid(True, which="major", alpha=0.3)


def scaling_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """tokens/s and MFU vs GPUs; None when no run has numbers."""
    rows = [row for row in rows if row["tokens_per_s"] is not None]
    if not rows:
        return None
    fig = Figure(figsize=(14, 4.8), layout="constrained")
    ax_tps, ax_mfu = fig.subplots(1, 2)
    groups = sorted({(r["model"], r["dtype"]) for r in rows})
    colors = [matplotlib.colormaps["tab10"](i) for i in range(10)]
    all_gpus: list[int] = []
    handles: list[Any] = []
    for i, (model, dtype) in enumerate(groups):
        color = colors[i % len(colors)]
        refs = sorted((c for c in tables.references() if (c.model, c.dtype) == (model, dtype)), key=lambda c: c.gpus)
        full_layers = tables.preset(model)["layers"]
        if refs:
            all_gpus += [c.gpus for c in refs]
            for ax, key in ((ax_tps, "tokens_per_s"), (ax_mfu, "mfu_pct")):
                ax.plot([c.gpus for c in refs], [getattr(c, key) for c in refs], "-", color=color, lw=1, alpha=0.6)
                for cell in refs:
                    face = color if cell.layers == full_layers else "white"
                    ax.plot(cell.gpus, getattr(cell, key), "s", ms=8, mfc=face, mec=color, alpha=0.6)
            handles.append(
                Line2D(
                    [], [], color=color, marker="s", alpha=0.6, label=f"{model} {dtype} published ({refs[0].gpu_type})"
                )
            )
        mine = [row for row in rows if (row["model"], row["dtype"]) == (model, dtype)]
        all_gpus += [row["gpus"] for row in mine]
        for row in mine:
            # a proxy is hollow, its edge in the series colour so that series stay apart
            face, edge = ("white", color) if row["proxy"] else (color, "black")
            style = {"ms": 6, "mfc": face, "mec": edge, "mew": 1.5}
            ax_tps.plot(row["gpus"], row["tokens_per_s"], "D", **style)
            if row["mfu_pct"] is not None:
                ax_mfu.plot(row["gpus"], row["mfu_pct"], "D", **style)
        handles.append(
            Line2D(
                [],
                [],
                color=color,
                marker="D",
                mec="black",
                ls="",
                label=f"{model} {dtype} runs, last step ({len(mine)})",
            )
        )
    proxy_label = "hollow: proxy (edge: series colour)"
    handles.append(Line2D([], [], color="0.5", marker="D", mfc="white", mec="black", ls="", label=proxy_label))
    _gpu_axis(ax_tps, all_gpus)
    _gpu_axis(ax_mfu, all_gpus)
    ax_tps.set_yscale("log")
    # three significant digits: minor ticks within one decade (17k, 17.5k, 18k) stay distinct
    thousands = FuncFormatter(lambda y, _: f"{y / 1e3:.3g}k" if y >= 1e3 else f"{y:g}")
    ax_tps.yaxis.set_major_formatter(thousands)
    values = [row["tokens_per_s"] for row in rows] + [c.tokens_per_s for c in tables.references()
                                                       if (c.model, c.dtype) in groups]  # fmt: skip
    if max(values) / min(values) < 30:  # within about a decade: label the minor ticks too
        ax_tps.yaxis.set_minor_formatter(thousands)
        ax_tps.tick_params(axis="y", which="minor", labelsize=7)
    else:
        ax_tps.yaxis.set_minor_formatter(NullFormatter())
    ax_tps.set_ylabel("tokens/s")
    ax_tps.set_title("Throughput vs GPU count (last step)", fontsize=10)
    ax_mfu.set_ylabel("MFU (%)")
    ax_mfu.set_ylim(bottom=0)
    ax_mfu.set_title(f"MFU vs GPU count (last step; FLOPs convention: {rows[0]['flops_convention']})", fontsize=10)
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
    return fig


def write_plots(pairs: list[tuple[Run, dict[str, Any]]], out_dir: Path) -> tuple[list[Path], list[str]]:
    """Write the PNGs; (paths written, notes on what was left out)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes: list[str] = []
    with_steps = [(run, row) for run, row in pairs if run.step_times_s]
    if len(with_steps) > PER_PAGE * MAX_PAGES:
        notes.append(f"step-time plots for the first {PER_PAGE * MAX_PAGES} of {len(with_steps)} runs only")
        with_steps = with_steps[: PER_PAGE * MAX_PAGES]
    pages = [with_steps[i : i + PER_PAGE] for i in range(0, len(with_steps), PER_PAGE)]
    for n, page in enumerate(pages, 1):
        path = out_dir / ("step_times.png" if len(pages) == 1 else f"step_times_{n:02d}.png")
        step_time_figure(page).savefig(path, dpi=110)
        written.append(path)
    fig = scaling_figure([row for _, row in pairs])
    if fig is None:
        notes.append("no scaling plot: no run has tokens/s (facts missing or no steps)")
    else:
        path = out_dir / "scaling.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written, notes
