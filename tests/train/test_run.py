"""``trainbench run`` on CPU: it learns, its records round-trip, and faults keep every record."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainbench.cli import main
from trainbench.recipe.resolve import resolve
from trainbench.train.data import SyntheticTokens
from trainbench.train.dist import DistContext
from trainbench.train.loop import Trainer
from trainbench.train.optim import lr_at
from trainbench.train.records import RunSummary, StepRecord, parse_provenance_line
from trainbench.train.run import execute
from trainbench.train.timing import StepTimer

CPU = torch.device("cpu")
FAST = ["train.gbs=2", "train.warmup_steps=1"]


def run_files(root: Path) -> tuple[Path, Path, Path]:
    (summary,) = root.rglob("*.summary.json")
    stem = str(summary).removesuffix(".summary.json")
    return Path(stem + ".out"), Path(stem + ".steps.jsonl"), summary


def test_tiny_learns_a_learnable_stream(tmp_path):
    plan = resolve("tiny", 1, "bf16", "cpu", ["train.data=pattern", "train.lr=1e-2", "train.steps=12", *FAST])
    out = execute(plan, results_root=tmp_path, run_id="learn", device=CPU)
    assert out.status == "complete" and out.exit_code == 0
    losses = [StepRecord.from_json(line).loss for line in run_files(tmp_path)[1].read_text().splitlines()]
    assert len(losses) == 12
    assert losses[0] == pytest.approx(torch.log(torch.tensor(512.0)).item(), rel=0.1)  # uniform at init
    assert losses[-1] < 0.5 * losses[0]


def test_records_round_trip_and_recipe_grep_works(tmp_path, capsys):
    args = ["run", "--model", "tiny", "--steps", "3", "--results-dir", str(tmp_path), "--run-id", "rt", *FAST]
    assert main(args) == 0
    out_path, steps_path, summary_path = run_files(tmp_path)
    assert out_path.parent == tmp_path / "24.11" / "bf16" / "tiny" / "1"
    assert out_path.name == "log-trainbench_llama3.1_tiny_1_rt.out"
    lines = out_path.read_text().splitlines()
    gsw = parse_provenance_line(lines[0])
    assert gsw["MODEL"] == "llama3.1" and gsw["MODEL_SIZE"] == "tiny" and gsw["DTYPE"] == "bf16"
    assert gsw["JOB_ID"] == "rt" and gsw["GBS"] == "2"
    timings = [float(m.group(1)) for m in re.finditer(r"train_step_timing in s=([\d.]+)", out_path.read_text())]
    records = [StepRecord.from_json(line) for line in steps_path.read_text().splitlines()]
    assert [r.step for r in records] == [1, 2, 3]
    assert timings == [pytest.approx(r.step_time_s, abs=1e-4) for r in records]
    assert [r.consumed_samples for r in records] == [2, 4, 6]
    assert records[0].tokens_per_s == pytest.approx(256 * 2 / records[0].step_time_s)
    assert all(r.mfu_pct is None for r in records)  # a CPU has no peak: no MFU, never a made-up one
    summary = RunSummary.read(summary_path)
    assert summary.status == "complete" and summary.steps_done == 3 and summary.ended_at
    assert summary.config["model"]["layers"] == 4 and summary.provenance["torch_version"] == torch.__version__
    assert summary.results["last_step"]["step_time_s"] == records[-1].step_time_s
    assert summary.results["steady_state"]["first_step"] == 2  # step 1 (warm-up) is outside the window
    assert records[0].warmup and not records[-1].warmup
    captured = capsys.readouterr()
    assert "not benchmark numbers" in captured.err
    assert captured.out.count("train_step_timing in s=") == 3  # no terminal: each step echoed as it ends


def test_an_existing_run_is_never_overwritten(tmp_path, capsys):
    args = ["run", "--model", "tiny", "--steps", "1", "--results-dir", str(tmp_path), "--run-id", "same", *FAST]
    assert main(args) == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(args) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


class PoisonAt(Trainer):
    """A real trainer whose weights turn to Inf before step ``at``: a genuine NaN loss."""

    at = 3

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = 0

    def step(self, batches, lr):
        self.calls += 1
        if self.calls == self.at:
            with torch.no_grad():
                self.model.norm.weight.fill_(float("inf"))
        return super().step(batches, lr)


def test_nan_loss_stops_the_run_and_keeps_every_record(tmp_path):
    plan = resolve("tiny", 1, "bf16", "cpu", ["train.steps=6", *FAST])
    out = execute(plan, results_root=tmp_path, run_id="nan", device=CPU, make_trainer=PoisonAt)
    assert out.status == "failed" and out.exit_code == 1
    out_path, steps_path, summary_path = run_files(tmp_path)
    records = [StepRecord.from_json(line) for line in steps_path.read_text().splitlines()]
    assert [r.step for r in records] == [1, 2, 3]  # the NaN step is kept, nothing after it runs
    assert not torch.isfinite(torch.tensor(records[-1].loss))
    summary = RunSummary.read(summary_path)
    assert summary.status == "failed" and "non-finite loss" in summary.failure and "step 3" in summary.failure
    assert "run failed" in out_path.read_text().splitlines()[-1]


class OomAt(Trainer):
    def step(self, batches, lr):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_is_reported_with_the_plan_and_what_to_change(tmp_path):
    plan = resolve("tiny", 1, "bf16", "cpu", ["train.steps=2", *FAST])
    out = execute(plan, results_root=tmp_path, run_id="oom", device=CPU, make_trainer=OomAt)
    summary = RunSummary.read(run_files(tmp_path)[2])
    assert out.status == "failed" and summary.status == "failed"
    for words in ("out of memory", "Tried to allocate 20.00 GiB", "estimated", "model.layers=2",
                  "train.activation_checkpointing=true"):  # fmt: skip
        assert words in summary.failure


def test_sigterm_leaves_records_and_an_incomplete_summary(tmp_path):
    cmd = [sys.executable, "-m", "trainbench", "run", "--model", "tiny", "--steps", "500",
           "--results-dir", str(tmp_path), "--run-id", "term", *FAST]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "CI": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        steps = list(tmp_path.rglob("*.steps.jsonl"))
        if steps and len(steps[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    _, steps_path, summary_path = run_files(tmp_path)
    done = [StepRecord.from_json(line).step for line in steps_path.read_text().splitlines()]
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "incomplete" and "Terminated" in summary["failure"]
    assert summary["steps_done"] == len(done) >= 2 and done == list(range(1, len(done) + 1))


def test_step_timer_takes_the_slowest_rank_and_the_work_inside():
    timer = StepTimer(CPU, reduce_max=lambda x: max(x, 0.5))  # another rank took 0.5 s
    timer.start()
    time.sleep(0.05)
    assert timer.stop() == 0.5
    timer = StepTimer(CPU)
    timer.start()
    time.sleep(0.05)
    assert 0.05 <= timer.stop() < 0.5
    with pytest.raises(AssertionError):
        timer.stop()


def test_learning_rate_follows_the_recipes_warmup_and_cosine():
    t = resolve("8b", 8).train
    assert lr_at(49, t) == pytest.approx(7.5e-6)  # the recipe's logs: lr 7.496e-06 at step 50
    assert lr_at(1999, t) == pytest.approx(3e-4)
    assert lr_at(t.decay_steps, t) == pytest.approx(3e-5)
    mid = (t.warmup_steps + t.decay_steps) // 2
    assert lr_at(mid, t) == pytest.approx((3e-4 + 3e-5) / 2, rel=1e-3)


def test_synthetic_data_is_one_global_batch_sliced_by_data_parallel_rank():
    plan = resolve("tiny", 1)
    single = SyntheticTokens(plan.model, plan.train, dp_rank=0, device=CPU).step_batches(step=5, ga=4)
    again = SyntheticTokens(plan.model, plan.train, dp_rank=0, device=CPU).step_batches(step=5, ga=4)
    rank1 = SyntheticTokens(plan.model, plan.train, dp_rank=1, device=CPU).step_batches(step=5, ga=2)
    other_step = SyntheticTokens(plan.model, plan.train, dp_rank=0, device=CPU).step_batches(step=6, ga=4)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(single, again, strict=True))
    # DP rank 1 of 2 holds samples 2 and 3 of the same global batch
    assert torch.equal(rank1[0][0], single[2][0]) and torch.equal(rank1[1][0], single[3][0])
    assert not torch.equal(single[0][0], single[1][0]) and not torch.equal(single[0][0], other_step[0][0])
    inputs, labels = single[0]
    assert inputs.shape == (1, 256) and torch.equal(inputs[:, 1:], labels[:, :-1])  # labels are the next tokens
    assert int(inputs.max()) < 512 and int(inputs.min()) >= 0


def test_fp8_converts_block_linears_and_keeps_the_output_layer_bf16():
    pytest.importorskip("torchao")
    from torchao.float8.float8_linear import Float8Linear

    from trainbench.model import Llama
    from trainbench.parallel import parallelize

    plan = resolve("tiny", 1, "fp8", "cpu", ["train.compile=false"])
    with torch.device("meta"):
        model = Llama(plan.model)
    parallelize(model, plan, CPU)
    converted = {n for n, m in model.named_modules() if isinstance(m, Float8Linear)}
    assert len(converted) == 4 * 7 and "layers.0.attention.wq" in converted
    assert "output" not in converted and type(model.output) is torch.nn.Linear


def test_fp8_on_cpu_and_plans_that_do_not_fit_are_refused(capsys):
    assert main(["run", "--model", "tiny", "--dtype", "fp8"]) == 2
    assert "needs a GPU" in capsys.readouterr().err
    assert main(["run", "--model", "8b", "--gpu-type", "h100", "--gpus", "1", "model.layers=32"]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_trainer_is_deterministic_under_its_seed():
    plan = resolve("tiny", 1, "bf16", "cpu", FAST)
    losses = []
    for _ in range(2):
        tr = Trainer(plan, CPU, DistContext())
        loss, _ = tr.step(tr.batches(1), 1e-3)
        losses.append(float(loss))
    assert losses[0] == losses[1]


def test_profile_window_writes_a_trace_and_a_kernel_table_and_marks_the_run(tmp_path, capsys):
    args = ["run", "--model", "tiny", "--steps", "3", "--profile", "2:3", "--results-dir", str(tmp_path), *FAST]
    assert main(args) == 0
    (table,) = tmp_path.rglob("*.kernels.txt")
    (trace,) = tmp_path.rglob("*.trace.json")
    assert "aten::mm" in table.read_text() and json.loads(trace.read_text())["traceEvents"]
    summary = RunSummary.read(run_files(tmp_path)[2])
    assert summary.provenance["profile_window"] == [2, 3]
    assert main(["run", "--model", "tiny", "--steps", "3", "--profile", "2:9"]) == 2
    assert "ends after the run's 3 steps" in capsys.readouterr().err


@pytest.mark.parametrize("overrides", [["train.compile=true"], ["train.activation_checkpointing=true"]])
def test_wrapped_blocks_still_initialise_and_train(overrides):
    """Compile and checkpointing wrap each block; init and a step must go through the wrappers.
    (Inductor needs a C++ compiler on CPU: the eager backend checks the wrapping alone.)"""
    plan = resolve("tiny", 1, "bf16", "cpu", [*FAST, *overrides])
    torch._dynamo.reset()
    with torch._dynamo.config.patch(suppress_errors=False):
        from trainbench.parallel import apply

        original = torch.compile
        apply.torch.compile = lambda m, **kw: original(m, backend="eager", **kw)  # type: ignore[assignment]
        try:
            reference = float(Trainer(resolve("tiny", 1, "bf16", "cpu", FAST), CPU, DistContext()).step(
                Trainer(plan, CPU, DistContext()).batches(1), 1e-3)[0])  # fmt: skip
            tr = Trainer(plan, CPU, DistContext())
            wrapped = type(tr.model.layers["0"]).__name__
            loss = float(tr.step(tr.batches(1), 1e-3)[0])
        finally:
            apply.torch.compile = original  # type: ignore[assignment]
    assert wrapped in ("OptimizedModule", "CheckpointWrapper")
    assert loss == pytest.approx(reference, rel=1e-5)


def test_an_unexpected_error_marks_the_summary_failed_and_surfaces(tmp_path):
    class Broken(Trainer):
        def step(self, batches, lr):
            raise RuntimeError("cuDNN said no")

    plan = resolve("tiny", 1, "bf16", "cpu", ["train.steps=2", *FAST])
    with pytest.raises(RuntimeError, match="cuDNN said no"):
        execute(plan, results_root=tmp_path, run_id="bug", device=CPU, make_trainer=Broken)
    summary = RunSummary.read(run_files(tmp_path)[2])
    assert summary.status == "failed" and "RuntimeError: cuDNN said no" in summary.failure


def test_a_slurm_jobs_own_out_file_receives_the_lines_on_stdout(tmp_path, monkeypatch, capsys):
    """Under Slurm the job's --output is the run's .out (srun gives the task a pipe to it): the
    run must write its lines to stdout, not refuse the file as an earlier run's."""
    out = tmp_path / "24.11" / "bf16" / "tiny" / "1" / "log-trainbench_llama3.1_tiny_1_4242.out"
    out.parent.mkdir(parents=True)
    out.write_text("")  # slurmstepd creates it before the job starts
    monkeypatch.setenv("TRAINBENCH_JOB_OUT", str(out))
    base = ["run", "--model", "tiny", "--steps", "2", "--results-dir", str(tmp_path), *FAST]
    assert main([*base, "--run-id", "4242"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("GSW: MODEL=llama3.1") and printed.count("train_step_timing in s=") == 2
    assert out.read_text() == ""  # nothing opened the file behind srun's back
    monkeypatch.setenv("TRAINBENCH_JOB_OUT", str(tmp_path / "another.out"))
    assert main([*base, "--run-id", "4243"]) == 0
    assert (out.parent / "log-trainbench_llama3.1_tiny_1_4243.out").read_text().startswith("GSW:")


def test_summary_view_shows_peak_memory_against_the_plan_and_allocator_retries(capsys):
    """A GPU run's summary carries its peak and the allocator's retries; the view sets the peak
    beside the plan's estimate (the GPU figures of BENCHMARKS.md's 8B BF16 run)."""
    from trainbench.train.progress import ProgressView
    from trainbench.train.records import RunSummary
    from trainbench.train.run import Outcome

    plan = resolve("tiny", 1, "bf16", "cpu", FAST)
    summary = RunSummary(
        status="complete", run_id="r1", config=plan.to_dict(), provenance={"plan_memory_gib": {"total_gib": 122.74}},
        started_at="2026-12-01T07:29:51+00:00",
        results={"last_step": None, "steady_state": None, "mem_peak_gib": 122.303, "alloc_retries": 0},
    )  # fmt: skip
    ProgressView(plan, enabled=False).print_summary(Outcome("complete", None, 0, summary))
    assert "peak memory: 122.3 GiB (plan 122.7 GiB), allocator retries 0" in capsys.readouterr().err


def test_process_age_counts_from_the_interpreters_start():
    """A fresh interpreter that sleeps 0.3 s before asking has lived at least that long."""
    code = "import time; time.sleep(0.3); from trainbench.train.timing import process_age_s; print(process_age_s())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0.3 <= age < 30


def test_the_startup_breakdown_adds_up_and_the_summary_says_where_the_time_went(tmp_path, capsys):
    args = ["run", "--model", "tiny", "--steps", "2", "--results-dir", str(tmp_path), "--run-id", "st", *FAST]
    assert main(args) == 0
    _, steps_path, summary_path = run_files(tmp_path)
    results = RunSummary.read(summary_path).results
    parts = results["startup"]
    step1 = StepRecord.from_json(steps_path.read_text().splitlines()[0]).step_time_s
    assert parts["first_step_s"] == step1
    # build and step 1 lie inside the run's time to its first step, and the process lived before the run
    assert parts["build_s"] + parts["first_step_s"] <= results["time_to_first_step_s"]
    assert parts["before_run_s"] > 0  # this test process imported torch long before
    assert parts["process_to_first_step_s"] == pytest.approx(parts["before_run_s"] + results["time_to_first_step_s"])
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    line = r"start to first finished step: [\d.]+s \(build [\d.]+s, step 1 [\d.]+s\); [\d.]+s from process start"
    assert re.search(line, err)


def test_startup_line_without_a_process_age_or_a_first_step():
    from trainbench.train.progress import startup_line
    from trainbench.train.run import startup_breakdown

    assert startup_line({"time_to_first_step_s": None, "startup": startup_breakdown(None, 1.0, None, None)}) is None
    text = startup_line({"time_to_first_step_s": 66.04, "startup": startup_breakdown(None, 12.5, 53.5, 66.04)})
    assert text == "start to first finished step: 66.0s (build 12.5s, step 1 53.5s)"
