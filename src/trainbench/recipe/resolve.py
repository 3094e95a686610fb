"""Resolve a recipe cell (model x dtype x GPU count + overrides) into a validated ``Plan``.

Order: the recipe's table row (or its full-scale rule, or a single-node proxy) gives the
layout, layers and GBS; ``key=value`` overrides apply on top; a single-node proxy then
takes as many full-width layers as the memory estimate allows (unless ``model.layers``
was set); finally every constraint is checked and all violations reported together.
"""

from __future__ import annotations

import math
from dataclasses import replace

from trainbench.config import ModelConfig, ParallelConfig, Plan, RunConfig, TrainConfig
from trainbench.errors import ConfigError
from trainbench.metrics.flops import FLOPS_CONVENTIONS
from trainbench.metrics.peaks import DTYPES, gpu_spec, gpu_table
from trainbench.recipe import tables
from trainbench.recipe.memory import MemoryEstimate, estimate_memory
from trainbench.recipe.overrides import apply_overrides

SINGLE_NODE_MAX_GPUS = 16
PROXY_MEMORY_FRACTION = 0.9  # a proxy's layers fill at most this share of the GPU's memory
FP8_RECIPES = ("tensorwise", "rowwise")
DATA_KINDS = ("mock", "pattern")


def resolve(
    model: str,
    gpus: int,
    dtype: str = "bf16",
    gpu_type: str = "h100",
    overrides: list[str] | None = None,
    *,
    flops_convention: str = "recipe",
    peak_tflops: float | None = None,
) -> Plan:
    model = model.lower()
    dtype = dtype.lower()
    problems: list[str] = []
    if model not in tables.model_names():
        problems.append(f"unknown model {model!r}; choose one of {', '.join(tables.model_names())}")
    if dtype not in DTYPES:
        problems.append(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if gpu_type.lower() not in gpu_table() and peak_tflops is None:
        problems.append(
            f"unknown GPU type {gpu_type!r}: known types are {', '.join(sorted(gpu_table()))}; "
            "for another GPU give its dense peak with --peak-tflops"
        )
    if flops_convention not in FLOPS_CONVENTIONS:
        problems.append(f"unknown FLOPs convention {flops_convention!r}; choose one of {', '.join(FLOPS_CONVENTIONS)}")
    if not isinstance(gpus, int) or gpus < 1:
        problems.append(f"--gpus must be a positive whole number, got {gpus!r}")
    if problems:
        raise ConfigError(problems)

    base, scale_note, proxy, pick_layers = _scale(model, gpus)
    base.train.dtype = dtype
    tree, keys, errors = apply_overrides(base, overrides or [])
    if errors:
        raise ConfigError(errors)
    if tree.train.dtype != dtype:  # train.dtype=... given as an override
        dtype = tree.train.dtype
    spec = gpu_table().get(gpu_type.lower())
    memory_gib = spec.memory_gib if spec else None

    plan = Plan(
        model=tree.model,
        parallel=tree.parallel,
        train=tree.train,
        gpus=gpus,
        gpu_type=gpu_type.lower(),
        proxy=proxy or tree.model.layers < tables.preset(model)["layers"],
        scale_note=scale_note,
        flops_convention=flops_convention,
        peak_tflops_override=peak_tflops,
    )
    violations = validate(plan)
    if violations:
        raise ConfigError(violations)
    if pick_layers and "model.layers" not in keys and memory_gib is not None:
        plan = _fill_memory_with_layers(plan, memory_gib)
    if "model.layers" in keys:
        plan.scale_note += f"; layers set to {plan.model.layers} by override"
    return plan


class _NoScale(Exception):
    """Internal: this GPU count has no recipe answer (raised only while probing neighbours)."""


def _scale(model: str, gpus: int, _probing: bool = False) -> tuple[RunConfig, str, bool, bool]:
    """The recipe's answer for this GPU count: (tree, note, proxy?, pick layers by memory?)."""
    preset = tables.preset(model)
    lay = tables.layout(model)
    tree = RunConfig(
        model=ModelConfig(name=model, **preset),  # type: ignore[arg-type]
        parallel=ParallelConfig(
            tp=lay["tp"], pp=lay["pp"], vp=lay["vp"], cp=lay["cp"], sequence_parallel=lay["sequence_parallel"]
        ),
        train=TrainConfig(mbs=lay["mbs"]),
    )
    row = tables.proxy_row(model, gpus)
    if row is not None:
        tree.model.layers = row["layers"]
        tree.parallel.pp, tree.parallel.vp = row["pp"], row["vp"]
        tree.train.gbs = row["gbs"]
        note = f"recipe proxy row for {gpus} GPUs: {row['layers']} layers, PP {row['pp']}, GBS {row['gbs']}"
        return tree, note, True, False
    gbs_num, gbs_den = lay["gbs_per_gpus"]
    smallest = min([lay["smallest_full_scale_gpus"]] + [r["gpus"] for r in tables.proxy_rows(model)])
    if gpus < smallest and gpus <= SINGLE_NODE_MAX_GPUS:
        return _single_node_proxy(tree, model, gpus)
    err = _full_scale_problem(tree, gpus, gbs_num, gbs_den)
    if err and _probing:
        raise _NoScale
    if err:
        nearest = nearest_valid_gpu_counts(model, gpus)
        raise ConfigError(
            f"{model} has no recipe row for {gpus} GPUs and its full-scale rule does not fit: {err}; "
            f"nearest valid GPU counts: {', '.join(map(str, nearest))}"
        )
    tree.train.gbs = gbs_num * gpus // gbs_den
    note = f"full-scale rule: {preset['layers']} layers, GBS = {gbs_num} x GPUs / {gbs_den} = {tree.train.gbs}"
    return tree, note, False, False


def _full_scale_problem(tree: RunConfig, gpus: int, gbs_num: int, gbs_den: int) -> str | None:
    p = tree.parallel
    group = p.tp * p.pp * p.cp
    if gpus % group:
        return f"GPUs {gpus} not divisible by TP x PP x CP = {group}"
    if (gbs_num * gpus) % gbs_den:
        return f"GBS = {gbs_num} x {gpus} / {gbs_den} is not whole"
    gbs = gbs_num * gpus // gbs_den
    dp = gpus // group
    if gbs % (dp * tree.train.mbs):
        return f"GBS {gbs} not divisible by DP x MBS = {dp * tree.train.mbs}"
    return None


def _single_node_proxy(tree: RunConfig, model: str, gpus: int) -> tuple[RunConfig, str, bool, bool]:
    """Below the recipe's smallest scale on one node: full-width layers, a layout that
    fits the GPUs (TP up to the recipe's, CP as the recipe's when it divides, no PP),
    and the per-GPU batch of the recipe's smallest published scale."""
    m, p = tree.model, tree.parallel
    recipe_tp = p.tp
    p.tp = max(
        d for d in range(1, min(recipe_tp, gpus) + 1) if gpus % d == 0 and m.heads % d == 0 and m.query_groups % d == 0
    )
    p.cp = p.cp if (gpus // p.tp) % p.cp == 0 else 1
    p.pp, p.vp = 1, None
    p.sequence_parallel = p.sequence_parallel and p.tp > 1
    dp = gpus // (p.tp * p.cp)
    rows = tables.proxy_rows(model)
    if rows:
        ref_gbs, ref_gpus = rows[0]["gbs"], rows[0]["gpus"]
    else:
        ref_gbs, ref_gpus = tables.layout(model)["gbs_per_gpus"]
    per_replica = dp * tree.train.mbs
    tree.train.gbs = max(1, math.ceil(gpus * ref_gbs / ref_gpus / per_replica)) * per_replica
    note = (
        f"single-node proxy: TP {p.tp}, CP {p.cp}, no PP; GBS {tree.train.gbs} keeps the per-GPU batch of the "
        f"recipe's {ref_gpus}-GPU cell ({ref_gbs} sequences)"
    )
    return tree, note, True, True


def _fill_memory_with_layers(plan: Plan, memory_gib: float) -> Plan:
    budget = PROXY_MEMORY_FRACTION * memory_gib
    full_layers = tables.preset(plan.model.name)["layers"]
    # Sized by the bf16 estimate whatever the dtype: the BF16 and FP8 runs of one cell train
    # the same model, as the recipe's two tables do, so their numbers compare.
    as_bf16 = replace(plan, train=replace(plan.train, dtype="bf16"))

    def total(layers: int) -> float:
        return memory_total(replace(as_bf16, model=replace(plan.model, layers=layers)))

    fitting = [n for n in range(1, full_layers + 1) if total(n) <= budget]
    if not fitting:
        one = total(1)
        raise ConfigError(
            f"no {plan.model.name}-shaped proxy fits {plan.gpus} x {plan.gpu_type} ({memory_gib:.0f} GiB): even one "
            f"full-width layer needs {one:.1f} GiB per GPU (budget {budget:.0f} GiB); use more GPUs "
            f"or set model.layers explicitly to plan it anyway"
        )
    layers = max(fitting)
    plan = replace(plan, model=replace(plan.model, layers=layers))
    plan.proxy = layers < full_layers
    plan.scale_note += (
        f"; {layers} of {full_layers} layers: the most whose memory estimate stays within "
        f"{PROXY_MEMORY_FRACTION:.0%} of {memory_gib:.0f} GiB"
    )
    return plan


def plan_memory(plan: Plan) -> MemoryEstimate:
    """The memory estimate of a plan's most loaded rank (``plan`` shows it; proxies are sized by it)."""
    t = plan.train
    return estimate_memory(
        plan.model,
        plan.parallel,
        dp=plan.dp,
        mbs=t.mbs,
        ga=max(plan.ga, 1),
        dtype=t.dtype,
        fp8_recipe=t.fp8_recipe,
        fp8_weight_cache=t.fp8_weight_cache,
    )


def memory_total(plan: Plan) -> float:
    return plan_memory(plan).total_gib


def validate(plan: Plan) -> list[str]:
    """Every violated constraint, each with its numbers."""
    m, p, t = plan.model, plan.parallel, plan.train
    out: list[str] = []
    positive = {
        "model.layers": m.layers, "model.hidden": m.hidden, "model.ffn": m.ffn, "model.heads": m.heads,
        "model.query_groups": m.query_groups, "model.seq_len": m.seq_len, "model.vocab": m.vocab,
        "parallel.tp": p.tp, "parallel.pp": p.pp, "parallel.cp": p.cp,
        "train.gbs": t.gbs, "train.mbs": t.mbs, "train.steps": t.steps,
    }  # fmt: skip
    bad = {k for k, v in positive.items() if v < 1}
    out += [f"{k} must be positive, got {positive[k]}" for k in sorted(bad)]
    if p.vp is not None and p.vp < 1:
        out.append(f"parallel.vp must be positive or null, got {p.vp}")
        bad.add("parallel.vp")
    for k, v in {"train.lr": t.lr, "train.grad_clip": t.grad_clip, "model.rope_theta": m.rope_theta}.items():
        if not v > 0:
            out.append(f"{k} must be positive, got {v}")
    if t.warmup_steps < 0 or t.min_lr < 0 or t.weight_decay < 0:
        out.append("train.warmup_steps, train.min_lr and train.weight_decay must not be negative")
    if t.dtype not in DTYPES:
        out.append(f"train.dtype must be one of {', '.join(DTYPES)}, got {t.dtype!r}")
    if t.data not in DATA_KINDS:
        out.append(f"train.data must be one of {', '.join(DATA_KINDS)}, got {t.data!r}")
    if t.fp8_recipe not in FP8_RECIPES:
        out.append(f"train.fp8_recipe must be one of {', '.join(FP8_RECIPES)}, got {t.fp8_recipe!r}")
    if bad:
        return out  # the divisibility rules below would only repeat these
    vp = p.vp or 1
    if m.layers % (p.pp * vp):
        out.append(f"layers {m.layers} not divisible by PP x VP = {p.pp} x {vp} = {p.pp * vp}")
    if p.vp is not None and p.pp == 1:
        out.append(f"VP {p.vp} needs PP > 1 (virtual stages interleave a pipeline)")
    if m.hidden % m.heads:
        out.append(f"hidden {m.hidden} not divisible by heads {m.heads}")
    if m.heads % m.query_groups:
        out.append(f"heads {m.heads} not divisible by query groups {m.query_groups}")
    if m.heads % p.tp:
        out.append(f"heads {m.heads} not divisible by TP {p.tp}")
    if m.query_groups % p.tp:
        out.append(f"query groups {m.query_groups} not divisible by TP {p.tp}")
    if m.ffn % p.tp:
        out.append(f"FFN {m.ffn} not divisible by TP {p.tp}")
    if m.head_dim % 2:
        out.append(f"head dim {m.head_dim} must be even for rotary embedding")
    group = p.tp * p.pp * p.cp
    if plan.gpus % group:
        out.append(f"GPUs {plan.gpus} not divisible by TP x PP x CP = {p.tp} x {p.pp} x {p.cp} = {group}")
    elif t.gbs % (plan.dp * t.mbs):
        out.append(f"GBS {t.gbs} not divisible by DP x MBS = {plan.dp} x {t.mbs} = {plan.dp * t.mbs}")
    if m.seq_len % (2 * p.cp):
        out.append(f"sequence length {m.seq_len} not divisible by 2 x CP = {2 * p.cp}")
    if p.sequence_parallel and p.tp > 1 and (t.mbs * m.seq_len // p.cp) % p.tp:
        out.append(f"sequence parallel needs the tokens per rank {t.mbs * m.seq_len // p.cp} divisible by TP {p.tp}")
    return out


def nearest_valid_gpu_counts(model: str, gpus: int, limit: int = 2) -> list[int]:
    """The closest GPU counts below and above ``gpus`` that resolve for ``model``."""

    def ok(n: int) -> bool:
        try:
            _scale(model, n, _probing=True)
        except _NoScale:
            return False
        return True

    below = [n for n in range(gpus - 1, 0, -1) if ok(n)][:limit]
    above = [n for n in range(gpus + 1, gpus * 4 + 4000) if ok(n)][:limit]
    return sorted(below + above)


def gpu_memory_gib(plan: Plan) -> float | None:
    return gpu_spec(plan.gpu_type).memory_gib if plan.gpu_type in gpu_table() else None
