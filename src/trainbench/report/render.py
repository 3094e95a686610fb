"""Views of analysed rows: terminal tables (rich), JSON, CSV, Markdown. No computation here."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from trainbench.recipe import tables
from trainbench.report.analyze import Options

STATUS_STYLE = {"complete": "green", "incomplete": "yellow", "failed": "red", "NaN": "red", "unreadable": "red"}
VERDICT_STYLE = {"pass": "green", "fail": "bold red", "invalid": "yellow"}


def _f(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec)


def _ttt(row: dict[str, Any]) -> str:
    if row["ttt_days"] is None and row["proxy"] and row["tokens_per_s"] is not None:
        return "n/a (proxy)"
    return _f(row["ttt_days"])


def _name(row: dict[str, Any]) -> str:
    return Path(row["source"]).name


def _steady(row: dict[str, Any], key: str, spec: str = ".2f") -> str:
    return _f((row["steady_state"] or {}).get(key), spec)


def _gap(row: dict[str, Any]) -> str:
    gap = row["comparison"]["gap_pct"]
    if gap is None:
        return "-"
    return "0.00" if abs(gap) < 0.005 else f"{gap:+.2f}"


# (header, cell) for each column of the two terminal tables, the Markdown and the CSV
RECIPE_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("model", lambda r: r["model"] or "?"),
    ("dtype", lambda r: r["dtype"] or "?"),
    ("GPUs", lambda r: _f(r["gpus"], "d")),
    ("GBS", lambda r: _f(r["gbs"], "d")),
    ("layers", lambda r: _f(r["layers"], "d")),
    ("status", lambda r: r["status"]),
    ("steps", lambda r: f"{r['steps']}" + (f"/{r['planned_steps']}" if r["planned_steps"] else "")),
    ("step s", lambda r: _f(r["last_step_time_s"])),
    ("tokens/s", lambda r: _f(r["tokens_per_s"], ",.0f")),
    ("TFLOP/s/GPU", lambda r: _f(r["tflops_per_gpu"], ".1f")),
    ("MFU %", lambda r: _f(r["mfu_pct"])),
    ("TTT 1T days", _ttt),
]
STEADY_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("window", lambda r: _window(r)),
    ("median s", lambda r: _steady(r, "median_s", ".3f")),
    ("mean s", lambda r: _steady(r, "mean_s", ".3f")),
    ("std s", lambda r: _steady(r, "std_s", ".3f")),
    ("min s", lambda r: _steady(r, "min_s", ".3f")),
    ("max s", lambda r: _steady(r, "max_s", ".3f")),
    ("tokens/s", lambda r: _steady(r, "median_tokens_per_s", ",.0f")),
    ("MFU %", lambda r: _steady(r, "median_mfu_pct")),
    ("peak GiB", lambda r: _f(r["mem_peak_gib"], ".1f")),
]
# the comparison goes in the table of the number it compares (Options.basis)
COMPARE_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("published tokens/s", lambda r: _f(r["reference"]["tokens_per_s"], ",.0f") if r["reference"] else "-"),
    ("gap %", _gap),
    ("verdict", lambda r: r["comparison"]["verdict"]),
]


def _window(row: dict[str, Any]) -> str:
    s = row["steady_state"]
    if not s:
        return "-"
    return f"{s['window']} ({s['n']})"


def sections(opts: Options) -> list[tuple[str, list[tuple[str, Callable[[dict[str, Any]], str]]]]]:
    """(title, columns) of the two tables; the comparison sits beside the number it compares."""
    last = "Recipe numbers, from the last step"
    steady = "Steady state: statistics of the window; numbers from its median"
    if opts.basis == "last":
        return [(last, RECIPE_COLUMNS + COMPARE_COLUMNS), (steady, STEADY_COLUMNS)]
    return [(last, RECIPE_COLUMNS), (steady, STEADY_COLUMNS + COMPARE_COLUMNS)]


LEFT = ("run", "model", "dtype", "status", "verdict")


def text_table(columns: list[tuple[str, Callable[[dict[str, Any]], str]]], rows: list[dict[str, Any]]) -> list[str]:
    """Aligned plain-text lines (header, rule, one per row), status and verdict in rich markup.

    Hand-made rather than a rich ``Table``: that takes seconds for a thousand runs, and
    these lines stay whole (no folding) when piped into a file or ``grep``."""
    headers = ["run", *(h for h, _ in columns)]
    cells = [[_name(r), *(cell(r) for _, cell in columns)] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    styles = [STATUS_STYLE if h == "status" else VERDICT_STYLE if h == "verdict" else {} for h in headers]

    def line(values: list[str], bold: bool = False) -> str:
        out = []
        for i, (text, width, header, style) in enumerate(zip(values, widths, headers, styles, strict=True)):
            last = i == len(values) - 1
            padded = escape(text if last else text.ljust(width) if header in LEFT else text.rjust(width))
            tag = "bold" if bold else style.get(text)
            out.append(f"[{tag}]{padded}[/{tag}]" if tag else padded)
        return "  ".join(out)

    return [line(headers, bold=True), "─" * (sum(widths) + 2 * (len(widths) - 1)), *(line(c) for c in cells)]


def print_tables(rows: list[dict[str, Any]], opts: Options, console: Console | None = None) -> None:
    console = console or Console()
    for title, columns in sections(opts):
        lines = [f"[bold]{escape(title)}[/bold]", *text_table(columns, rows), ""]
        console.print("\n".join(lines), highlight=False, soft_wrap=True)
    console.print("\n".join(legend(rows, opts)), markup=False, highlight=False, soft_wrap=True)


def legend(rows: list[dict[str, Any]], opts: Options) -> list[str]:
    """What the tables assumed, and every run's notes, missing facts and errors."""
    window = "35:44 or the second half of a shorter run" if opts.window is None else "{}:{}".format(*opts.window)
    basis = "last step" if opts.basis == "last" else "steady-state median"
    lines = [
        f"FLOPs convention: {opts.flops_convention}; verdict: the {basis}'s tokens/s vs. the published cell, "
        f"pass if no more than {opts.tolerance_pct:g}% slower; steady-state window: {window}.",
        f"References: {tables.recipe_data()['source']}.",
    ]
    assumed = sum(1 for r in rows if r["facts_from"].get("gpu_type", "").startswith("assumed"))
    if assumed:
        lines.append(f"GPU type assumed h100 (the recipe's hardware) for {assumed} run(s); state it with --gpu-type.")
    for row in rows:
        why = []
        if row["error"]:
            why.append(f"unreadable: {row['error']}")
        if row["missing"]:
            flags = " ".join(f"--{k.replace('_', '-')}" for k in row["missing"] if k != "model shape")
            why.append(f"missing {', '.join(row['missing'])}" + (f" (state with {flags})" if flags else ""))
        if row["comparison"]["reason"] and row["comparison"]["verdict"] not in ("pass", "unknown"):
            why.append(row["comparison"]["reason"])
        why += row["notes"]
        if why:
            lines.append(f"{row['source']}: " + "; ".join(why))
    return lines


def to_json(rows: list[dict[str, Any]]) -> str:
    """A JSON list; NaN/inf never appear (they are not JSON): such numbers become null."""
    return json.dumps(_clean(rows), indent=2)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


CSV_KEYS = (
    "source",
    "format",
    "model",
    "dtype",
    "gpus",
    "gpu_type",
    "gbs",
    "layers",
    "seq_len",
    "proxy",
    "status",
    "steps",
    "last_step",
    "planned_steps",
    "last_step_time_s",
    "tokens_per_s",
    "tflops_per_gpu",
    "mfu_pct",
    "ttt_days",
    "mem_peak_gib",
    "time_to_first_step_s",
    "process_to_first_step_s",
)
CSV_STEADY = (
    "window",
    "n",
    "median_s",
    "mean_s",
    "std_s",
    "min_s",
    "max_s",
    "median_tokens_per_s",
    "median_tflops_per_gpu",
    "median_mfu_pct",
    "median_ttt_days",
)
CSV_COMPARE = ("ratio", "gap_pct", "mfu_gap_pts", "verdict", "reason")


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    header = [
        *CSV_KEYS,
        *(f"steady_{k}" for k in CSV_STEADY),
        "ref_tokens_per_s",
        "ref_mfu_pct",
        "ref_ttt_days",
        *CSV_COMPARE,
        "missing",
        "notes",
        "error",
    ]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in _clean(rows):
            s, ref, c = r["steady_state"] or {}, r["reference"] or {}, r["comparison"]
            w.writerow(
                [
                    *(r[k] for k in CSV_KEYS),
                    *(s.get(k) for k in CSV_STEADY),
                    ref.get("tokens_per_s"),
                    ref.get("mfu_pct"),
                    ref.get("ttt_days"),
                    *(c[k] for k in CSV_COMPARE),
                    "; ".join(r["missing"]),
                    "; ".join(r["notes"]),
                    r["error"],
                ]
            )


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(rows: list[dict[str, Any]], opts: Options) -> str:
    def table(columns: list[tuple[str, Callable[[dict[str, Any]], str]]]) -> list[str]:
        out = ["| run | " + " | ".join(h for h, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
        out += ["| " + " | ".join(_md(x) for x in [_name(r), *(cell(r) for _, cell in columns)]) + " |" for r in rows]
        return out

    lines = ["# trainbench report", ""]
    for title, columns in sections(opts):
        lines += [f"## {title}", "", *table(columns), ""]
    lines += ["## Notes", "", *(f"- {_md(line)}" for line in legend(rows, opts)), ""]
    return "\n".join(lines)
