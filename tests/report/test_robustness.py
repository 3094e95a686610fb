"""Truncated, interleaved, garbage, huge and unreadable logs: reported, never a crash."""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.report.recipe_logs import WRITERS, log_text, provenance, recipe_path, step_times
from trainbench.report import build
from trainbench.report.render import to_json


def rows(*paths: Path, **flags: object) -> list[dict]:
    return [row for _, row in build([str(p) for p in paths], flags)]


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_truncated_mid_line(tmp_path: Path, fmt: str) -> None:
    path = recipe_path(tmp_path, "fp8", "405b", 576, 1)
    text = log_text(fmt, step_times(11.24), gbs=252).encode()
    cut = text.index(WRITERS[fmt](31, 50, step_times(11.24)[30], 252).encode()) + 60
    path.write_bytes(text[:cut])  # killed while writing step 31
    (row,) = rows(tmp_path)
    assert row["status"] == "incomplete"
    assert row["steps"] == 30 and row["planned_steps"] == 50
    assert row["comparison"]["verdict"] == "invalid"  # a published cell exists, but the run did not finish
    assert row["tokens_per_s"] == pytest.approx(8192 * 252 / step_times(11.24)[29])


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_interleaved_ranks_with_spliced_lines(tmp_path: Path, fmt: str) -> None:
    """8 ranks print each line; some of their writes land inside another rank's line."""
    rnd = random.Random(0)
    times = step_times(11.24)
    out: list[str] = [provenance("405b", 576, "fp8")]
    for s, t in enumerate(times, 1):
        line = WRITERS[fmt](s, 50, t, 252)
        for rank in range(8):
            if rnd.random() < 0.2:  # another rank's text spliced into this one
                k = rnd.randrange(len(line))
                out.append(f"{rank}: {line[:k]}[rank {rank} NCCL INFO ...]{line[k:]}")
            else:
                out.append(f"{rank}: {line}")
    recipe_path(tmp_path, "fp8", "405b", 576, 1).write_text("\n".join(out) + "\n")
    (row,) = rows(tmp_path)
    assert row["status"] == "complete" and row["steps"] == 50
    assert row["tokens_per_s"] == pytest.approx(183664, rel=0.002)


def test_binary_garbage(tmp_path: Path) -> None:
    path = recipe_path(tmp_path, "bf16", "405b", 576, 1)
    path.write_bytes(os.urandom(300_000) + b"train_step_timing\x00\xff\rTraceback (most recent call last)")
    (row,) = rows(tmp_path)
    assert row["status"] == "failed" and row["steps"] == 0  # a traceback and no finished steps
    assert row["comparison"]["verdict"] == "unknown"
    assert any("no step lines" in n for n in row["notes"])


def test_nan_grad_norm_and_traceback_in_err(tmp_path: Path) -> None:
    nan = recipe_path(tmp_path, "fp8", "405b", 576, 1)
    lines = [WRITERS["megatron"](s, 50, 11.0, 252) for s in range(1, 51)]
    lines[20] = lines[20].replace("grad norm: 1.234", "grad norm: nan")
    nan.write_text("\n".join(lines))
    failed = recipe_path(tmp_path, "fp8", "405b", 1152, 2)
    failed.write_text(log_text("nemo2", step_times(11.31)[:12], gbs=504, total=50))
    failed.with_suffix(".err").write_text("Traceback (most recent call last):\n  ...\nRuntimeError: NCCL timeout\n")
    by_gpus = {r["gpus"]: r for r in rows(tmp_path)}
    assert by_gpus[576]["status"] == "NaN" and by_gpus[576]["comparison"]["verdict"] == "invalid"
    assert by_gpus[1152]["status"] == "failed"


def test_unreadable_files_are_reported_and_the_rest_processed(tmp_path: Path) -> None:
    good = recipe_path(tmp_path, "fp8", "405b", 576, 1)
    good.write_text(log_text("megatron", step_times(11.24), gbs=252))
    d = good.parent
    (d / "log-nemo_llama3.1_405b_576_2.out").symlink_to(d / "gone.out")  # dangling
    os.mkfifo(d / "log-nemo_llama3.1_405b_576_4.out")  # would block a naive open()
    locked = d / "log-nemo_llama3.1_405b_576_5.out"
    locked.write_text("x")
    locked.chmod(0)
    result = rows(tmp_path, tmp_path / "not-there")
    status = {Path(r["source"]).name: (r["status"], r["error"]) for r in result}
    assert status[good.name] == ("complete", None)
    assert status["log-nemo_llama3.1_405b_576_2.out"][0] == "unreadable"
    assert "not a regular file" in status["log-nemo_llama3.1_405b_576_4.out"][1]
    assert status["not-there"] == ("unreadable", "no such file or directory")
    if os.geteuid() != 0:  # root reads anything
        assert status[locked.name][0] == "unreadable"
    assert result[0]["source"] == str(good)  # readable runs first


def test_100_mb_log(tmp_path: Path) -> None:
    """100 MB: 50 Megatron steps between floods of rank warnings, and a 10 MB stretch of bytes
    without a line break; written by repeating blocks so the test stays fast."""
    path = recipe_path(tmp_path, "fp8", "405b", 576, 1)
    noise = b"[rank12]:W1201 12:00:00.000 ProcessGroupNCCL.cpp:1234] Warning: something about streams\n" * 22_000
    no_break = b"\x1b[2K=" * 1_700_000
    times = step_times(11.24)
    with open(path, "wb") as fh:
        fh.write((provenance("405b", 576, "fp8") + "\n").encode())
        for s, t in enumerate(times, 1):
            fh.write(noise)
            if s == 25:
                fh.write(no_break)
            fh.write((WRITERS["megatron"](s, 50, t, 252) + "\n").encode())
    assert path.stat().st_size > 100_000_000
    start = time.perf_counter()
    (row,) = rows(tmp_path)
    elapsed = time.perf_counter() - start
    assert row["status"] == "complete" and row["steps"] == 50
    assert row["tokens_per_s"] == pytest.approx(183664, rel=0.002)
    print(f"100 MB log reported in {elapsed:.2f} s")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from([b"", b"GSW: MODEL_SIZE=405b JOB_NUM_NODES=", b"iteration 3/"]))
def test_whole_pipeline_on_any_bytes(data: bytes, prefix: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = recipe_path(Path(tmp), "fp8", "405b", 576, 1)
        path.write_bytes(prefix + data)
        (row,) = rows(Path(tmp))
        assert row["status"] in ("complete", "incomplete", "failed", "NaN")
        json.loads(to_json([row]))
