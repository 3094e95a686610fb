"""Gradient clipping by the global norm, whatever holds the gradients.

Under tensor parallel and FSDP the gradients are DTensors: the norm of each is reduced over its own
mesh by DTensor (``get_total_norm`` then ``full_tensor``). Pipeline stages hold disjoint parameters,
so their squared norms are summed over the ``pp`` dimension (as torchtitan does). Gradients are
grouped by mesh and placements so that no reduction mixes layouts. Every rank ends with the same
norm: the one a single process would compute for the whole model.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from trainbench.parallel.mesh import ParallelMesh, dim_size


def clip_grad_norm_(params: Iterable[torch.Tensor], max_norm: float, mesh: ParallelMesh | None) -> torch.Tensor:
    """Scale gradients so their global 2-norm is at most ``max_norm``; return the norm before clipping."""
    params = list(params)
    if mesh is None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    groups: dict[object, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            key = (p.grad.device_mesh, p.grad.placements) if isinstance(p.grad, DTensor) else None
            groups.setdefault(key, []).append(p)
    squares = []
    for group in groups.values():
        norm = torch.nn.utils.get_total_norm([p.grad for p in group], 2.0)  # type: ignore[misc]
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        squares.append(norm.float() ** 2)
    total_sq = torch.stack(squares).sum()
    if dim_size(mesh, "pp") > 1:
        dist.all_reduce(total_sq, group=mesh["pp"].get_group())
    total = total_sq.sqrt()
    for group in groups.values():
        torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total
