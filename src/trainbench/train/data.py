"""Synthetic training data, as the recipe's mock data: token ids made on the device.

Each sequence of the global batch is drawn from its own seed, (seed, step, global sample
index), so the global batch of a step is the same whatever the layout: a DP rank takes
its slice, and every rank of one replica (its TP, PP and CP peers) draws the same one.
That is what lets a parallel run be checked against the single-process run step by step.
A step's micro-batches are drawn before the step's timer starts.
"""

from __future__ import annotations

import torch

from trainbench.config import ModelConfig, TrainConfig


class SyntheticTokens:
    """(inputs, labels) micro-batches of shape (mbs, seq_len), int64, on ``device``."""

    def __init__(self, model: ModelConfig, train: TrainConfig, *, dp_rank: int, device: torch.device):
        self.seq_len, self.vocab, self.mbs = model.seq_len, model.vocab, train.mbs
        self.kind, self.seed = train.data, train.seed
        self.dp_rank, self.device = dp_rank, device
        self.generator = torch.Generator(device=device)

    def _sequence(self, step: int, index: int) -> torch.Tensor:
        """Sequence ``index`` of the global batch of ``step``: (seq_len + 1,) token ids."""
        self.generator.manual_seed(hash((self.seed, step, index)) & 0x7FFF_FFFF_FFFF_FFFF)
        if self.kind == "mock":
            return torch.randint(0, self.vocab, (self.seq_len + 1,), device=self.device, generator=self.generator)
        # "pattern": token[t] = start + t (mod vocab) from a random start; the next token is learnable
        start = torch.randint(0, self.vocab, (1,), device=self.device, generator=self.generator)
        return (start + torch.arange(self.seq_len + 1, device=self.device)) % self.vocab

    def step_batches(self, step: int, ga: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This DP rank's ``ga`` micro-batches of ``step``: global samples
        [dp_rank * ga * mbs, (dp_rank + 1) * ga * mbs), in order."""
        first = self.dp_rank * ga * self.mbs
        out = []
        for j in range(ga):
            tokens = torch.stack([self._sequence(step, first + j * self.mbs + k) for k in range(self.mbs)])
            out.append((tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()))  # (mbs, seq_len) each
        return out
