"""The training loss, kept out of the model's forward so pipeline schedules can own it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over all B*S positions, in fp32.

    ``logits`` (B, S, V) and ``labels`` (B, S) are already aligned (label t is the target of
    logit t); shifting the tokens is the data pipeline's job.
    """
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(0, 1))
