"""The one typed config tree: model, parallel layout, training. Overridable as ``section.key=value``.

``Plan`` is the resolved, validated whole; everything downstream (run, submit, report)
takes a ``Plan`` and trusts it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    """Llama 3.1 shape. ``name`` is the preset it came from (``8b``, ``405b``, ...)."""

    name: str = "tiny"
    layers: int = 4
    hidden: int = 128
    ffn: int = 384
    heads: int = 8
    query_groups: int = 4  # key/value heads (grouped-query attention)
    seq_len: int = 256
    vocab: int = 512
    norm_eps: float = 1e-5
    rope_theta: float = 500_000.0
    # Llama 3.1 ("llama3") RoPE frequency scaling; rope_scaling=false gives plain RoPE.
    rope_scaling: bool = True
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_context: int = 8192

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass
class ParallelConfig:
    """The recipe's model-parallel layout; DP follows as GPUs / (TP * PP * CP)."""

    tp: int = 1
    pp: int = 1
    vp: int | None = None  # virtual (interleaved) stages per pipeline rank; None = no interleaving
    cp: int = 1
    sequence_parallel: bool = False


@dataclass
class TrainConfig:
    dtype: str = "bf16"  # bf16 | fp8
    gbs: int = 4  # global batch size, sequences per optimizer step
    mbs: int = 1  # micro-batch size, sequences per forward/backward
    steps: int = 50  # the recipe runs 50 steps
    # The recipe's optimizer: Adam(W) with cosine decay after a linear warm-up of 2000 steps,
    # so a 50-step benchmark stays inside the warm-up (its logs show lr 7.5e-6 at step 50).
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 2000
    decay_steps: int = 100_000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    seed: int = 1234
    # mock: uniform random tokens, the recipe's synthetic data. pattern: a learnable stream
    # (arithmetic progressions mod vocab) so that tests can see the loss fall.
    data: str = "mock"
    fp8_recipe: str = "tensorwise"  # tensorwise | rowwise (torchao float8 training)
    # FP8 on one rank, tensorwise: cast each weight to fp8 once per optimizer step (as the recipe's
    # FP8 parameters) instead of in every micro-batch's forward and backward; same fp8 values.
    fp8_weight_cache: bool = True
    compile: bool | None = None  # None = on with CUDA, off on CPU
    # bf16 autocast over fp32 master weights. None = on with CUDA, off on CPU, whose bf16 is
    # emulated (about 10x slower than fp32 here): CPU runs are smoke and equivalence tests.
    bf16_autocast: bool | None = None
    activation_checkpointing: bool = False


@dataclass
class RunConfig:
    """The override tree: what ``key=value`` may address."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class Plan:
    """A resolved, validated recipe cell."""

    model: ModelConfig
    parallel: ParallelConfig
    train: TrainConfig
    gpus: int
    gpu_type: str
    proxy: bool
    scale_note: str  # how layout, layers and GBS were chosen, in words
    flops_convention: str = "recipe"
    peak_tflops_override: float | None = None

    @property
    def dp(self) -> int:
        p = self.parallel
        return self.gpus // (p.tp * p.pp * p.cp)

    @property
    def ga(self) -> int:
        """Gradient-accumulation steps (micro-batches per DP replica per step)."""
        return self.train.gbs // (self.dp * self.train.mbs)

    @property
    def dtype(self) -> str:
        return self.train.dtype

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": dataclasses.asdict(self.model),
            "parallel": dataclasses.asdict(self.parallel),
            "train": dataclasses.asdict(self.train),
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "proxy": self.proxy,
            "scale_note": self.scale_note,
            "flops_convention": self.flops_convention,
            "peak_tflops_override": self.peak_tflops_override,
            "dp": self.dp,
            "ga": self.ga,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        """Inverse of ``to_dict`` (derived keys ignored): how a run directory's config is read back."""
        return cls(
            model=ModelConfig(**d["model"]),
            parallel=ParallelConfig(**d["parallel"]),
            train=TrainConfig(**d["train"]),
            gpus=d["gpus"],
            gpu_type=d["gpu_type"],
            proxy=d["proxy"],
            scale_note=d["scale_note"],
            flops_convention=d.get("flops_convention", "recipe"),
            peak_tflops_override=d.get("peak_tflops_override"),
        )
