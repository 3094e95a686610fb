"""Tensor parallel (Megatron-style, with sequence parallel) as data: module name -> style name.

The tables say *what* each module is; ``style`` turns a name into torch's ``ParallelStyle`` for the
layout (sequence parallel or not) and the dtype (torchao's float8 styles for fp8, which all-gather
weights and activations in float8). bf16 and fp8 share the tables.

With sequence parallel the residual stream between blocks is sharded along the sequence
(``Shard(1)``): norms run on their sequence shard, each block's input is all-gathered once
(``attention_input``, ``ffn_input``), and the row-wise output projections reduce-scatter back to sequence shards.
Without it the residual stream is replicated and the norms compute on it whole on every TP rank, their
weights replicated DTensors (``ReplicateParallel``): every parameter of a TP model is then a DTensor,
which the optimizer's multi-tensor kernels and the gradient clipping need.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

# Inside every TransformerBlock (names relative to the block).
BLOCK_PLAN: dict[str, str] = {
    "attention_norm": "norm",
    "attention": "attention_input",
    "attention.wq": "colwise",
    "attention.wk": "colwise",
    "attention.wv": "colwise",
    "attention.wo": "rowwise",
    "ffn_norm": "norm",
    "feed_forward": "ffn_input",
    "feed_forward.w1": "colwise",
    "feed_forward.w3": "colwise",
    "feed_forward.w2": "rowwise",
}
# Around the blocks (names relative to the model; a pipeline stage holds only some of them).
MODEL_PLAN: dict[str, str] = {
    "tok_embeddings": "embedding",
    "norm": "norm",
    "output": "output",
}
STYLE_NAMES = ("colwise", "rowwise", "norm", "attention_input", "ffn_input", "embedding", "output")


class ReplicateParallel(ParallelStyle):
    """A module computed whole on every TP rank: parameters become replicated DTensors (from the local
    values, no communication), the input is taken as replicated, the output is given back plain."""

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def replicate_params(name: str, mod: nn.Module, mesh: DeviceMesh) -> None:
            for p_name, param in list(mod.named_parameters(recurse=False)):
                local = DTensor.from_local(param, mesh, [Replicate()], run_check=False)
                mod.register_parameter(p_name, nn.Parameter(local))

        def as_replicated(mod: nn.Module, inputs: tuple[Any, ...], mesh: DeviceMesh) -> tuple[Any, ...]:
            return tuple(
                DTensor.from_local(x, mesh, [Replicate()], run_check=False) if isinstance(x, torch.Tensor) else x
                for x in inputs
            )

        def as_local(mod: nn.Module, output: torch.Tensor, mesh: DeviceMesh) -> torch.Tensor:
            return output.to_local() if isinstance(output, DTensor) else output

        return distribute_module(module, device_mesh, replicate_params, as_replicated, as_local)  # type: ignore[arg-type]


def style(name: str, *, sequence_parallel: bool, float8: bool) -> ParallelStyle | None:
    """torch's style for a style name; None where the layout leaves the module alone."""
    residual = Shard(1) if sequence_parallel else Replicate()  # layout of the stream between blocks
    colwise: Any = ColwiseParallel
    rowwise: Any = RowwiseParallel
    prepare: Any = PrepareModuleInput
    if float8:
        from torchao.float8.float8_tensor_parallel import (
            Float8ColwiseParallel,
            Float8RowwiseParallel,
            PrepareFloat8ModuleInput,
        )

        colwise, rowwise, prepare = Float8ColwiseParallel, Float8RowwiseParallel, PrepareFloat8ModuleInput
    if name == "colwise":
        return colwise()
    if name == "rowwise":
        return rowwise(output_layouts=residual)
    if name == "norm":
        return SequenceParallel() if sequence_parallel else ReplicateParallel()
    if name in ("attention_input", "ffn_input"):  # gather x's sequence shards once, for q/k/v or w1/w3
        if not sequence_parallel:
            return None
        extra = (None,) if name == "attention_input" else ()  # attention(x, rope): rope is no DTensor
        return prepare(input_layouts=(Shard(1), *extra), desired_input_layouts=(Replicate(), *extra))
    # The embedding and output layers stay out of float8, as the recipe keeps them.
    if name == "embedding":
        return RowwiseParallel(input_layouts=Replicate(), output_layouts=residual)
    if name == "output":  # whole logits on every TP rank: the loss needs no parallel variant
        return ColwiseParallel(input_layouts=residual, output_layouts=Replicate(), use_local_output=True)
    raise ValueError(f"unknown tensor-parallel style {name!r}; known: {', '.join(STYLE_NAMES)}")


def resolve_plan(table: dict[str, str], *, sequence_parallel: bool, float8: bool) -> dict[str, ParallelStyle]:
    out = {}
    for module, name in table.items():
        s = style(name, sequence_parallel=sequence_parallel, float8=float8)
        if s is not None:
            out[module] = s
    return out


def apply_tensor_parallel(model: nn.Module, tp_mesh: DeviceMesh, *, sequence_parallel: bool, float8: bool) -> None:
    """Shard ``model`` (a Llama or a pipeline stage of one) over ``tp_mesh`` in place."""
    top = {k: v for k, v in MODEL_PLAN.items() if getattr(model, k, None) is not None}
    parallelize_module(model, tp_mesh, resolve_plan(top, sequence_parallel=sequence_parallel, float8=float8))
    block_plan = resolve_plan(BLOCK_PLAN, sequence_parallel=sequence_parallel, float8=float8)
    for block in cast(nn.ModuleDict, model.layers).values():
        parallelize_module(block, tp_mesh, block_plan)


def uses_float8_styles(dtype: str, fp8_recipe: str) -> bool:
    """Float8 all-gathers need tensorwise scales; rowwise float8 linears take the plain styles."""
    return dtype == "fp8" and fp8_recipe == "tensorwise"
