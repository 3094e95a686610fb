"""trainbench's own run directories, written here with ``trainbench.train.records`` as the
``run`` command writes them: status from the summary, numbers from the JSONL step records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trainbench.recipe.resolve import resolve
from trainbench.report import Options, build
from trainbench.train.records import RunSummary, StepRecord, out_step_line, provenance_line, run_dir, run_stem

# tiny preset by hand (recipe formula, README "Notes"): L=4, h=128, F=384, a=8, g=4, seq=256, V=512
TINY_FLOPS = 256 * (12 * 4 * 128**2 * (1 + 4 / 8 + 256 / 128) + 18 * 4 * 384 * 128 + 6 * 512 * 128)
TINY_TOKENS = 256 * 4  # seq x GBS


def write_run(
    root: Path,
    times: list[float],
    *,
    status: str | None = "complete",
    run_id: str = "r1",
    warmup: int = 2,
    nan_at: int | None = None,
    planned: int | None = None,
    gpu_type: str = "h100",
    files: tuple[str, ...] = ("out", "steps", "summary"),
    mem_gib: list[float] | None = None,
    results: dict | None = None,
) -> Path:
    plan = resolve("tiny", 1, "bf16", gpu_type)
    plan.train.steps = planned or len(times)
    d = run_dir(root, plan.dtype, plan.model.name, plan.gpus)
    d.mkdir(parents=True, exist_ok=True)
    stem = d / run_stem(plan.model.name, plan.gpus, run_id)
    prov = {
        "MODEL": "llama3.1",
        "FRAMEWORK": "trainbench",
        "MODEL_SIZE": "tiny",
        "JOB_NUM_NODES": 1,
        "GPUS_PER_NODE": 1,
        "DTYPE": "bf16",
        "GBS": 4,
        "LAYERS": 4,
        "SEQ_LEN": 256,
        "GPU_TYPE": gpu_type,
    }
    out_lines, jsonl = [provenance_line(prov)], []
    for step, t in enumerate(times, 1):
        rec = StepRecord(
            step=step,
            step_time_s=t,
            loss=math.nan if step == nan_at else 6.0,
            tokens_per_s=TINY_TOKENS / t,
            tflops_per_gpu=0.0,
            mfu_pct=None,
            lr=1e-4,
            grad_norm=1.0,
            consumed_samples=4 * step,
            mem_peak_gib=mem_gib[step - 1] if mem_gib else 0.1,
            mem_reserved_gib=0.2,
            warmup=step <= warmup,
        )
        jsonl.append(rec.to_json())
        out_lines.append(out_step_line(rec, plan.train.steps))
    if "out" in files:
        Path(f"{stem}.out").write_text("\n".join(out_lines) + "\n")
    if "steps" in files:
        Path(f"{stem}.steps.jsonl").write_text("\n".join(jsonl) + "\n")
    if "summary" in files and status is not None:
        summary = RunSummary(
            status=status,
            run_id=run_id,
            config=plan.to_dict(),
            provenance={"device_name": "cpu"},
            started_at="2026-01-01T00:00:00+00:00",
            steps_done=len(times),
            results=results or {},
        )
        summary.write(Path(f"{stem}.summary.json"))
    return d


def one(root: Path, **kw: object) -> dict:
    pairs = build([str(root)], opts=Options(**kw))  # type: ignore[arg-type]
    assert len(pairs) == 1
    return pairs[0][1]


TIMES = [3.0, 1.5] + [0.1 + 0.001 * (s % 3) for s in range(3, 51)]


def test_complete_cpu_run(tmp_path: Path) -> None:
    write_run(tmp_path, TIMES)
    row = one(tmp_path)
    assert (row["format"], row["status"], row["steps"], row["planned_steps"]) == ("trainbench", "complete", 50, 50)
    assert (row["model"], row["dtype"], row["gpus"], row["gbs"], row["layers"], row["seq_len"]) == (
        "tiny",
        "bf16",
        1,
        4,
        4,
        256,
    )
    assert row["facts_from"]["gbs"] == "config"
    t = TIMES[-1]
    assert row["last_step_time_s"] == t
    assert row["tokens_per_s"] == pytest.approx(TINY_TOKENS / t)
    assert row["model_flops_per_sample"] == pytest.approx(TINY_FLOPS)
    assert row["tflops_per_gpu"] == pytest.approx(4 * TINY_FLOPS / t / 1e12)
    assert row["mfu_pct"] == pytest.approx(100 * 4 * TINY_FLOPS / t / 1e12 / 989)
    assert row["ttt_days"] == pytest.approx(1e12 / (TINY_TOKENS / t) / 86400)
    assert row["comparison"]["verdict"] == "no-reference"


def test_cpu_gpu_type_has_no_mfu(tmp_path: Path) -> None:
    write_run(tmp_path, TIMES, gpu_type="cpu")
    row = one(tmp_path)
    assert row["status"] == "complete" and row["gpu_type"] == "cpu"
    assert row["mfu_pct"] is None and row["tokens_per_s"] == pytest.approx(TINY_TOKENS / TIMES[-1])
    assert any("no MFU" in n for n in row["notes"])


def test_window_leaves_out_flagged_warmup(tmp_path: Path) -> None:
    times = [5.0] * 6 + [1.0] * 6  # 12 steps: default window 7:12 (second half); warm-up flags 1-8
    write_run(tmp_path, times, warmup=8)
    row = one(tmp_path)
    assert row["steady_state"]["window"] == "9:12"
    assert row["steady_state"]["median_s"] == 1.0


@pytest.mark.parametrize(
    ("status", "expected"),
    [("complete", "complete"), ("incomplete", "incomplete"), ("failed", "failed"), ("running", "incomplete")],
)
def test_status_from_summary(tmp_path: Path, status: str, expected: str) -> None:
    write_run(tmp_path, TIMES[:10], status=status, planned=50)
    assert one(tmp_path)["status"] == expected


def test_nan_loss_is_nan(tmp_path: Path) -> None:
    write_run(tmp_path, TIMES, status="failed", nan_at=30)
    assert one(tmp_path)["status"] == "NaN"


def test_no_summary_is_incomplete_and_facts_come_from_the_out_file(tmp_path: Path) -> None:
    write_run(tmp_path, TIMES, status=None)
    row = one(tmp_path)
    assert row["status"] == "incomplete"
    assert row["gbs"] == 4 and row["facts_from"]["gbs"] == "log" and row["layers"] == 4
    assert row["tokens_per_s"] == pytest.approx(TINY_TOKENS / TIMES[-1])


def test_only_the_out_file(tmp_path: Path) -> None:
    d = write_run(tmp_path, TIMES, files=("out",))
    (out,) = d.glob("*.out")
    pairs = build([str(out)])
    row = pairs[0][1]
    assert (row["format"], row["status"], row["steps"]) == ("trainbench", "complete", 50)
    assert row["gbs"] == 4 and row["gpu_type"] == "h100" and row["facts_from"]["gpu_type"] == "log"
    assert row["last_step_time_s"] == pytest.approx(TIMES[-1], abs=1e-4)  # the .out prints 4 decimals


def test_truncated_jsonl_and_broken_summary(tmp_path: Path) -> None:
    d = write_run(tmp_path, TIMES)
    (steps,) = d.glob("*.steps.jsonl")
    steps.write_bytes(steps.read_bytes()[:-40])  # killed mid-write: the last line is cut
    (summary,) = d.glob("*.summary.json")
    summary.write_text('{"status": "comp')
    row = one(tmp_path)
    assert row["steps"] == 49 and row["status"] == "incomplete"
    assert any("unreadable line" in n for n in row["notes"]) and any(
        "summary.json unreadable" in n for n in row["notes"]
    )


def test_named_out_file_brings_its_records(tmp_path: Path) -> None:
    d = write_run(tmp_path, TIMES)
    (out,) = d.glob("*.out")
    pairs = build([str(out), str(d)])  # the same run named twice is reported once
    assert len(pairs) == 1
    run, row = pairs[0]
    assert run.warmup_steps == (1, 2)  # came from the JSONL, not the .out
    assert json.loads(Path(str(out).replace(".out", ".summary.json")).read_text())["status"] == row["status"]


@pytest.mark.parametrize("files", [("out", "steps", "summary"), ("out",)], ids=["records", "out-only"])
def test_peak_memory_is_the_largest_step_peak(tmp_path: Path, files: tuple[str, ...]) -> None:
    mem = [100.0 + 0.5 * (s % 7) for s in range(50)]  # GiB; the .out line rounds to 2 decimals
    write_run(tmp_path, TIMES, mem_gib=mem, files=files)
    assert one(tmp_path)["mem_peak_gib"] == pytest.approx(max(mem), abs=0.005)


def test_cpu_runs_have_no_peak_memory(tmp_path: Path) -> None:
    write_run(tmp_path, TIMES, mem_gib=[0.0] * 50)  # CPU runs log 0: no allocator statistics
    assert one(tmp_path)["mem_peak_gib"] is None


def test_the_time_to_the_first_step_comes_from_the_summary(tmp_path: Path) -> None:
    """The 405B FP8 cold start of BENCHMARKS.md: 24.0 s from the run's start, 32.6 s from the process's."""
    startup = {"build_s": 8.6, "first_step_s": 15.5, "process_to_first_step_s": 32.6}
    write_run(tmp_path / "a", TIMES, results={"time_to_first_step_s": 24.0, "startup": startup})
    row = one(tmp_path / "a")
    assert (row["time_to_first_step_s"], row["process_to_first_step_s"]) == (24.0, 32.6)
    write_run(tmp_path / "b", TIMES)  # a summary of a run from before the breakdown existed
    assert (one(tmp_path / "b")["time_to_first_step_s"], one(tmp_path / "b")["process_to_first_step_s"]) == (None, None)
    write_run(
        tmp_path / "c", TIMES, results={"time_to_first_step_s": "soon", "startup": {"process_to_first_step_s": -1}}
    )
    assert (one(tmp_path / "c")["time_to_first_step_s"], one(tmp_path / "c")["process_to_first_step_s"]) == (None, None)


def test_csv_carries_the_time_to_the_first_step(tmp_path: Path) -> None:
    import csv

    from trainbench.report.render import write_csv

    write_run(tmp_path, TIMES, results={"time_to_first_step_s": 24.0, "startup": {"process_to_first_step_s": 32.6}})
    write_csv([one(tmp_path)], tmp_path / "runs.csv")
    (line,) = csv.DictReader((tmp_path / "runs.csv").open())
    assert (float(line["time_to_first_step_s"]), float(line["process_to_first_step_s"])) == (24.0, 32.6)
