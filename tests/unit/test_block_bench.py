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
    proc = run("--shape", "tiny", "--variants", "bf16,fp8,fp8-fused-nocache", "--iters", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["variant"] for r in rows] == ["bf16", "fp8", "fp8-fused-nocache"]
    for r in rows:
        assert "error" not in r, r
        assert r["ms"] > 0 and r["kernels"] and all(k["us"] > 0 for k in r["kernels"])
    # fp8 runs torch._scaled_mm; bf16 does not
    assert all(any("scaled_mm" in k["name"] for k in r["kernels"]) for r in rows[1:])
    assert not any("scaled_mm" in k["name"] for k in rows[0]["kernels"])
    assert (tmp_path / "kernels-tiny-fp8.txt").exists()


def test_an_unknown_variant_and_no_iterations_are_refused():
    proc = run("--shape", "tiny", "--variants", "bf16,fp9")
    assert proc.returncode == 2
    assert "fp9: starts with one of bf16, fp8" in proc.stderr
    proc = run("--shape", "tiny", "--variants", "bf16-nocache")
    assert proc.returncode == 2
    assert "-nocache is not a modifier of bf16" in proc.stderr
    proc = run("--shape", "tiny", "--iters", "0")
    assert proc.returncode == 2
    assert "--iters must be at least 1, got 0" in proc.stderr


def test_fused_projections_compute_the_same_block():
    """The bench's fused q/k/v and gate/up hold the same weights: the block's output is unchanged."""
    import copy
    import importlib.util

    import torch

    from trainbench.config import ModelConfig
    from trainbench.model.llama import TransformerBlock
    from trainbench.model.rope import rope_cache

    spec = importlib.util.spec_from_file_location("block_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    cfg = ModelConfig()
    block = TransformerBlock(0, cfg)
    block.init_weights()
    fused = copy.deepcopy(block)
    bench.fuse_projections(fused, cfg)
    assert not hasattr(fused.attention, "wq") and fused.feed_forward.w13.weight.shape == (2 * cfg.ffn, cfg.hidden)
    x = torch.randn(2, cfg.seq_len, cfg.hidden)
    table = rope_cache(cfg)
    torch.testing.assert_close(fused(x, table), block(x, table), rtol=1e-5, atol=1e-5)
