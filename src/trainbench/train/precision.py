"""bf16 mixed precision as the recipe runs it: bf16 model weights, fp32 master weights, fp32 gradients.

On one rank (no FSDP) the fp32 master of each weight is kept in two 16-bit halves: the bf16
weight the matmuls read is the master's high half (rounded to nearest), and an int16 tensor
holds the low 16 bits of the master's fp32 pattern. Together they are the fp32 master, bit
for bit (``join_fp32``), so the optimizer updates exactly the fp32 masters it would update
with a separate copy, while the weights and masters take 4 bytes per parameter instead of 6.
That is the memory plan that lets a 405B-wide layer with its 128256 x 16384 embedding and
output layer train on one 141 GB GPU without changing what a step computes.

Bytes per parameter: 2 (bf16 weight = master's high half) + 2 (master's low half) + 4 (fp32
main gradient) + 8 (Adam moments) = 16. A hook adds each micro-batch's bf16 gradient into
the fp32 main gradient as soon as autograd produces it and frees it, so gradients
accumulate in fp32 over GA micro-batches. ``SplitMasterAdamW`` is torch's AdamW (decoupled
weight decay) applied to the reassembled fp32 masters, one fused pass per tensor that reads
and writes the halves, the gradient and both moments.

FSDP2's own mixed-precision policy does the same job for sharded parameters (fp32 shards,
bf16 gathered for compute), so this path is for one rank holding whole parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from trainbench.config import TrainConfig
from trainbench.parallel.apply import compile_in_place, flat_alias

_LOW_MASK = 0xFFFF
_HALF = 0x8000  # low halves at or above this rounded the high half up (to nearest, ties away)
_SPLIT_CHUNK = 1 << 26  # elements split at a time when a weight is first halved (bounds temporaries)


def split_fp32(master: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 -> (bf16 high half rounded to nearest, ties away from zero; int16 low 16 bits).

    int32 arithmetic only, with no overflow, so that eager and compiled code agree bit for bit."""
    bits = master.view(torch.int32)
    low = bits & _LOW_MASK  # 0..65535
    high = (bits >> 16) + (low >= _HALF).to(torch.int32)  # +1 on the pattern: one bf16 ulp up in magnitude
    return _as16(high).view(torch.bfloat16), _as16(low)


def join_fp32(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Inverse of ``split_fp32``: the fp32 master from its bf16 high and int16 low halves."""
    lo = low.to(torch.int32) & _LOW_MASK
    h = high.view(torch.int16).to(torch.int32) - (lo >= _HALF).to(torch.int32)  # undo the carry: -32768..32767
    return (h * 65536 + lo).view(torch.float32)  # within int32's range for every h and lo


def _as16(v: torch.Tensor) -> torch.Tensor:
    """The low 16 bits of int32 ``v`` as int16 (sign-extended first, so the conversion is exact)."""
    return (((v & _LOW_MASK) ^ _HALF) - _HALF).to(torch.int16)


def _halve(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``split_fp32`` of a whole weight, a chunk at a time (a 128256 x 16384 embedding would
    otherwise need tens of GB of integer temporaries)."""
    master = weight.detach().float().reshape(-1)
    high = torch.empty(master.shape, dtype=torch.bfloat16, device=master.device)
    low = torch.empty(master.shape, dtype=torch.int16, device=master.device)
    for start in range(0, master.numel(), _SPLIT_CHUNK):
        part = slice(start, start + _SPLIT_CHUNK)
        high[part], low[part] = split_fp32(master[part])
    return high.view(weight.shape), low.view(weight.shape)


TUNE_NUMEL = 1 << 25  # 32 Mi elements: ~0.9 GB through the update, bandwidth-bound as the real calls are


def _accumulate(main_grad: torch.Tensor, grad: torch.Tensor) -> None:
    main_grad.add_(grad)


def _adamw_update(
    high: torch.Tensor,
    low: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step_scalars: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """torch.optim.AdamW's single-tensor update (decoupled weight decay) on the joined master.

    ``step_scalars`` (3,) fp32 on the weights' device: 1 - lr * weight_decay, lr / bias_correction1,
    sqrt(bias_correction2). A tensor, not floats, because they change every step and a compiled
    function specialises on float arguments (torch 2.11 recompiled it at every step)."""
    decay, step_size, bias_correction2_sqrt = step_scalars[0], step_scalars[1], step_scalars[2]
    master = join_fp32(high, low) * decay
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + eps
    master = master - step_size * exp_avg / denom
    new_high, new_low = split_fp32(master)
    high.copy_(new_high)
    low.copy_(new_low)


class SplitMasterAdamW:
    """AdamW over fp32 masters held as (bf16 weight, int16 low half) pairs, fp32 main gradients.

    ``param_groups[0]["lr"]`` is the learning rate (``set_lr`` writes it); ``grads`` are the
    fp32 main gradients that clipping scales; ``step()`` updates masters and bf16 weights at once
    and starts the next step's gradient sums at zero.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], t: TrainConfig, *, compile_kernels: bool = False):
        self.params = list(params)
        self.t = t
        self.low: list[torch.Tensor] = []
        with torch.no_grad():
            for p in self.params:
                high, low = _halve(p)
                p.data = high  # frees the fp32 weight: its high half is the bf16 weight from here on
                self.low.append(low)
        self.grads = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
        self.exp_avg = [torch.zeros_like(g) for g in self.grads]
        self.exp_avg_sq = [torch.zeros_like(g) for g in self.grads]
        self.param_groups: list[dict[str, Any]] = [{"lr": t.lr}]
        self.steps_taken = 0
        # Compiled: each update is one fused read-modify-write pass (the joining and splitting of the
        # halves happen in registers), and fp32 += bf16 runs vectorised (eager's mixed-dtype add ran at
        # 2.4 TB/s on an H200). ``compile_in_place``: one graph for every tensor shape.
        wrap: Callable[[Callable[..., None]], Callable[..., None]] = (
            (lambda f: compile_in_place(f, autotune=True)) if compile_kernels else (lambda f: f)
        )
        self._add, self._update = wrap(_accumulate), wrap(_adamw_update)
        if compile_kernels and self.params and self.params[0].is_cuda:
            self._tune_on_scratch(self.params[0].device)
        for p, grad in zip(self.params, self.grads, strict=True):
            p.register_post_accumulate_grad_hook(self._accumulator(grad))

    def _tune_on_scratch(self, device: torch.device) -> None:
        """Compile both kernels now and let inductor autotune them on scratch tensors of
        ``TUNE_NUMEL`` elements: it keeps the configuration it picks for every later call, and the
        first real calls (the embedding's 25 GB of optimizer state) would be saved to host memory
        and restored for each timed launch (``compile_in_place``)."""
        t = self.t

        def scratch(dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(TUNE_NUMEL, dtype=dtype, device=device)

        # no_grad, as the real calls run (the step, and the hooks inside backward): dynamo guards on
        # the grad mode, and a graph compiled with it on would be compiled and tuned again.
        with torch.no_grad():
            grad = scratch(torch.float32)
            self._add(grad, scratch(torch.bfloat16))
            ones = torch.ones(3, dtype=torch.float32, device=device)  # step scalars that keep the update finite
            self._update(scratch(torch.bfloat16), scratch(torch.int16), grad, scratch(torch.float32),
                         scratch(torch.float32), ones, t.beta1, t.beta2, t.adam_eps)  # fmt: skip

    def _accumulator(self, main_grad: torch.Tensor) -> Callable[[torch.Tensor], None]:
        def hook(p: torch.Tensor) -> None:
            assert p.grad is not None
            self._add(flat_alias(main_grad), flat_alias(p.grad))  # bf16 -> fp32 accumulate, one read-modify-write
            p.grad = None

        return hook

    def clip_(self, max_norm: float) -> torch.Tensor:
        """Scale the main gradients so their global 2-norm is at most ``max_norm`` (as
        ``torch.nn.utils.clip_grad_norm_``); return the norm before clipping."""
        total = torch.nn.utils.get_total_norm(self.grads, 2.0, foreach=True)
        torch._foreach_mul_(self.grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return total

    def masters(self) -> list[torch.Tensor]:
        """The fp32 master weights, reassembled (a copy: for tests and inspection)."""
        return [join_fp32(p.detach(), low) for p, low in zip(self.params, self.low, strict=True)]

    @torch.no_grad()
    def step(self) -> None:
        t, lr = self.t, self.param_groups[0]["lr"]
        self.steps_taken += 1
        scalars = [
            1 - lr * t.weight_decay,
            lr / (1 - t.beta1**self.steps_taken),
            math.sqrt(1 - t.beta2**self.steps_taken),
        ]
        # Computed in float64 here, rounded once to fp32 as torch's kernels round Python scalars.
        step_scalars = torch.tensor(scalars, dtype=torch.float32)
        if self.grads and self.grads[0].is_cuda:  # pinned, so the copy does not wait for the queued backward
            step_scalars = step_scalars.pin_memory().to(self.grads[0].device, non_blocking=True)
        for p, low, g, m, v in zip(self.params, self.low, self.grads, self.exp_avg, self.exp_avg_sq, strict=True):
            self._update(*map(flat_alias, (p.data, low, g, m, v)), step_scalars, t.beta1, t.beta2, t.adam_eps)
        torch._foreach_zero_(self.grads)
