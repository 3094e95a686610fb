"""Run the speed matrix on a GPU machine and print one table (issue: speed on one H200).

    PYTHONPATH=src python3 benchmarks/gpu_matrix.py [--steps 50] [--results-dir /tmp/tb] [--only 8b-fp8,...]
                                                    [--timeout SECONDS]

Each cell is a separate ``trainbench run`` process (a fresh CUDA context and allocator,
as a user gets); the table is read from the runs' summaries. A cell whose plan does not
fit, or whose run fails, gets a row saying so instead of a number. On a GPU the default
``trainbench run`` is the 8B-shaped proxy in BF16, so ``default`` is also the 8B BF16 cell.
A cell still running after ``--timeout`` seconds is stopped as a scheduler would (SIGTERM):
its steps so far stay in its records and its summary says ``incomplete``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CELLS = {  # name -> trainbench run arguments
    "default": [],  # = 8b bf16 on a GPU
    "8b-fp8": ["--model", "8b", "--dtype", "fp8"],
    "405b-bf16": ["--model", "405b", "--dtype", "bf16"],
    "405b-fp8": ["--model", "405b", "--dtype", "fp8"],
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--results-dir", type=Path, default=Path("/tmp/trainbench-matrix"))
    ap.add_argument("--only", default=",".join(CELLS))
    ap.add_argument("--timeout", type=float, default=None, help="seconds per cell before SIGTERM")
    args = ap.parse_args()
    if args.timeout is not None and not args.timeout > 0:
        ap.error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if unknown := [n for n in args.only.split(",") if n not in CELLS]:
        ap.error(f"unknown cell(s) {', '.join(unknown)}; choose from {', '.join(CELLS)}")
    rows = []
    for name in args.only.split(","):
        run_id = f"matrix-{name}"
        cmd = [sys.executable, "-m", "trainbench", "run", "--gpus", "1", "--steps", str(args.steps),
               "--results-dir", str(args.results_dir), "--run-id", run_id, "--no-progress", *CELLS[name]]  # fmt: skip
        args.results_dir.mkdir(parents=True, exist_ok=True)
        log = args.results_dir / f"{run_id}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            try:
                proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()  # the run records what it did and marks itself incomplete
                proc.wait(timeout=60)
        summaries = list(args.results_dir.rglob(f"*_{run_id}.summary.json"))
        if not summaries:
            rows.append((name, f"not run (exit {proc.returncode}): {log.read_text().strip().splitlines()[-1:]}"))
            continue
        s = json.loads(summaries[0].read_text())
        steady, peak = s["results"].get("steady_state") or {}, s["results"].get("mem_peak_gib") or float("nan")
        plan_gib = s["provenance"]["plan_memory_gib"]["total_gib"]
        first = s["results"].get("time_to_first_step_s") or float("nan")
        startup = s["results"].get("startup") or {}
        nan = float("nan")
        first_text = (
            f"first step after {first:.1f} s (build {startup.get('build_s') or nan:.1f}, "
            f"step 1 {startup.get('first_step_s') or nan:.1f}; "
            f"{startup.get('process_to_first_step_s') or nan:.1f} s from process start)"
        )
        text = (
            f"{s['status']} ({s['steps_done']} steps): layers {s['config']['model']['layers']}, "
            f"median {steady.get('median_s', float('nan')):.3f} s, "
            f"MFU {steady.get('median_mfu_pct') or float('nan'):.2f}%, "
            f"tokens/s {steady.get('median_tokens_per_s') or float('nan'):,.0f}, "
            f"peak {peak:.1f} GiB (plan {plan_gib:.1f}), {first_text}, "
            f"alloc retries {s['results'].get('alloc_retries')}"
        )
        rows.append((name, text))
    width = max(len(n) for n, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
