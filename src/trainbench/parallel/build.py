"""One rank's model: split for its pipeline stages, parallelized, materialised, initialised."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainbench.config import Plan
from trainbench.model import Llama
from trainbench.parallel.apply import parallelize
from trainbench.parallel.init import init_like_single_process
from trainbench.parallel.mesh import ParallelMesh
from trainbench.parallel.pipeline import split_model


def build_chunks(
    plan: Plan, device: torch.device, mesh: ParallelMesh | None, stages: Sequence[int] = (0,)
) -> list[Llama]:
    """The model chunks of ``stages`` (one chunk, the whole model, without pipeline parallel), with the
    weights the single process would have (see ``init``). Built on the meta device: nothing whole is
    ever allocated."""
    with torch.device("meta"):
        whole = Llama(plan.model)
    chunks = [split_model(whole, s, plan) for s in stages]
    for chunk in chunks:
        parallelize(chunk, plan, device, mesh)
        chunk.to_empty(device=device)
    init_like_single_process(chunks, plan.model, device, plan.train.seed)
    return chunks
