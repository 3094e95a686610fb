"""Context parallel: each CP rank holds a slice of every sequence and attention runs as a ring.

``torch.distributed.tensor.experimental.context_parallel`` shards the given buffers along their
sequence dimension in place (inputs, labels and the model's rope table, so position ``t`` keeps its
rotation) with a head-tail load balance for the causal mask, and routes ``scaled_dot_product_attention``
to ring attention while the context is open: forward *and* backward must run inside it.

PyTorch implements the ring for the flash, memory-efficient and cuDNN SDPA kernels, which are CUDA
only: on CPU context parallel raises ``NotImplementedError`` (checked in tests/parallel), so CP
layouts run on GPUs only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from trainbench.parallel.mesh import ParallelMesh, dim_size

SequenceSharding = Callable[[torch.Tensor, torch.Tensor], contextlib.AbstractContextManager[None]]


def _unsharded(inputs: torch.Tensor, labels: torch.Tensor) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def sequence_sharding(mesh: ParallelMesh | None, chunks: Sequence[nn.Module]) -> SequenceSharding:
    """``shard(inputs, labels)``: a context that holds this rank's sequence slice of the batch
    (inputs and labels (B, S) -> (B, S / CP), the chunks' rope tables (S, 2D) -> (S / CP, 2D))."""
    if dim_size(mesh, "cp") == 1:
        return _unsharded
    assert mesh is not None
    from torch.distributed.tensor.experimental import context_parallel

    cp_mesh = mesh["cp"]

    def shard(inputs: torch.Tensor, labels: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        # Read now, not when built: initialisation replaces the buffers.
        ropes = [cast(torch.Tensor, chunk.rope_cache) for chunk in chunks]
        return context_parallel(
            cp_mesh,
            buffers=[inputs, labels, *ropes],
            buffer_seq_dims=[1, 1] + [0] * len(ropes),
            no_restore_buffers={inputs, labels},
        )

    return shard
