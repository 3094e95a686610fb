"""This process's place in the job. A single process is rank 0 of 1; the parallel layer
fills in the rest (mesh, DP rank) when torch.distributed is initialised."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    dp_rank: int = 0  # which data-parallel replica this rank's data belongs to
    mesh: Any = None  # torch.distributed DeviceMesh when parallel
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    def _all_reduce(self, value: float, op: Any) -> float:
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=op)
        return float(t.item())

    def reduce_max(self, value: float) -> float:
        import torch.distributed as dist

        return self._all_reduce(value, dist.ReduceOp.MAX if self.world_size > 1 else None)

    def reduce_mean(self, value: float) -> float:
        import torch.distributed as dist

        if self.world_size == 1:
            return value
        return self._all_reduce(value, dist.ReduceOp.SUM) / self.world_size
