"""AdamW and the recipe's learning-rate schedule (linear warm-up, then cosine to min_lr)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from trainbench.config import TrainConfig


def lr_at(step: int, t: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up from 0 over
    ``warmup_steps``, then cosine decay from ``lr`` to ``min_lr`` over ``decay_steps``."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.decay_steps - t.warmup_steps))
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * progress))


def build_optimizer(params: Sequence[torch.Tensor], t: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW on the fp32 master parameters; fused on CUDA (one kernel for all tensors)."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        list(params),
        lr=lr_at(0, t),
        betas=(t.beta1, t.beta2),
        eps=t.adam_eps,
        weight_decay=t.weight_decay,
        fused=fused,
        foreach=None if fused else True,
    )


class HasParamGroups(Protocol):
    param_groups: list[dict[str, Any]]


def set_lr(optimizer: HasParamGroups, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
