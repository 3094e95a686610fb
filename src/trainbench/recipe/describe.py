"""What follows from a plan: FLOPs, memory, the published expectation. One dict, many views."""

from __future__ import annotations

from typing import Any

from trainbench.config import Plan
from trainbench.metrics.flops import model_flops_per_sample
from trainbench.recipe import tables
from trainbench.recipe.memory import caches_fp8_weights, master_weights_note
from trainbench.recipe.resolve import gpu_memory_gib, plan_memory


def flops_per_sample(plan: Plan) -> float:
    m = plan.model
    return model_flops_per_sample(
        layers=m.layers,
        hidden=m.hidden,
        ffn=m.ffn,
        heads=m.heads,
        query_groups=m.query_groups,
        seq_len=m.seq_len,
        vocab=m.vocab,
        convention=plan.flops_convention,  # type: ignore[arg-type]
    )


def describe(plan: Plan) -> dict[str, Any]:
    """The ``plan --json`` object."""
    m, p, t = plan.model, plan.parallel, plan.train
    mem = plan_memory(plan)
    capacity = gpu_memory_gib(plan)
    ref = tables.find_reference(m.name, t.dtype, plan.gpus, m.layers, t.gbs)
    return {
        "model": m.name,
        "dtype": t.dtype,
        "gpus": plan.gpus,
        "gpu_type": plan.gpu_type,
        "layers": m.layers,
        "hidden": m.hidden,
        "ffn": m.ffn,
        "heads": m.heads,
        "query_groups": m.query_groups,
        "seq_len": m.seq_len,
        "vocab": m.vocab,
        "tp": p.tp,
        "pp": p.pp,
        "vp": p.vp,
        "cp": p.cp,
        "dp": plan.dp,
        "sequence_parallel": p.sequence_parallel,
        "mbs": t.mbs,
        "gbs": t.gbs,
        "ga": plan.ga,
        "steps": t.steps,
        "proxy": plan.proxy,
        "scale_note": plan.scale_note,
        "flops_convention": plan.flops_convention,
        "model_flops_per_sample": flops_per_sample(plan),
        "memory_per_gpu_gib": round(mem.total_gib, 2),
        "memory_breakdown_gib": {k: round(v, 2) for k, v in mem.as_dict().items() if k.endswith("_gib")},
        "master_weights": master_weights_note(p, dp=plan.dp)
        + (
            "; fp8 copies of the block weights, cast once per optimizer step"
            if caches_fp8_weights(p, dp=plan.dp, dtype=t.dtype, fp8_recipe=t.fp8_recipe, enabled=t.fp8_weight_cache)
            else ""
        ),
        "gpu_memory_gib": capacity,
        "fits": None if capacity is None else mem.total_gib <= capacity,
        "reference": None if ref is None else ref.as_dict(),
    }
