"""The device mesh: one named dimension per parallelism, ``("pp", "dp", "cp", "tp")``, TP innermost.

Rank ``r`` sits at ``(pp, dp, cp, tp)`` with ``r = ((pp * DP + dp) * CP + cp) * TP + tp``: a TP group is
consecutive ranks (one node's NVLink domain), CP next, then DP, and PP outermost, whose point-to-point
traffic is the smallest (Megatron's and torchtitan's order). FSDP shards over DP x CP together, the
flattened dimension ``"dp_cp"``: context-parallel ranks hold the same weights and see different tokens,
so their gradients are averaged like data-parallel ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainbench.config import Plan

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

MESH_DIMS = ("pp", "dp", "cp", "tp")
FSDP_DIM = "dp_cp"


@dataclass(frozen=True)
class ParallelMesh:
    """The job's mesh and its flattened FSDP dimension (torch wants the flattened mesh kept, not re-sliced)."""

    root: DeviceMesh
    dp_cp: DeviceMesh

    def __getitem__(self, name: str) -> DeviceMesh:
        return self.dp_cp if name == FSDP_DIM else self.root[name]

    def get_local_rank(self, name: str) -> int:
        """This rank's coordinate along ``name``."""
        return self[name].get_local_rank()


def mesh_shape(plan: Plan) -> tuple[int, int, int, int]:
    p = plan.parallel
    return (p.pp, plan.dp, p.cp, p.tp)


def build_mesh(plan: Plan, device_type: str) -> ParallelMesh:
    """The job's mesh; every rank calls this collectively after ``init_process_group``."""
    from torch.distributed.device_mesh import init_device_mesh

    root = init_device_mesh(device_type, mesh_shape(plan), mesh_dim_names=MESH_DIMS)
    return ParallelMesh(root=root, dp_cp=root["dp", "cp"]._flatten(FSDP_DIM))


def dim_size(mesh: ParallelMesh | None, name: str) -> int:
    return 1 if mesh is None else mesh[name].size()
