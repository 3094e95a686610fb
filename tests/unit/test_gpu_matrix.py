"""benchmarks/gpu_matrix.py end to end on CPU: each cell is a real ``trainbench run`` process and
its row is read back from that run's summary (a smoke test of the script, not a timing)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_matrix.py"


def test_rows_come_from_each_runs_summary_and_a_refused_cell_says_why(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(SCRIPT), "--steps", "2", "--only", "default,8b-fp8", "--results-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    default, fp8 = proc.stdout.splitlines()[-2:]
    # on CPU the default run is the tiny preset; its numbers are the summary's
    (summary_path,) = tmp_path.rglob("*_matrix-default.summary.json")
    s = json.loads(summary_path.read_text())
    median, startup = s["results"]["steady_state"]["median_s"], s["results"]["startup"]
    assert default.startswith("default") and "complete (2 steps): layers 4" in default
    assert f"median {median:.3f} s" in default
    assert f"build {startup['build_s']:.1f}, step 1 {startup['first_step_s']:.1f}" in default
    assert re.search(rf"{startup['process_to_first_step_s']:.1f} s from process start", default)
    assert fp8.startswith("8b-fp8") and "not run (exit 2)" in fp8 and "needs a GPU with FP8" in fp8
