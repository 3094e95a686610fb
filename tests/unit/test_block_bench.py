"""benchmarks/block_bench.py runs end to end (on CPU here: a smoke test of the script, not a timing)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "block_bench.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=240)


def test_each_variant_reports_its_time_and_kernels(tmp_path):
    proc = run("--shape", "tiny", "--variants", "bf16,fp8", "--iters", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["variant"] for r in rows] == ["bf16", "fp8"]
    for r in rows:
        assert "error" not in r, r
        assert r["ms"] > 0 and r["kernels"] and all(k["us"] > 0 for k in r["kernels"])
    # fp8 runs torch._scaled_mm; bf16 does not
    assert any("scaled_mm" in k["name"] for k in rows[1]["kernels"])
    assert not any("scaled_mm" in k["name"] for k in rows[0]["kernels"])
    assert (tmp_path / "kernels-tiny-fp8.txt").exists()


def test_an_unknown_variant_is_refused():
    proc = run("--shape", "tiny", "--variants", "bf16,fp9")
    assert proc.returncode == 2
    assert "unknown variant(s) fp9" in proc.stderr
