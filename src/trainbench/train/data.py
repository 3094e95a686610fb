"""Synthetic training data, as the recipe's mock data: token ids made on the device.

Every rank of one data-parallel replica (its TP, PP and CP peers) draws the same
sequences, so the generator is seeded by (seed, DP rank) only. A step's micro-batches
are drawn before the step's timer starts, so no data work lands in a timed step.
"""

from __future__ import annotations

import torch

from trainbench.config import ModelConfig, TrainConfig


class SyntheticTokens:
    """Yields (inputs, labels) pairs of shape (mbs, seq_len), int64, on ``device``."""

    def __init__(self, model: ModelConfig, train: TrainConfig, *, dp_rank: int, device: torch.device):
        self.seq_len, self.vocab, self.mbs = model.seq_len, model.vocab, train.mbs
        self.kind = train.data
        self.device = device
        self.generator = torch.Generator(device=device)
        # Distinct, reproducible streams per DP rank; the large odd multiplier keeps seeds apart.
        self.generator.manual_seed(train.seed + 1_000_003 * dp_rank)

    def micro_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.mbs, self.seq_len + 1)
        if self.kind == "mock":
            tokens = torch.randint(0, self.vocab, shape, device=self.device, generator=self.generator)
        else:  # "pattern": token[t] = start + t (mod vocab), a random start; the next token is learnable
            start = torch.randint(0, self.vocab, (self.mbs, 1), device=self.device, generator=self.generator)
            tokens = (start + torch.arange(self.seq_len + 1, device=self.device).unsqueeze(0)) % self.vocab
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.micro_batch() for _ in range(n)]
