"""Statistics and comparison on hand-built runs: windows, verdicts, conventions."""

from __future__ import annotations

import statistics

import pytest

from trainbench.recipe import tables
from trainbench.report.analyze import Options, analyze
from trainbench.report.discover import Run

FP8_576 = tables.find_reference("405b", "fp8", 576, 126, 252)
assert FP8_576 is not None


def run(times: dict[int, float], status: str = "complete", **facts: object) -> Run:
    f = {"model": "405b", "dtype": "fp8", "gpus": 576, "gbs": 252, "layers": 126, "seq_len": 8192, "gpu_type": "h100"}
    f.update(facts)
    shape = {**{k: v for k, v in tables.preset("405b").items()}, "layers": f["layers"], "seq_len": f["seq_len"]}
    return Run(
        source="x.out",
        format="megatron",
        status=status,
        step_times_s=times,
        planned_steps=50,
        facts=f,
        shape=shape,
        proxy=f["layers"] < 126,
    )


def flat(last: float, n: int = 50, other: float = 11.0) -> dict[int, float]:
    return {**{s: other for s in range(1, n)}, n: last}


def test_last_step_is_the_recipe_number_and_window_is_35_44() -> None:
    times = {s: 10.0 + s / 100 for s in range(1, 51)}
    row = analyze(run(times), Options())
    assert row["last_step_time_s"] == times[50]
    window = [times[s] for s in range(35, 45)]
    st = row["steady_state"]
    assert (st["first_step"], st["last_step"], st["n"], st["complete"]) == (35, 44, 10, True)
    assert st["median_s"] == pytest.approx(statistics.median(window))
    assert st["mean_s"] == pytest.approx(statistics.fmean(window))
    assert st["std_s"] == pytest.approx(statistics.stdev(window))
    assert (st["min_s"], st["max_s"]) == (min(window), max(window))
    assert st["median_tokens_per_s"] == pytest.approx(8192 * 252 / st["median_s"])


def test_chosen_window_and_holes() -> None:
    times = {s: 1.0 for s in range(1, 51) if s != 12}
    st = analyze(run(times), Options(window=(10, 14)))["steady_state"]
    assert (st["window"], st["n"], st["complete"]) == ("10:14", 4, False)
    st = analyze(run({1: 5.0, 2: 1.0}), Options(window=(35, 44)))["steady_state"]
    assert st["n"] == 0 and "median_s" not in st


def test_short_run_uses_its_second_half() -> None:
    st = analyze(run({s: 1.0 for s in range(1, 21)}), Options())["steady_state"]
    assert (st["first_step"], st["last_step"]) == (11, 20)


@pytest.mark.parametrize(
    ("slower_pct", "tolerance", "verdict"),
    [(0.0, 5.0, "pass"), (4.9, 5.0, "pass"), (5.2, 5.0, "fail"), (-10.0, 5.0, "pass"), (1.0, 0.5, "fail")],
)
def test_verdict_against_tolerance(slower_pct: float, tolerance: float, verdict: str) -> None:
    # tokens/s 'slower_pct' % below the published cell
    t = 8192 * 252 / (FP8_576.tokens_per_s * (1 - slower_pct / 100))
    c = analyze(run(flat(t)), Options(tolerance_pct=tolerance))["comparison"]
    assert c["verdict"] == verdict
    assert c["gap_pct"] == pytest.approx(-slower_pct, abs=1e-9)
    assert c["ratio"] == pytest.approx(1 - slower_pct / 100)


def test_basis_steady_compares_the_median() -> None:
    times = flat(20.0, other=FP8_576.step_time_s)  # a slow last step, a steady median on the reference
    assert analyze(run(times), Options())["comparison"]["verdict"] == "fail"
    c = analyze(run(times), Options(basis="steady"))["comparison"]
    assert c["verdict"] == "pass" and abs(c["gap_pct"]) < 0.01


def test_marks_without_a_verdict() -> None:
    assert analyze(run(flat(11.24), status="incomplete"), Options())["comparison"]["verdict"] == "invalid"
    assert analyze(run(flat(11.24), gpus=4608, gbs=2016), Options())["comparison"]["verdict"] == "no-reference"
    assert (
        analyze(run(flat(5.0), gpus=32, gbs=126, layers=8), Options())["comparison"]["verdict"] == "proxy-other-scale"
    )
    row = analyze(run(flat(11.24), gbs=None), Options())
    assert (row["missing"], row["comparison"]["verdict"], row["tokens_per_s"]) == (["gbs"], "unknown", None)


def test_proxy_has_no_time_to_train() -> None:
    ref = tables.find_reference("405b", "fp8", 32, 7, 126)
    assert ref is not None
    row = analyze(run(flat(ref.step_time_s), gpus=32, gbs=126, layers=7), Options())
    assert row["proxy"] is True and row["ttt_days"] is None and row["steady_state"]["median_ttt_days"] is None
    assert row["comparison"]["verdict"] == "pass"


def test_causal_convention_lowers_mfu_and_drops_mfu_gap() -> None:
    recipe = analyze(run(flat(11.24)), Options())
    causal = analyze(run(flat(11.24)), Options(flops_convention="causal"))
    assert causal["mfu_pct"] < recipe["mfu_pct"]  # fewer FLOPs counted for the same time
    assert recipe["mfu_pct"] / causal["mfu_pct"] == pytest.approx(1.04, abs=0.01)  # ~4% for 405B (recipe_facts)
    assert causal["comparison"]["mfu_gap_pts"] is None and recipe["comparison"]["mfu_gap_pts"] is not None
    assert causal["tokens_per_s"] == recipe["tokens_per_s"]


def test_other_gpu_type_and_peak_override() -> None:
    row = analyze(run(flat(11.24), gpu_type="b200"), Options())
    assert row["peak_tflops"] == 4500
    assert any("reference measured on h100" in n for n in row["notes"])
    row = analyze(run(flat(11.24), gpu_type="mystery"), Options(peak_tflops=1000.0))
    assert row["peak_tflops"] == 1000.0
    row = analyze(run(flat(11.24), gpu_type="a100"), Options())  # no FP8 peak published
    assert row["mfu_pct"] is None and row["tokens_per_s"] is not None
