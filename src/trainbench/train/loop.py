"""The training loop, top to bottom: batch -> forward/backward x GA -> clip -> step -> time -> record.

``Trainer`` owns the model, optimizer and data of one rank and runs one optimizer step;
``train()`` runs the steps, times them, writes the records and handles faults, so that
whatever stops a run leaves every record written so far and a summary that says why.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
from torch import nn

from trainbench.config import Plan
from trainbench.model import Llama, cross_entropy_loss
from trainbench.parallel import (
    Float8WeightCache,
    bf16_enabled,
    build_chunks,
    clip_grad_norm_,
    compile_enabled,
    parallelize,
    sequence_sharding,
)
from trainbench.recipe.memory import caches_fp8_weights
from trainbench.train.data import SyntheticTokens
from trainbench.train.dist import DistContext
from trainbench.train.optim import build_optimizer, set_lr
from trainbench.train.precision import SplitMasterAdamW

GIB = 2**30


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf: the run stops at that step."""


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler's cancel or time limit): stop as Ctrl-C does."""


@dataclass
class StepResult:
    loss: float
    grad_norm: float


class Trainer:
    """One rank's model, optimizer and data for single-program (non-pipelined) layouts."""

    def __init__(self, plan: Plan, device: torch.device, ctx: DistContext, model: nn.Module | None = None):
        self.plan, self.device, self.ctx = plan, device, ctx
        torch.manual_seed(plan.train.seed)
        if model is None and ctx.mesh is not None:  # several ranks: parallelized, same weights as one process
            (model,) = build_chunks(plan, device, ctx.mesh)
        if model is None:
            with torch.device("meta"):
                model = Llama(plan.model)
            model = parallelize(model, plan, device)
            model.to_empty(device=device)
            with torch.no_grad():
                model.init_weights()  # type: ignore[operator]
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        # One rank holding whole parameters in bf16 compute: the recipe's bf16 weights with fp32
        # masters, the masters kept as bf16 high + int16 low halves (train/precision.py). Sharded
        # (FSDP) parameters get bf16 compute over fp32 shards from FSDP's policy.
        compiled = compile_enabled(plan, device)
        self.optimizer: SplitMasterAdamW | torch.optim.AdamW = (
            SplitMasterAdamW(self.params, plan.train, compile_kernels=compiled)
            if ctx.mesh is None and self.bf16
            else build_optimizer(self.params, plan.train, device)
        )
        # FP8 on one rank: the weights' fp8 copies are made once per optimizer step, not per micro-batch
        # (the condition the memory plan counts them under).
        t = plan.train
        self.fp8_weights = (
            Float8WeightCache(model, compile_kernels=compiled)
            if self.master is not None
            and caches_fp8_weights(
                plan.parallel, dp=plan.dp, dtype=t.dtype, fp8_recipe=t.fp8_recipe, enabled=t.fp8_weight_cache
            )
            else None
        )
        self.refresh_fp8_weights()
        # The loss over a 128k vocabulary is memory-bound: compiled, the fp32 upcast, log-softmax and
        # its gradient fuse into fewer passes over the (tokens x vocab) logits.
        self.loss_fn = torch.compile(cross_entropy_loss) if compiled else cross_entropy_loss
        self.data = SyntheticTokens(plan.model, plan.train, dp_rank=ctx.dp_rank, device=device)
        self.ga = plan.ga
        self.shard_sequence = sequence_sharding(ctx.mesh, [model])  # context parallel; a no-op without CP

    def refresh_fp8_weights(self) -> None:
        """Recast the cached fp8 weights: after every change of the bf16 weights."""
        if self.fp8_weights is not None:
            self.fp8_weights.refresh()

    @property
    def master(self) -> SplitMasterAdamW | None:
        """The bf16 weights' fp32 masters and their optimizer, on one rank in bf16; else None."""
        return self.optimizer if isinstance(self.optimizer, SplitMasterAdamW) else None

    @property
    def bf16(self) -> bool:
        return bf16_enabled(self.plan, self.device)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        # bf16 compute over fp32 master weights (fp8 linears cast further).
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.data.step_batches(step, self.ga)

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over GA micro-batches. Returns (mean loss, grad norm) as device
        tensors, so nothing here waits for the device."""
        set_lr(self.optimizer, lr)
        total = torch.zeros((), device=self.device)
        for inputs, labels in batches:
            with self.shard_sequence(inputs, labels):
                with self.autocast():
                    logits = self.model(inputs)
                    loss = self.loss_fn(logits, labels) / self.ga
                loss.backward()
            total += loss.detach()
        if isinstance(self.optimizer, SplitMasterAdamW):
            grad_norm = self.optimizer.clip_(self.plan.train.grad_clip)
            self.optimizer.step()  # also zeroes the main gradients
            self.refresh_fp8_weights()
        else:
            grad_norm = clip_grad_norm_(self.params, self.plan.train.grad_clip, self.ctx.mesh)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return total, grad_norm

    def read(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> StepResult:
        """Read the step's numbers back (after the timer): loss averaged over DP replicas."""
        return StepResult(loss=self.ctx.reduce_mean(float(loss)), grad_norm=float(grad_norm))


def memory_gib(device: torch.device) -> tuple[float, float]:
    """(peak allocated since the last reset, reserved) on this device, in GiB; 0 on CPU."""
    if device.type != "cuda":
        return 0.0, 0.0
    peak = torch.cuda.max_memory_allocated(device) / GIB
    reserved = torch.cuda.memory_reserved(device) / GIB
    torch.cuda.reset_peak_memory_stats(device)
    return peak, reserved


@contextlib.contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` while training (main thread only)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"signal {signum}")

    try:
        previous: Any = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_finite(step: int, result: StepResult) -> None:
    if not math.isfinite(result.loss):
        raise NonFiniteLoss(f"loss is {result.loss} at step {step}: stopping (grad norm {result.grad_norm})")
