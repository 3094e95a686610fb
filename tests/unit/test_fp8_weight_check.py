"""benchmarks/fp8_weight_check.py on CPU: a tiny block, where every pair is bit-identical (no
non-deterministic attention backward, inductor's CPU fusion the same either way)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_cached_fp8_weights_compute_the_same_tiny_block_on_cpu():
    pytest.importorskip("torchao")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    script = ROOT / "benchmarks" / "fp8_weight_check.py"
    proc = subprocess.run([sys.executable, str(script), "--shape", "tiny"], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(r["compiled"], r["pair"][1]) for r in rows] == [
        (False, "torchao"), (False, "cached"), (True, "torchao"), (True, "cached")
    ]  # fmt: skip
    assert all(r["bit_identical"] and r["output_rel_diff"] == 0.0 for r in rows), rows
