"""How fast ``trainbench report`` reads many logs: 1,000 synthetic recipe logs of 50 steps each
(the three foreign formats in turn, spread over the recipe's 12 published cells, in the recipe's
layout) in a temporary directory, then the report timed stage by stage. A benchmark, not a test.

    .venv/bin/python benchmarks/report_speed.py [--logs 1000] [--steps 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

from trainbench.recipe import tables
from trainbench.report import Options, build, render
from trainbench.report.parsers import LINE_WRITERS


def write_logs(root: Path, logs: int, steps: int) -> int:
    """Write ``logs`` .out files; return their total size in bytes."""
    refs = tables.references()
    formats = sorted(LINE_WRITERS)
    size = 0
    for i in range(logs):
        ref, fmt = refs[i % len(refs)], formats[i % len(formats)]
        d = root / "24.11" / ref.dtype / ref.model / str(ref.gpus)
        d.mkdir(parents=True, exist_ok=True)
        times = [ref.step_time_s * (3.0 if s == 1 else 1 + 0.002 * ((s * 7 + i) % 5 - 2)) for s in range(1, steps + 1)]
        lines = [LINE_WRITERS[fmt](s, steps, round(t, 4), ref.gbs) for s, t in enumerate(times, 1)]
        header = f"GSW: MODEL=llama3.1 FRAMEWORK=nemo MODEL_SIZE={ref.model} DTYPE={ref.dtype} JOB_ID={i}\n"
        text = header + ("\r" if fmt == "nemo-24.09" else "\n").join(lines) + "\n"
        path = d / f"log-nemo_llama3.1_{ref.model}_{ref.gpus}_{i}.out"
        path.write_text(text, encoding="utf-8")
        size += path.stat().st_size
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        start = time.perf_counter()
        size = write_logs(root, args.logs, args.steps)
        took = time.perf_counter() - start
        print(f"wrote {args.logs} logs x {args.steps} steps ({size / 1e6:.1f} MB) in {took:.2f} s")
        stages: dict[str, list[float]] = {"read + analyse": [], "JSON": [], "table": [], "total": []}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            pairs = build([str(root)], opts=Options())
            t1 = time.perf_counter()
            rows = [row for _, row in pairs]
            render.to_json(rows)
            t2 = time.perf_counter()
            render.print_tables(rows, Options(), Console(file=io.StringIO(), width=200))
            t3 = time.perf_counter()
            for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                stages[key].append(value)
        assert len(rows) == args.logs and all(r["comparison"]["verdict"] == "pass" for r in rows)
        for key, values in stages.items():
            median = statistics.median(values)
            print(f"{key:>15}: median {median:.2f} s over {args.repeat} runs (min {min(values):.2f} s)")
        total = statistics.median(stages["total"])
        print(f"{args.logs} logs reported in {total:.2f} s ({args.logs / total:,.0f} logs/s)")


if __name__ == "__main__":
    main()
