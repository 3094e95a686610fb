"""``parallelize(model, plan, device, mesh)``: every transformation of the plain model, in one fixed order.

1. float8 conversion of the transformer blocks' linears (torchao; the output layer stays bf16)
2. tensor parallel (with sequence parallel) over the mesh's ``tp`` dimension, when TP > 1
3. activation checkpointing, when chosen
4. per-block ``torch.compile``
5. data-parallel sharding (FSDP2) over the mesh's ``dp`` x ``cp`` ranks, when there are several

The model is built on the meta device before this runs; weights are materialised and
initialised afterwards, so nothing here allocates a whole model. ``model`` may be a pipeline
stage's chunk (see ``pipeline.split_model``). Without a mesh only steps 1, 3 and 4 apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainbench.config import Plan
from trainbench.parallel.mesh import FSDP_DIM, ParallelMesh, dim_size


def compile_enabled(plan: Plan, device: torch.device) -> bool:
    return plan.train.compile if plan.train.compile is not None else device.type == "cuda"


def bf16_enabled(plan: Plan, device: torch.device) -> bool:
    """bf16 compute over fp32 master weights; None means on with CUDA, off on CPU (fp32 there)."""
    return plan.train.bf16_autocast if plan.train.bf16_autocast is not None else device.type == "cuda"


def parallelize(model: nn.Module, plan: Plan, device: torch.device, mesh: ParallelMesh | None = None) -> nn.Module:
    if plan.train.dtype == "fp8":
        convert_to_float8(model, plan.train.fp8_recipe)
    if dim_size(mesh, "tp") > 1:
        from trainbench.parallel.tensor import apply_tensor_parallel, uses_float8_styles

        assert mesh is not None
        apply_tensor_parallel(
            model,
            mesh["tp"],
            sequence_parallel=plan.parallel.sequence_parallel,
            float8=uses_float8_styles(plan.train.dtype, plan.train.fp8_recipe),
        )
    if plan.train.activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile_enabled(plan, device):
        compile_blocks(model, inductor_options(plan.train.dtype))
    if dim_size(mesh, FSDP_DIM) > 1:
        from trainbench.parallel.fsdp import apply_fsdp

        assert mesh is not None
        apply_fsdp(model, mesh[FSDP_DIM], bf16=bf16_enabled(plan, device), reshard_after_forward=plan.parallel.pp == 1)
    return model


def convert_to_float8(model: nn.Module, recipe: str) -> None:
    """Swap the blocks' nn.Linear for torchao's Float8Linear (dynamic scaling, E4M3 forward,
    E5M2 gradients). The output layer keeps bf16, as the recipe keeps it out of FP8."""
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as exc:  # a user error: fp8 asked for without its library
        from trainbench.errors import ConfigError

        raise ConfigError("dtype fp8 needs torchao (pip install 'trainbench[fp8]' or torchao>=0.17)") from exc
    config = Float8LinearConfig.from_recipe_name(recipe)
    convert_to_float8_training(model, config=config, module_filter_fn=lambda _mod, fqn: fqn.startswith("layers."))


def apply_activation_checkpointing(model: nn.Module) -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for name, block in list(model.layers.named_children()):  # type: ignore[union-attr]
        model.layers.register_module(name, checkpoint_wrapper(block, preserve_rng_state=False))  # type: ignore[union-attr]


def inductor_options(dtype: str) -> dict[str, bool]:
    """Inductor settings for the blocks. FP8: no mix-order reductions. With them, inductor fuses the
    RMSNorm backward (a row reduction) with its weight gradient (a column reduction) and, into the
    same row-by-row loop, the fp8 casts of the recomputed norm output in the transposed layout that
    the weight-gradient GEMMs read: one-byte stores 8192 apart, 1.93 ms per 8B block where the
    bytes take ~0.1 ms (benchmarks/block_bench.py on an H200, BENCHMARKS.md)."""
    import torch._inductor.config as inductor_config

    if dtype == "fp8" and hasattr(inductor_config.triton, "mix_order_reduction"):
        return {"triton.mix_order_reduction": False}
    return {}


def flat_alias(t: torch.Tensor) -> torch.Tensor:
    """``t`` (contiguous) as a 1-D alias of its memory that is neither a view (dynamo guards a view
    on its base's shape: flat views of 1-D and 2-D tensors compiled twice) nor a Parameter (whose
    shape dynamo keeps static): what ``compile_in_place`` functions are given."""
    return t.view(-1).detach()


def compile_in_place(fn: Callable[..., None], *, autotune: bool = False) -> Callable[..., None]:
    """``torch.compile`` for the in-place helpers that run over whole parameters (the optimizer
    update, the fp32 gradient accumulation, the fp8 weight cast): one graph for every shape (callers
    pass flat tensors, and plain tensors rather than Parameters, whose shapes dynamo keeps static).

    ``autotune=False``: one launch configuration per pointwise kernel. With autotuning, inductor
    benchmarks its candidate configurations at the first call, and to time a kernel that writes its
    arguments it saves them first and restores them before every timed launch; when the allocator's
    peak leaves no room for a copy on the GPU (step 1 of a plan sized to fill the GPU), it saves them
    in pinned host memory. For the optimizer state of a 405B-wide embedding (39 GiB saved) and its
    gradient sum (16 GiB) that took 37 s of a 57 s first step on an H200 (BENCHMARKS.md). So either
    give up autotuning, or make the first call on scratch tensors (``SplitMasterAdamW`` does)."""
    options: dict[str, str | int | bool | Callable[..., Any]] = {} if autotune else {"triton.autotune_pointwise": False}
    return torch.compile(fn, dynamic=True, fullgraph=True, options=options or None)


def compile_blocks(model: nn.Module, options: dict[str, bool] | None = None) -> None:
    """Compile each transformer block on its own: one graph reused by every layer, so
    compile time does not grow with depth, and pipeline stages can hold any subset."""
    for name, block in list(model.layers.named_children()):  # type: ignore[union-attr]
        compiled = torch.compile(block, fullgraph=True, options=options or None)  # type: ignore[arg-type]
        model.layers.register_module(name, compiled)  # type: ignore[union-attr,arg-type]
