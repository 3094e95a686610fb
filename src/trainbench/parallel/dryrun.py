"""A dry run: one rank per pipeline stage built for the target world size, without GPUs.

For each pipeline rank (at DP = CP = TP coordinate 0; the other ranks of a stage hold the same
shapes), a fake process group of the plan's world size stands in for the job, the rank's chunks are
built on the meta device and parallelized exactly as a run parallelizes them (TP, FSDP over DP x CP,
float8), and their parameters are counted: whole, after tensor parallel (what the rank computes
with), and stored (after FSDP too). The memory per rank follows from those counts with the
assumptions of ``recipe.memory`` (fp32 master weights, gradients and Adam moments on the stored
shard, a bf16 copy of the TP shard for compute, the stage's activations, a fixed overhead).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from trainbench.config import Plan
from trainbench.errors import ConfigError
from trainbench.model import Llama
from trainbench.recipe import memory


@dataclass
class StageReport:
    pp_rank: int
    rank: int  # the global rank that was built (DP = CP = TP coordinate 0)
    stages: list[int]
    layers: list[int]
    embedding: bool
    output: bool
    params_whole: int  # the rank's chunks before any sharding
    params_tp: int  # after tensor parallel: what one rank computes with
    params_stored: int  # after tensor parallel and FSDP: what one rank keeps
    memory_gib: dict[str, float]


def _tp_numel(p: torch.Tensor) -> int:
    from torch.distributed.tensor import DTensor

    if not isinstance(p, DTensor):
        return p.numel()
    n = p.numel()
    names = p.device_mesh.mesh_dim_names or ()
    for i, (name, placement) in enumerate(zip(names, p.placements, strict=True)):
        if name == "tp" and placement.is_shard():
            n //= p.device_mesh.size(i)
    return n


def _stored_numel(p: torch.Tensor) -> int:
    from torch.distributed.tensor import DTensor

    return p.to_local().numel() if isinstance(p, DTensor) else p.numel()


def _memory(plan: Plan, layers: int, has_output: bool, tp: int, stored: int, largest: int) -> dict[str, float]:
    m, p = plan.model, plan.parallel
    act = memory.activation_bytes_per_layer(m, p, plan.train.mbs, plan.dtype) * layers
    act *= memory.microbatches_in_flight(p, plan.ga)
    if has_output:
        act += memory.logits_bytes(m, p, plan.train.mbs)
    split = memory.splits_masters(plan.parallel, dp=plan.dp)
    est = memory.breakdown(whole=tp, stored=stored, activation_bytes=act, split_masters=split, largest=largest)
    return {k: round(v, 3) for k, v in est.as_dict().items() if k.endswith("_gib")}


def _build_rank(plan: Plan, pp_rank: int) -> StageReport:
    from trainbench.parallel.apply import parallelize
    from trainbench.parallel.mesh import build_mesh
    from trainbench.parallel.pipeline import split_model, stage_ids, stage_layers

    meta = torch.device("meta")
    mesh = build_mesh(plan, "cpu")
    ids = stage_ids(pp_rank, plan)
    with meta:
        whole = Llama(plan.model)
    chunks: list[nn.Module] = []
    for s in ids:
        chunk = split_model(whole, s, plan)
        parallelize(chunk, plan, meta, mesh)
        chunks.append(chunk)
    params = [p for c in chunks for p in c.parameters()]
    tp, stored = sum(map(_tp_numel, params)), sum(map(_stored_numel, params))
    layers = [i for s in ids for i in stage_layers(s, plan)]
    has_output = any(getattr(c, "output", None) is not None for c in chunks)
    return StageReport(
        pp_rank=pp_rank,
        rank=pp_rank * (plan.gpus // plan.parallel.pp),
        stages=ids,
        layers=layers,
        embedding=any(getattr(c, "tok_embeddings", None) is not None for c in chunks),
        output=has_output,
        params_whole=sum(p.numel() for p in params),
        params_tp=tp,
        params_stored=stored,
        memory_gib=_memory(plan, len(layers), has_output, tp, stored, max(map(_tp_numel, params), default=0)),
    )


def dry_run(plan: Plan) -> list[dict[str, Any]]:
    """One report per pipeline rank. Uses (and leaves) no real process group; refuses to run inside one,
    and refuses (``ConfigError``) a layout torch's pipeline schedules would refuse."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore  # registers the "fake" backend

    from trainbench.parallel.pipeline import pipeline_problems

    if problems := pipeline_problems(plan):
        raise ConfigError(problems)
    if dist.is_initialized():
        raise RuntimeError("a dry run makes its own (fake) process group; call it outside a distributed job")
    reports = []
    for pp_rank in range(plan.parallel.pp):
        rank = pp_rank * (plan.gpus // plan.parallel.pp)
        dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=plan.gpus)
        try:
            reports.append(asdict(_build_rank(plan, pp_rank)))
        finally:
            dist.destroy_process_group()
    return reports


def format_dry_run(plan: Plan, reports: list[dict[str, Any]]) -> list[str]:
    p = plan.parallel
    lines = [
        f"dry run: {plan.model.name} on {plan.gpus} ranks, mesh (pp {p.pp}, dp {plan.dp}, cp {p.cp}, tp {p.tp}), "
        f"{p.pp * (p.vp or 1)} pipeline stage(s), schedule "
        + ("none" if p.pp == 1 else ("interleaved 1F1B" if p.vp else "1F1B"))
        + f", {plan.ga} micro-batch(es) per step",
        f"{'pp rank':>7} {'stages':>20} {'layers':>6} {'ends':>12} {'params (whole)':>15} {'after TP':>13} "
        f"{'stored':>13} {'memory GiB':>10}",
    ]
    for r in reports:
        stages = ",".join(map(str, r["stages"]))
        ends = "+".join(n for n, on in (("embed", r["embedding"]), ("output", r["output"])) if on) or "-"
        counts = f"{r['params_whole']:>15,} {r['params_tp']:>13,} {r['params_stored']:>13,}"
        gib = r["memory_gib"]["total_gib"]
        lines.append(f"{r['pp_rank']:>7} {stages:>20} {len(r['layers']):>6} {ends:>12} {counts} {gib:>10.1f}")
    lines.append(
        "every rank of a pipeline stage holds the same shapes (FSDP shards may differ by padding); memory = fp32 "
        "weights + gradients + Adam on the stored shard, a bf16 copy of the TP shard, activations, overhead"
    )
    return lines
