"""Resolution of recipe cells: the recipe's tables, its rules, proxies, overrides, validation."""

import pytest

from trainbench.errors import ConfigError
from trainbench.recipe import tables
from trainbench.recipe.describe import describe
from trainbench.recipe.memory import total_params
from trainbench.recipe.resolve import nearest_valid_gpu_counts, resolve

TABLE_405B = [  # (gpus, layers, gbs, pp, vp) from the README's two tables
    (32, 7, 126, 1, None), (96, 21, 126, 3, 7), (192, 42, 252, 3, 7),
    (576, 126, 252, 9, 7), (1152, 126, 504, 9, 7), (2304, 126, 1008, 9, 7),
]  # fmt: skip


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
@pytest.mark.parametrize(("gpus", "layers", "gbs", "pp", "vp"), TABLE_405B)
def test_all_twelve_405b_cells(dtype, gpus, layers, gbs, pp, vp):
    info = describe(resolve("405b", gpus, dtype))
    assert (info["layers"], info["gbs"], info["pp"], info["vp"]) == (layers, gbs, pp, vp)
    assert (info["tp"], info["cp"], info["mbs"], info["hidden"], info["query_groups"]) == (8, 2, 1, 16384, 16)
    assert info["dp"] == gpus // (8 * pp * 2)
    assert info["ga"] == gbs // info["dp"]
    assert info["proxy"] == (gpus < 576)
    ref = info["reference"]
    published = next(r for r in tables.references() if (r.dtype, r.gpus) == (dtype, gpus))
    assert ref["step_time_s"] == published.step_time_s and ref["mfu_pct"] == published.mfu_pct
    assert ref["ttt_days"] == published.ttt_days


def test_405b_full_scale_ga_is_63_as_the_recipe_header_says():
    assert describe(resolve("405b", 576, "bf16"))["ga"] == 63


@pytest.mark.parametrize(
    ("model", "gpus", "tp", "pp", "vp", "cp", "sp", "gbs"),
    [("8b", 8, 1, 1, None, 2, False, 128), ("8b", 64, 1, 1, None, 2, False, 1024),
     ("70b", 64, 4, 4, 5, 2, True, 128), ("70b", 128, 4, 4, 5, 2, True, 256)],
)  # fmt: skip
def test_8b_and_70b_layouts(model, gpus, tp, pp, vp, cp, sp, gbs):
    p = resolve(model, gpus)
    assert (p.parallel.tp, p.parallel.pp, p.parallel.vp, p.parallel.cp) == (tp, pp, vp, cp)
    assert p.parallel.sequence_parallel is sp and p.train.gbs == gbs and not p.proxy
    assert describe(p)["reference"] is None  # release 24.11 publishes no 8B/70B step times


def test_presets_match_recipe_facts():
    assert total_params(resolve("8b", 8).model) == pytest.approx(8.03e9, rel=0.01)
    assert total_params(resolve("70b", 64).model) == pytest.approx(70.6e9, rel=0.01)
    # Meta's published 405B (8 key/value heads) has 405.85B parameters; the recipe's 16 groups add 4.2B.
    assert total_params(resolve("405b", 576, overrides=["model.query_groups=8"]).model) == pytest.approx(
        405.85e9, rel=1e-3
    )
    assert total_params(resolve("405b", 576).model) == pytest.approx(410.08e9, rel=1e-3)


def test_full_scale_rule_off_table_and_nearest_counts():
    p = resolve("405b", 720)  # 720 = 5 x 144, GBS 315 = 63 x 5
    assert (p.train.gbs, p.dp, p.ga, p.proxy) == (315, 5, 63, False)
    with pytest.raises(ConfigError) as exc:
        resolve("405b", 64)
    assert "nearest valid GPU counts: 16, 32, 96, 144" in str(exc.value)
    assert nearest_valid_gpu_counts("8b", 9) == [7, 8, 10, 12]


def test_single_node_proxies_fill_memory_with_full_width_layers():
    p = resolve("8b", 1, gpu_type="h200")
    assert (p.parallel.tp, p.parallel.cp, p.dp, p.train.gbs, p.ga) == (1, 1, 1, 16, 16)
    assert p.proxy and 1 <= p.model.layers < 32 and p.model.hidden == 4096
    info = describe(p)
    assert info["memory_per_gpu_gib"] <= 0.9 * info["gpu_memory_gib"]
    bigger = describe(resolve("8b", 1, gpu_type="h200", overrides=[f"model.layers={p.model.layers + 1}"]))
    assert bigger["memory_per_gpu_gib"] > 0.9 * info["gpu_memory_gib"]  # one more layer would not fit
    assert "layers" in p.scale_note and "proxy" in p.scale_note
    assert resolve("8b", 1, "fp8", gpu_type="h200").model.layers == p.model.layers  # same model in both dtypes
    p8 = resolve("405b", 8, gpu_type="h200")
    assert (p8.parallel.tp, p8.parallel.cp, p8.parallel.sequence_parallel, p8.train.gbs) == (8, 1, True, 32)
    assert resolve("8b", 4).parallel.cp == 2 and resolve("8b", 4).dp == 2


def test_405b_on_one_h100_is_refused_with_the_numbers():
    with pytest.raises(ConfigError, match=r"even one full-width layer needs [\d.]+ GiB"):
        resolve("405b", 1, gpu_type="h100")


def test_overrides_apply_and_mark_proxies():
    p = resolve("405b", 576, overrides=["parallel.tp=4", "model.layers=63", "train.gbs=504", "model.query_groups=8"])
    assert (p.parallel.tp, p.model.layers, p.train.gbs, p.model.query_groups, p.dp) == (4, 63, 504, 8, 8)
    assert p.proxy
    p = resolve("405b", 576, overrides=["parallel.vp=null", "train.fp8_recipe=rowwise"])
    assert p.parallel.vp is None and p.train.fp8_recipe == "rowwise"


def test_every_violation_is_reported_at_once():
    with pytest.raises(ConfigError) as exc:
        resolve("405b", 576, overrides=["parallel.tp=3", "model.layers=100", "train.gbs=250", "parallel.cp=3"])
    msg = str(exc.value)
    for expected in [
        "layers 100 not divisible by PP x VP = 9 x 7 = 63",
        "heads 128 not divisible by TP 3",
        "query groups 16 not divisible by TP 3",
        "GPUs 576 not divisible by TP x PP x CP = 3 x 9 x 3 = 81",
        "sequence length 8192 not divisible by 2 x CP = 6",
    ]:
        assert expected in msg
    with pytest.raises(ConfigError, match=r"GBS 250 not divisible by DP x MBS = 4 x 1 = 4"):
        resolve("405b", 576, overrides=["train.gbs=250"])


@pytest.mark.parametrize(
    ("kwargs", "overrides", "expected"),
    [({"model": "13b"}, [], "unknown model '13b'"), ({"dtype": "fp16"}, [], "unknown dtype 'fp16'"),
     ({"gpu_type": "tpu"}, [], "unknown GPU type 'tpu'"), ({"gpus": 0}, [], "--gpus must be a positive"),
     ({}, ["parallel.tq=2"], "unknown override key 'parallel.tq'"), ({}, ["foo=1"], "unknown override key 'foo'"),
     ({}, ["parallel.tp=two"], "parallel.tp='two': expected int"), ({}, ["parallel.tp"], "not of the form"),
     ({}, ["parallel.dp=4"], "DP is derived"), ({}, ["train.gbs=-8"], "train.gbs must be positive, got -8"),
     ({}, ["parallel.vp=2"], "VP 2 needs PP > 1"), ({}, ["train.dtype=fp4"], "train.dtype must be one of"),
     ({}, ["train.fp8_recipe=blockwise"], "train.fp8_recipe must be one of"),
     ({}, ["model.name=${PATH}"], "interpolation"), ({}, ["train.gbs=`id`"], "train.gbs='`id`': expected int"),
     ({}, ["train.gbs=[1"], "train.gbs='[1': expected int")],
)  # fmt: skip
def test_bad_input_is_refused_with_a_reason(kwargs, overrides, expected):
    args = {"model": "8b", "gpus": 8, "dtype": "bf16", "gpu_type": "h100", **kwargs}
    with pytest.raises(ConfigError) as exc:
        resolve(args.pop("model"), args.pop("gpus"), args.pop("dtype"), args.pop("gpu_type"), overrides)
    assert expected in str(exc.value)


def test_several_bad_overrides_are_all_named():
    with pytest.raises(ConfigError) as exc:
        resolve("8b", 8, overrides=["parallel.tq=2", "train.gbs=x", "model.layerz=3"])
    assert len(exc.value.reasons) == 3


@pytest.mark.parametrize(
    ("model", "dtype", "layers", "measured_gib"),
    [("8b", "bf16", 23, 122.30), ("8b", "fp8", 23, 119.07), ("405b", "bf16", 1, 124.22), ("405b", "fp8", 1, 125.91)],
)
def test_memory_estimate_is_close_to_the_h200_measurement(model, dtype, layers, measured_gib):
    """Peaks measured on one H200 (BENCHMARKS.md, 2026-12-01): the one-GPU defaults, 50 steps
    (FP8 with its fp8 weight copies: 114.4 and 122.9 GiB without them)."""
    plan = resolve(model, 1, dtype, "h200")
    assert plan.model.layers == layers  # the default the measurement ran
    assert describe(plan)["memory_per_gpu_gib"] == pytest.approx(measured_gib, rel=0.05)


def test_405b_proxy_fits_one_h200_through_split_master_weights():
    """A 405B-wide layer with its embedding and output layer is 7.42e9 parameters: 18 B each with a
    separate fp32 master copy would not fit 90% of an H200; 16 B with the masters' low halves does."""
    p = resolve("405b", 1, gpu_type="h200")
    assert (p.model.layers, p.model.hidden, p.model.query_groups, p.model.vocab) == (1, 16384, 16, 128256)
    assert (p.train.gbs, p.ga) == (4, 4)  # the per-GPU batch of the recipe's 32-GPU cell (126 / 32)
    info = describe(p)
    n, gib = total_params(p.model), 2**30
    assert n == pytest.approx(7.424e9, rel=1e-3)
    mem = info["memory_breakdown_gib"]
    assert mem["weights_gib"] == pytest.approx(4 * n / gib, abs=0.01)  # bf16 weight + int16 low half
    assert mem["optimizer_gib"] == pytest.approx(8 * n / gib, abs=0.01)
    assert info["master_weights"].startswith("bf16 weight + int16 low half")
    budget = 0.9 * info["gpu_memory_gib"]
    assert info["memory_per_gpu_gib"] <= budget < info["memory_per_gpu_gib"] + 2 * n / gib
    # several ranks keep fp32 shards under FSDP: 4 B per stored parameter
    sharded = describe(resolve("405b", 32, gpu_type="h100"))
    assert sharded["master_weights"] == "fp32 shards over DP x CP = 4"
