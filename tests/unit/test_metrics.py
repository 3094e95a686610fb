"""The recipe's formulas, pinned by every published number of its two 405B tables."""

import pytest

from trainbench.errors import ConfigError
from trainbench.metrics import mfu_pct, model_flops_per_sample, peak_tflops, time_to_train_days, tokens_per_s
from trainbench.metrics.peaks import gpu_type_from_device_name
from trainbench.metrics.steady import default_window, parse_window, summarize, window_stats
from trainbench.recipe import tables

REFS = tables.references()
SHAPE_405B = dict(hidden=16384, ffn=53248, heads=128, query_groups=16, seq_len=8192, vocab=128256)


def test_405b_flops_per_sample_is_the_recipes_2_17e16():
    flops = model_flops_per_sample(layers=126, **SHAPE_405B)
    assert round(flops / 1e16, 2) == 2.17
    # The README's three terms, each to the FLOP (its note multiplies by the typo 8129).
    assert 12 * 126 * 16384**2 * (1 + 16 / 128 + 8192 / 16384) == 659_545_915_392
    assert 18 * 126 * 53248 * 16384 == 1_978_637_746_176
    assert 6 * 128256 * 16384 == 12_608_077_824
    assert flops == 8192 * (659_545_915_392 + 1_978_637_746_176 + 12_608_077_824)


def test_causal_convention_halves_only_the_score_term_and_only_by_name():
    full = model_flops_per_sample(layers=126, **SHAPE_405B)
    causal = model_flops_per_sample(layers=126, convention="causal", **SHAPE_405B)
    score = 8192 * 12 * 126 * 16384**2 * (8192 / 16384)
    assert full - causal == pytest.approx(score / 2)
    assert 1 - causal / full == pytest.approx(0.038, abs=0.002)  # "about 4% fewer for 405B"
    with pytest.raises(ValueError):
        model_flops_per_sample(layers=1, convention="halved", **SHAPE_405B)  # type: ignore[arg-type]


@pytest.mark.parametrize("ref", REFS, ids=lambda r: f"{r.dtype}-{r.gpus}")
def test_published_cells_follow_from_their_step_times(ref):
    flops = model_flops_per_sample(layers=ref.layers, **SHAPE_405B)
    tps = tokens_per_s(seq_len=8192, gbs=ref.gbs, step_time_s=ref.step_time_s)
    assert tps == pytest.approx(ref.tokens_per_s, rel=0.002)
    mfu = mfu_pct(
        flops_per_sample=flops, gbs=ref.gbs, step_time_s=ref.step_time_s, gpus=ref.gpus,
        peak_tflops=peak_tflops("h100", ref.dtype),
    )  # fmt: skip
    assert mfu == pytest.approx(ref.mfu_pct, abs=0.1)
    if ref.ttt_days is None:
        assert ref.layers < 126  # proxies carry no time to train, as the recipe says
    else:
        assert time_to_train_days(total_tokens=1e12, tokens_per_second=tps) == pytest.approx(ref.ttt_days, rel=0.005)


def test_readme_worked_examples():
    assert tokens_per_s(seq_len=8192, gbs=252, step_time_s=12.84) == pytest.approx(160778, rel=1e-5)
    assert time_to_train_days(total_tokens=1e12, tokens_per_second=160778) == pytest.approx(71.99, abs=0.005)
    exact = model_flops_per_sample(layers=126, **SHAPE_405B)
    mfu = mfu_pct(flops_per_sample=exact, gbs=252, step_time_s=11.24, gpus=576, peak_tflops=1979)
    assert mfu == pytest.approx(42.71, abs=0.005)  # the README's 42.71% needs the unrounded 2.1715E16


def test_peak_table_and_unknown_gpus():
    assert peak_tflops("h100", "bf16") == 989 and peak_tflops("H200", "fp8") == 1979
    assert peak_tflops("b200", "fp8") == 4500 and peak_tflops("gb200", "bf16") == 2450
    assert peak_tflops("a100", "bf16") == 312
    with pytest.raises(ConfigError, match="no published fp8 peak"):
        peak_tflops("a100", "fp8")
    with pytest.raises(ConfigError, match="unknown GPU type 'mi300x'"):
        peak_tflops("mi300x", "bf16")
    assert peak_tflops("mi300x", "bf16", override=1307) == 1307
    with pytest.raises(ConfigError):
        peak_tflops("h100", "bf16", override=-1)


@pytest.mark.parametrize(
    ("name", "key"),
    [("NVIDIA H200", "h200"), ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA GB200", "gb200"),
     ("NVIDIA B200", "b200"), ("NVIDIA A100-SXM4-80GB", "a100"), ("AMD Instinct MI300X", None)],
)  # fmt: skip
def test_device_names_map_to_table_keys_or_to_nothing(name, key):
    assert gpu_type_from_device_name(name) == key


def test_steady_state_window_and_statistics():
    assert default_window(50) == (35, 44)  # later releases' window
    assert default_window(10) == (6, 10)
    assert default_window(1) == (1, 1)
    assert parse_window("3:7") == (3, 7)
    for bad in ("7:3", "a:b", "0:4", "5"):
        with pytest.raises(ValueError):
            parse_window(bad)
    times = {i: 2.0 for i in range(1, 51)}
    times[1] = 60.0  # compile step: kept in the record, outside the window
    times[40] = 3.0
    st = window_stats(times, (35, 44))
    assert st is not None and st.n == 10 and st.median_s == 2.0 and st.max_s == 3.0
    assert st.mean_s == pytest.approx(2.1)
    out = summarize(times, seq_len=8192, gbs=252, gpus=576, flops_per_sample=2.17e16, peak_tflops=989, proxy=False)
    assert out["last_step"]["step"] == 50 and out["last_step"]["tokens_per_s"] == pytest.approx(8192 * 252 / 2)
    assert out["steady_state"]["median_step_time_s"] == 2.0
    proxy = summarize(times, seq_len=8192, gbs=126, gpus=32, flops_per_sample=1e15, peak_tflops=989, proxy=True)
    assert proxy["last_step"]["ttt_days"] is None
