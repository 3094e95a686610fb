"""Log adapters: the recipe's example lines give their printed numbers; every parser survives
arbitrary input; generated lines round-trip; chunking, carriage returns and ranks change nothing."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.report.recipe_logs import MEGATRON_EXAMPLE, NEMO2_EXAMPLE, NEMO_BAR_EXAMPLE, WRITERS, log_text
from trainbench.report import parsers
from trainbench.report.parsers import infer_gbs, parse_line, parse_megatron, parse_nemo2, parse_nemo_bar, parse_stream
from trainbench.train.records import StepRecord, out_step_line


def parse_text(text: str | bytes) -> parsers.ParsedLog:
    return parse_stream(io.BytesIO(text.encode() if isinstance(text, str) else text))


def test_nemo_bar_example() -> None:
    p = parse_nemo_bar(NEMO_BAR_EXAMPLE)
    assert p is not None
    assert (p.step, p.step_time_s, p.total_steps, p.consumed_samples, p.loss) == (50, 12.80, 50, 12600.0, 11.70)
    assert infer_gbs({50: p}) == 252  # recipe: GBS = consumed_samples / (global_step + 1)


def test_nemo2_example() -> None:
    p = parse_nemo2(NEMO2_EXAMPLE)
    assert p is not None
    assert (p.step, p.step_time_s, p.total_steps, p.gbs, p.consumed_samples, p.loss) == (
        50,
        12.39,
        50,
        128,
        6400,
        11.96,
    )
    assert p.mem_peak_gib == pytest.approx(70833405952 / 2**30)  # peak_memory_usage is in bytes


def test_megatron_example() -> None:
    p = parse_megatron(MEGATRON_EXAMPLE)
    assert p is not None
    assert (p.step, p.total_steps, p.gbs, p.consumed_samples, p.loss, p.grad_norm) == (50, 50, 128, 6400, 11.96, 1.234)
    assert p.step_time_s == pytest.approx(12.3901)
    assert not p.nan


def test_trainbench_out_line_reads_as_nemo2() -> None:
    rec = StepRecord(
        step=7,
        step_time_s=0.1234,
        loss=5.5,
        tokens_per_s=1.0,
        tflops_per_gpu=1.0,
        mfu_pct=None,
        lr=1e-4,
        grad_norm=0.5,
        consumed_samples=28,
        mem_peak_gib=0.1,
        mem_reserved_gib=0.2,
        warmup=False,
    )
    fmt, p = parse_line(out_step_line(rec, total_steps=50))  # type: ignore[misc]
    assert fmt == "nemo2"
    assert (p.step, p.step_time_s, p.total_steps, p.consumed_samples, p.loss) == (7, 0.1234, 50, 28, 5.5)
    assert p.mem_peak_gib == pytest.approx(0.1)
    cpu = dataclasses.replace(rec, mem_peak_gib=0.0, mem_reserved_gib=0.0)  # no allocator statistics on CPU
    assert out_step_line(cpu, total_steps=50).endswith("peak_memory_gib: n/a")
    assert parse_line(out_step_line(cpu, total_steps=50))[1].mem_peak_gib is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("line", "nan"),
    [
        (MEGATRON_EXAMPLE.replace("grad norm: 1.234", "grad norm: nan"), True),
        (MEGATRON_EXAMPLE.replace("lm loss: 1.196E+01", "lm loss: NaN"), True),
        (MEGATRON_EXAMPLE.replace("number of nan iterations:   0", "number of nan iterations:   1"), True),
        (NEMO2_EXAMPLE.replace("reduced_train_loss: 11.96", "reduced_train_loss: nan"), True),
        (NEMO_BAR_EXAMPLE.replace("reduced_train_loss=11.70", "reduced_train_loss=nan"), True),
        (NEMO_BAR_EXAMPLE, False),
    ],
)
def test_nan_flag(line: str, nan: bool) -> None:
    parsed = parse_line(line)
    assert parsed is not None and parsed[1].nan is nan


@pytest.mark.parametrize(
    "line",
    [
        NEMO2_EXAMPLE.replace("train_step_timing in s: 12.39", "train_step_timing in s: 0"),
        NEMO2_EXAMPLE.replace("train_step_timing in s: 12.39", "train_step_timing in s: -3"),
        NEMO2_EXAMPLE.replace("train_step_timing in s: 12.39", "train_step_timing in s: inf"),
        MEGATRON_EXAMPLE.replace("12390.1", "n/a"),
        NEMO_BAR_EXAMPLE.replace("global_step=49.00", "global_step=x").replace("50/50 [", "["),
        "iteration 99999999999999999999/5 | train_step_timing in s: 1.0",
    ],
)
def test_garbled_step_lines_are_skipped_not_guessed(line: str) -> None:
    assert parse_line(line) is None
    assert parse_text(line + "\n").steps == {}


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.binary(max_size=4000))
def test_any_bytes_never_crash(data: bytes) -> None:
    log = parse_text(data)
    assert all(s >= 1 and math.isfinite(p.step_time_s) and p.step_time_s > 0 for s, p in log.steps.items())


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_any_text_line_never_crashes(line: str) -> None:
    for parse in (parse_nemo_bar, parse_nemo2, parse_megatron, parse_line):
        parse(line)  # type: ignore[operator]


@st.composite
def salted(draw: st.DrawFn, fmt: str) -> str:
    """A log in one format with arbitrary marker-bearing noise spliced between its lines."""
    noise = st.sampled_from(["train_step_timing", "elapsed time per iteration", "iteration 3/", "|", "=", "nan"])
    junk = draw(st.lists(st.text(max_size=20).map(lambda s: s.replace("\n", " ").replace("\r", " ")) | noise))
    body = log_text(fmt, [1.5] * 3, gbs=8)
    return "\n".join([*junk, body])


@settings(max_examples=100)
@given(st.sampled_from(sorted(WRITERS)).flatmap(lambda f: salted(f).map(lambda text: (f, text))))
def test_noise_between_lines_never_invents_steps(case: tuple[str, str]) -> None:
    fmt, text = case
    log = parse_text(text)
    assert log.format == fmt
    assert {s: p.step_time_s for s, p in log.steps.items()} == {1: 1.5, 2: 1.5, 3: 1.5}


steps_and_times = st.tuples(
    st.integers(1, 10**6),  # step
    st.integers(0, 10**6),  # extra planned steps
    st.floats(1e-3, 1e4, allow_nan=False),  # step time (s)
    st.integers(1, 10**5),  # GBS
)


@settings(max_examples=300)
@given(st.sampled_from(sorted(WRITERS)), steps_and_times, st.booleans())
def test_round_trip(fmt: str, case: tuple[int, int, float, int], use_module_writer: bool) -> None:
    """Lines written by the recipe-shaped templates and by the module's own writers read back."""
    step, extra, t, gbs = case
    t = round(t, 4)
    write = parsers.LINE_WRITERS[fmt] if use_module_writer else WRITERS[fmt]
    parsed = parse_line(write(step, step + extra, t, gbs))
    assert parsed is not None
    got_fmt, p = parsed
    assert got_fmt == fmt
    assert (p.step, p.total_steps) == (step, step + extra)
    expected_t = round(t * 1000, 1) / 1000 if fmt == "megatron" else t  # Megatron prints ms with one decimal
    assert p.step_time_s == pytest.approx(expected_t, rel=1e-12, abs=1e-12)
    assert infer_gbs({step: p}) == gbs


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(sorted(WRITERS)),
    st.lists(st.floats(0.01, 100, allow_nan=False).map(lambda x: round(x, 3)), min_size=1, max_size=40),
    st.integers(1, 4096),
)
def test_chunk_size_changes_nothing(fmt: str, times: list[float], chunk: int) -> None:
    text = log_text(fmt, times, gbs=16).encode()
    whole = parse_text(text)
    old = parsers.CHUNK_BYTES
    parsers.CHUNK_BYTES = chunk
    try:
        pieces = parse_text(text)
    finally:
        parsers.CHUNK_BYTES = old
    assert pieces.steps == whole.steps
    assert sorted(whole.steps) == list(range(1, len(times) + 1))
    assert whole.planned_steps == len(times)


@settings(max_examples=100)
@given(
    st.sampled_from(sorted(WRITERS)),
    st.integers(2, 8),  # ranks
    st.randoms(use_true_random=False),
)
def test_interleaved_ranks(fmt: str, ranks: int, rnd: object) -> None:
    """Several ranks print every line, with srun labels, in an order that drifts between ranks."""
    times = [round(1 + 0.01 * s, 3) for s in range(1, 21)]
    lines = [WRITERS[fmt](s, 20, t, 32) for s, t in enumerate(times, 1)]
    stream = [(s + rnd.random() * 3, f"{r}: {line}") for r in range(ranks) for s, line in enumerate(lines)]  # type: ignore[attr-defined]
    text = "\n".join(line for _, line in sorted(stream))
    log = parse_text(text)
    assert {s: p.step_time_s for s, p in log.steps.items()} == dict(enumerate(times, 1))


def test_carriage_return_progress_bar_without_newlines() -> None:
    text = "\r".join(WRITERS["nemo-24.09"](s, 50, 2.0 + s / 100, 126) for s in range(1, 51))
    log = parse_text(text)  # one "line" in the \n sense
    assert log.format == "nemo-24.09" and sorted(log.steps) == list(range(1, 51))
    assert log.steps[50].step_time_s == 2.5 and infer_gbs(log.steps) == 126


def test_provenance_first_line() -> None:
    log = parse_text("GSW: MODEL=llama3.1 MODEL_SIZE=405b JOB_NUM_NODES=72 GPUS_PER_NODE=8 DTYPE=fp8 IMAGE='a b'\n")
    assert log.provenance["MODEL_SIZE"] == "405b" and log.provenance["IMAGE"] == "a b"


def test_gbs_from_slope_when_ratio_is_not_whole() -> None:
    p1 = parsers.StepPoint(step=10, step_time_s=1.0, consumed_samples=1000.0)
    p2 = parsers.StepPoint(step=11, step_time_s=1.0, consumed_samples=1128.0)  # ramped: 1128/11 is not whole
    assert infer_gbs({10: p1, 11: p2}) == 128
    assert infer_gbs({}) is None
    assert infer_gbs({1: parsers.StepPoint(step=1, step_time_s=1.0)}) is None
