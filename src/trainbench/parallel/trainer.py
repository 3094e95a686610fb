"""``PipelineTrainer``: one rank's share of a pipelined layout, with ``train.loop.Trainer``'s interface.

``batches(step)`` returns this DP replica's GA micro-batches stacked, (GA * MBS, S) inputs and labels;
``step`` runs them through the schedule (inside the context-parallel sequence sharding when CP > 1),
clips by the global gradient norm and steps the optimizer; ``read`` brings the loss, which only the
last stage computes, to every rank.
"""

from __future__ import annotations

import torch

from trainbench.config import Plan
from trainbench.parallel.apply import bf16_enabled
from trainbench.parallel.build import build_chunks
from trainbench.parallel.context import sequence_sharding
from trainbench.parallel.grads import clip_grad_norm_
from trainbench.parallel.pipeline import build_schedule, num_stages, stage_ids
from trainbench.train.data import SyntheticTokens
from trainbench.train.dist import DistContext
from trainbench.train.loop import StepResult
from trainbench.train.optim import build_optimizer, set_lr

Batch = tuple[torch.Tensor, torch.Tensor]


class PipelineTrainer:
    def __init__(self, plan: Plan, device: torch.device, ctx: DistContext):
        assert ctx.mesh is not None, "pipeline parallel runs on a device mesh"
        self.plan, self.device, self.ctx = plan, device, ctx
        self.pp = plan.parallel.pp
        self.stage_ids = stage_ids(ctx.mesh.get_local_rank("pp"), plan)
        self.has_first = 0 in self.stage_ids
        self.has_last = num_stages(plan) - 1 in self.stage_ids
        self.chunks = build_chunks(plan, device, ctx.mesh, self.stage_ids)
        self.params = [p for chunk in self.chunks for p in chunk.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, plan.train, device)
        self.data = SyntheticTokens(plan.model, plan.train, dp_rank=ctx.dp_rank, device=device)
        self.schedule = build_schedule(
            self.chunks, self.stage_ids, plan, ctx.mesh, device, bf16=bf16_enabled(plan, device)
        )
        self.shard_sequence = sequence_sharding(ctx.mesh, self.chunks)

    def batches(self, step: int) -> Batch:
        micro = self.data.step_batches(step, self.plan.ga)
        return torch.cat([i for i, _ in micro]), torch.cat([t for _, t in micro])  # (GA * MBS, S) each

    def step(self, batch: Batch, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; the loss is the mean over micro-batches on the last stage, 0 elsewhere."""
        inputs, labels = batch
        set_lr(self.optimizer, lr)
        losses: list[torch.Tensor] = []
        with self.shard_sequence(inputs, labels):
            if self.has_first:
                self.schedule.step(inputs)  # type: ignore[attr-defined]
            elif self.has_last:
                self.schedule.step(target=labels, losses=losses)  # type: ignore[attr-defined]
            else:
                self.schedule.step()  # type: ignore[attr-defined]
        loss = torch.stack(losses).mean().detach() if losses else torch.zeros((), device=self.device)
        grad_norm = clip_grad_norm_(self.params, self.plan.train.grad_clip, self.ctx.mesh)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm

    def read(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> StepResult:
        """The loss averaged over the last stage's ranks (DP replicas, CP slices, identical TP copies):
        the world mean of ``PP x loss`` there and 0 elsewhere."""
        mine = float(loss) * self.pp if self.has_last else 0.0
        return StepResult(loss=self.ctx.reduce_mean(mine), grad_norm=float(grad_norm))
