"""Data parallel with sharded weights, gradients and optimizer state: FSDP2 ``fully_shard``.

Each transformer block is one FSDP unit (all-gathered just before its forward and backward, its
gradients reduce-scattered right after), the rest of the model (embedding, final norm, output)
is the root unit. Parameters are stored in fp32 (the master copy the optimizer updates); with bf16
mixed precision they are all-gathered as bf16 for compute and gradients are reduced in fp32.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def apply_fsdp(model: nn.Module, mesh: DeviceMesh, *, bf16: bool, reshard_after_forward: bool) -> None:
    """Shard ``model`` over ``mesh`` (1-D) in place. ``reshard_after_forward=False`` keeps the gathered
    weights between forward and backward: a pipeline stage runs many micro-batches' forwards before
    their backwards, and gathering each block again for every one would multiply the traffic."""
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    for block in cast(nn.ModuleDict, model.layers).values():
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
