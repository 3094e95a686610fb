"""FP8 weights cast once per optimizer step, as the recipe's "FP8 parameters" are.

torchao's ``Float8Linear`` (dynamic tensorwise scaling) casts its bf16 weight to fp8 in every
forward and again in every backward: per micro-batch and parameter, two amax passes (2 B read
each) and two casts (2 B read, 1 B written each). The weights only change at the optimizer step,
so with gradient accumulation the same fp8 tensor is computed 2 x GA times per step. The recipe
(Transformer Engine with FP8 parameters) keeps the weight in fp8 between optimizer steps; here
the cast is done once after each step into a per-linear fp8 buffer (1 B per parameter) and its
scale, and both GEMMs of every micro-batch read it. The cast is torchao's own, so each micro-batch
sees bit for bit the fp8 weight and scale that torchao's per-micro-batch cast would give.

Scope: one rank holding whole parameters (the split-master path of ``train/precision.py``) and
torchao's tensorwise recipe, whose weight scale is one number for both GEMMs. Sharded (FSDP) or
tensor-parallel weights keep torchao's own casting (FSDP has its fp8 all-gather for that).

    cache = Float8WeightCache(model)   # after the weights hold their bf16 values
    cache.refresh()                    # after every change of the weights (init, optimizer step)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainbench.parallel.apply import compile_in_place, flat_alias

WEIGHT_FP8_DTYPE = torch.float8_e4m3fn


def _float8_linear_class() -> type[nn.Module] | None:
    try:
        from torchao.float8.float8_linear import Float8Linear
    except ImportError:
        return None
    return Float8Linear


def cacheable(module: nn.Module) -> bool:
    """A torchao Float8Linear whose weight uses dynamic tensorwise e4m3 scaling in both GEMMs,
    held whole (no DTensor, no FSDP fp8 all-gather)."""
    float8_linear = _float8_linear_class()
    if float8_linear is None or not isinstance(module, float8_linear):
        return False
    from torchao.float8.config import ScalingGranularity, ScalingType

    c: Any = module.config
    casts = (c.cast_config_weight, c.cast_config_weight_for_grad_input)
    return (
        not c.enable_fsdp_float8_all_gather
        and not c.emulate
        and all(x.scaling_type is ScalingType.DYNAMIC for x in casts)
        and all(x.scaling_granularity is ScalingGranularity.TENSORWISE for x in casts)
        and all(x.target_dtype in (None, WEIGHT_FP8_DTYPE) for x in casts)
        and type(module.weight) is nn.Parameter  # type: ignore[comparison-overlap]
    )


def _cast_weight(weight: torch.Tensor, data_out: torch.Tensor, scale_out: torch.Tensor, round_pow2: bool) -> None:
    """torchao's dynamic tensorwise cast of ``weight`` (out, in), written into the cache buffers."""
    from torchao.float8.float8_utils import tensor_to_scale, to_fp8_saturated

    scale = tensor_to_scale(weight, WEIGHT_FP8_DTYPE, round_scales_to_power_of_2=round_pow2)  # () fp32
    data_out.copy_(to_fp8_saturated(weight.to(torch.float32) * scale, WEIGHT_FP8_DTYPE))
    scale_out.copy_(scale)


def _cached_weight_function() -> type[torch.autograd.Function]:
    from torchao.float8.float8_training_tensor import Float8TrainingTensor, GemmInputRole

    class CachedFloat8Weight(torch.autograd.Function):
        """weight.t() (in, out) -> the cached fp8 weight as torchao's Float8TrainingTensor, the
        same layout torchao's cast of ``weight.t()`` gives; the gradient passes through, as
        torchao's cast passes it."""

        @staticmethod
        def forward(ctx, weight_t, data, scale, linear_mm_config):  # type: ignore[no-untyped-def,override]
            return Float8TrainingTensor(
                data.t(), scale, weight_t.dtype, linear_mm_config=linear_mm_config,
                gemm_input_role=GemmInputRole.WEIGHT, axiswise_dim=None,
            )  # fmt: skip

        @staticmethod
        def backward(ctx, grad):  # type: ignore[no-untyped-def,override]
            return grad, None, None, None

    return CachedFloat8Weight


class _Float8LinearWithCachedWeight:
    """Mixed into a Float8Linear's class: forward reads ``weight_fp8`` / ``weight_scale``."""

    _cached_weight: type[torch.autograd.Function]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        from torchao.float8.float8_linear import matmul_with_hp_or_float8_args

        if torch.is_autocast_enabled(input.device.type):  # as Float8Linear: compute in the autocast dtype
            input = input.to(torch.get_autocast_dtype(input.device.type))
        weight_t = self._cached_weight.apply(
            self.weight.t(),  # type: ignore[attr-defined]
            self.weight_fp8,  # type: ignore[attr-defined]
            self.weight_scale,  # type: ignore[attr-defined]
            self.linear_mm_config,  # type: ignore[attr-defined]
        )
        return matmul_with_hp_or_float8_args.apply(input, weight_t, self.linear_mm_config, self.config)  # type: ignore[attr-defined,no-any-return]


_CACHED_CLASSES: dict[type, type] = {}


def _with_cached_weight(cls: type) -> type:
    if cls not in _CACHED_CLASSES:
        _CACHED_CLASSES[cls] = type(
            f"{cls.__name__}WithCachedWeight",
            (_Float8LinearWithCachedWeight, cls),
            {"_cached_weight": _cached_weight_function()},
        )
    return _CACHED_CLASSES[cls]


class Float8WeightCache:
    """The fp8 copies of a model's cacheable Float8Linear weights; ``refresh`` recomputes them.

    Construction allocates the buffers (1 B per weight element, on the weight's device) and
    switches those modules to read them; until the first ``refresh`` they hold garbage, so call
    it before the first forward and after every optimizer step.
    """

    def __init__(self, model: nn.Module, *, compile_kernels: bool = False):
        self.modules: list[Any] = [m for m in model.modules() if cacheable(m)]  # Float8Linear
        for m in self.modules:
            w = m.weight
            m.register_buffer(
                "weight_fp8", torch.empty(w.shape, dtype=WEIGHT_FP8_DTYPE, device=w.device), persistent=False
            )
            m.register_buffer("weight_scale", torch.empty((), dtype=torch.float32, device=w.device), persistent=False)
            m.__class__ = _with_cached_weight(type(m))
        # Compiled: one pass for the amax and one for the cast per weight, no fp32 temporaries; one
        # graph for every weight shape (``refresh`` passes flat plain tensors: dynamo keeps a
        # Parameter's shape static, and compiled the cast once per shape, 4 times for a block).
        self._cast: Callable[..., None] = compile_in_place(_cast_weight) if compile_kernels else _cast_weight

    @property
    def nbytes(self) -> int:
        return sum(int(m.weight_fp8.numel()) for m in self.modules)

    @torch.no_grad()
    def refresh(self) -> None:
        for m in self.modules:
            # flat: the amax is tensor-wide and the cast elementwise, so the layout does not matter
            # to the result, and one graph serves square and oblong weights alike (dynamo gives equal
            # sizes one symbol: a square first weight compiled the cast again for the next, oblong one)
            self._cast(
                flat_alias(m.weight), flat_alias(m.weight_fp8), m.weight_scale, m.config.round_scales_to_power_of_2
            )
