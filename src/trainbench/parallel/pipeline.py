"""Pipeline parallel: the model cut into PP x VP chunks, run by torch's 1F1B schedules.

Stage ``s`` of ``PP * VP`` holds layers ``[s * L / (PP VP), (s + 1) * L / (PP VP))``; the first also holds
the embedding, the last the final norm and the output layer (Megatron's even split). Pipeline rank ``r``
holds stages ``r, r + PP, r + 2 PP, ...`` (``VP`` of them: the "loop" placement of
``ScheduleInterleaved1F1B``). With VP = 1 the schedule is ``Schedule1F1B``.

A chunk is the plain ``Llama`` with the other layers deleted and the embedding / norm / output set to
None; its forward passes hidden states (B, S, hidden) between stages. Both schedules take the step's
GA micro-batches at once (split along the batch dimension), call the loss on the last stage per
micro-batch and divide the gradients by GA, as the single process's loss / GA does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from trainbench.config import Plan
from trainbench.model import Llama, cross_entropy_loss
from trainbench.parallel.mesh import FSDP_DIM, ParallelMesh, dim_size


def num_stages(plan: Plan) -> int:
    return plan.parallel.pp * (plan.parallel.vp or 1)


def stage_ids(pp_rank: int, plan: Plan) -> list[int]:
    """The stages pipeline rank ``pp_rank`` holds, in order."""
    return list(range(pp_rank, num_stages(plan), plan.parallel.pp))


def stage_layers(stage: int, plan: Plan) -> range:
    per_stage = plan.model.layers // num_stages(plan)
    return range(stage * per_stage, (stage + 1) * per_stage)


def split_model(whole: Llama, stage: int, plan: Plan) -> Llama:
    """A copy of (meta) ``whole`` that keeps only what ``stage`` holds; layer keys keep their numbers."""
    n = num_stages(plan)
    if n == 1:
        return whole
    layers, ends = whole.layers, (whole.tok_embeddings, whole.norm, whole.output)
    # Detach what the stage does not hold, copy the rest, put it all back: only the stage is copied.
    whole.layers = nn.ModuleDict({str(i): layers[str(i)] for i in stage_layers(stage, plan)})
    if stage != 0:
        whole.tok_embeddings = None
    if stage != n - 1:
        whole.norm = whole.output = None
    try:
        return copy.deepcopy(whole)
    finally:
        whole.layers = layers
        whole.tok_embeddings, whole.norm, whole.output = ends


def pipeline_problems(plan: Plan) -> list[str]:
    """What torch's schedules refuse, said before anything starts."""
    p = plan.parallel
    if p.pp == 1:
        return []
    ga = plan.ga
    if ga < p.pp:
        return [f"pipeline parallel {p.pp} needs at least {p.pp} micro-batches per step, got GA {ga} "
                f"(GBS {plan.train.gbs} / (DP {plan.dp} x MBS {plan.train.mbs})): raise train.gbs"]  # fmt: skip
    rounds = max(1, ga // p.pp)
    if p.vp is not None and ga % rounds:
        return [f"the interleaved schedule needs GA {ga} divisible by GA // PP = {rounds}: choose train.gbs so "
                f"that GA is a multiple of PP {p.pp}"]  # fmt: skip
    return []


class Autocast(nn.Module):
    """Runs a stage's forward under bf16 autocast. The schedule runs backwards inside its own ``step``,
    so autocast cannot wrap the step as it wraps a single process's forward. Only for stages without
    FSDP: FSDP's mixed-precision policy computes in bf16 already, and the stage must stay the
    ``FSDPModule`` itself for the schedule to defer gradient reduction to the last micro-batch."""

    def __init__(self, inner: nn.Module, device_type: str):
        super().__init__()
        self.inner, self.device_type = inner, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            return self.inner(x)


def build_schedule(
    chunks: Sequence[nn.Module], ids: Sequence[int], plan: Plan, mesh: ParallelMesh, device: torch.device, bf16: bool
) -> object:
    """The schedule that runs this rank's ``chunks`` (stages ``ids``) with the other pipeline ranks."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B

    group = mesh["pp"].get_group()
    wrap = bf16 and dim_size(mesh, FSDP_DIM) == 1
    modules = [Autocast(c, device.type) if wrap else c for c in chunks]
    stages = [PipelineStage(m, s, num_stages(plan), device, group=group) for m, s in zip(modules, ids, strict=True)]
    if plan.parallel.vp is None:
        return Schedule1F1B(stages[0], n_microbatches=plan.ga, loss_fn=cross_entropy_loss)
    return ScheduleInterleaved1F1B(stages, n_microbatches=plan.ga, loss_fn=cross_entropy_loss)  # type: ignore[arg-type]
