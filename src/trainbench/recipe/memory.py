"""Memory per GPU of trainbench's own implementation, as an estimate with its assumptions.

Assumptions (bytes per parameter of the rank's shard, P = parameters held by the rank
after tensor- and pipeline-parallel splits; S = data-parallel shard count DP * CP, as
FSDP2 shards parameters, gradients and optimizer state over the DP x CP ranks):

- weights: the bf16 copy that compute uses, 2 B * P (gathered per block under FSDP), plus
  the fp32 masters: 4 B * P / S as FSDP's fp32 shards; on a single rank 2 B * P, the
  masters' low halves, the bf16 weights being their high halves (train/precision.py); FP8
  on a single rank (tensorwise) adds 1 B per block-linear weight element, the fp8 copies
  cast once per optimizer step (parallel/fp8_weights.py)
- gradients: fp32 main gradients, 4 B * P / S, plus the bf16 gradient of the rank's largest
  parameter (the embedding or output layer), alive until it is folded into its fp32 sum
- optimizer: Adam first and second moments in fp32, 8 B * P / S
- activations: saved tensors of one micro-batch per layer (bf16, fp8 for FP8 linears'
  inputs, flash-style attention with no seq^2 term), times the layers whose
  activations are alive at once (all of the rank's layers, times the micro-batches
  a 1F1B pipeline keeps in flight), plus the output layer's bf16 logits and their
  gradient
- overhead: a fixed allowance for the CUDA context, library workspaces and
  communication buffers
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from trainbench.config import ModelConfig, ParallelConfig

GIB = 2**30
OVERHEAD_GIB = 3.0


@dataclass(frozen=True)
class MemoryEstimate:
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    overhead_gib: float
    params_per_rank: int

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.gradients_gib + self.optimizer_gib + self.activations_gib + self.overhead_gib

    def as_dict(self) -> dict[str, float]:
        d: dict[str, float] = asdict(self)
        d["total_gib"] = self.total_gib
        return d


def params_per_layer(m: ModelConfig) -> int:
    kv = m.hidden * m.query_groups // m.heads  # width of K (and of V)
    attention = m.hidden * (m.hidden + 2 * kv) + m.hidden * m.hidden  # wqkv + wo
    mlp = 3 * m.hidden * m.ffn  # gate, up, down
    return attention + mlp + 2 * m.hidden  # + two RMSNorm weights


def total_params(m: ModelConfig) -> int:
    return m.layers * params_per_layer(m) + 2 * m.vocab * m.hidden + m.hidden


def params_per_rank(m: ModelConfig, p: ParallelConfig) -> int:
    """Parameters on the most loaded rank: the first/last pipeline stage, which holds the
    embedding or the output layer (both when PP = 1)."""
    layers_per_stage = m.layers // p.pp
    ends = 2 * m.vocab * m.hidden if p.pp == 1 else m.vocab * m.hidden
    return (layers_per_stage * params_per_layer(m) + ends) // p.tp


def activation_bytes_per_layer(m: ModelConfig, p: ParallelConfig, mbs: int, dtype: str = "bf16") -> float:
    """Saved-for-backward bytes of one transformer block for one micro-batch.

    Per token, with bf16 weights (so a bf16 residual stream): block input and mid-block
    residual (2 x 2h), norm outputs (2 x 2h), q, k, v (2(h + 2 h g/a)), attention output
    (2h), gate and up (2 x 2F) and the SwiGLU product (2F). FP8 saves the linears' inputs
    (the two norm outputs, the attention output, the SwiGLU product) as fp8, one byte each.
    All of it is split over TP (heads, FFN) or sequence parallel (the h-wide tensors); CP
    splits the sequence.
    """
    tokens = mbs * m.seq_len / p.cp
    h, f = m.hidden, m.ffn
    per_token = 12 * h + 4 * h * m.query_groups / m.heads + 6 * f
    if dtype == "fp8":
        per_token -= 3 * h + f
    return tokens * per_token / p.tp


def logits_bytes(m: ModelConfig, p: ParallelConfig, mbs: int) -> float:
    """bf16 logits kept for the loss's backward, and their bf16 gradient (the compiled loss
    never holds an fp32 copy of the tokens x vocab matrix)."""
    tokens = mbs * m.seq_len / p.cp
    return tokens * m.vocab / p.tp * (2 + 2)


def microbatches_in_flight(p: ParallelConfig, ga: int) -> float:
    """1F1B keeps up to PP micro-batches alive on the first stage; interleaving adds
    (PP - 1) / (PP * VP) of a stage's worth (Narayanan et al., 2021)."""
    if p.pp == 1:
        return 1.0
    inflight = float(min(ga, p.pp))
    if p.vp:
        inflight *= 1 + (p.pp - 1) / (p.pp * p.vp)
    return inflight


def largest_param_per_rank(m: ModelConfig, p: ParallelConfig) -> int:
    """Elements of the largest single parameter on the most loaded rank: the vocab x hidden
    embedding or output layer, or a hidden x FFN block weight if that were wider."""
    return max(m.vocab, m.ffn) * m.hidden // p.tp


def breakdown(
    *, whole: int, stored: int, activation_bytes: float, split_masters: bool, largest: int, fp8_cached: int = 0
) -> MemoryEstimate:
    """The estimate from parameter counts: ``whole`` parameters computed with on this rank
    (bf16 copies), ``stored`` of them held with fp32 masters, gradients and Adam state after
    sharding; ``split_masters``: the masters are bf16 high + 16-bit low halves (one rank);
    ``largest``: elements of the largest parameter, whose bf16 gradient is briefly alive;
    ``fp8_cached``: weight elements also held as fp8 copies (1 B each)."""
    master_bytes = 2 if split_masters else 4
    return MemoryEstimate(
        weights_gib=(master_bytes * stored + 2 * whole + fp8_cached) / GIB,
        gradients_gib=(4 * stored + 2 * largest) / GIB,
        optimizer_gib=8 * stored / GIB,
        activations_gib=activation_bytes / GIB,
        overhead_gib=OVERHEAD_GIB,
        params_per_rank=whole,
    )


def splits_masters(p: ParallelConfig, *, dp: int) -> bool:
    """A single rank keeps its fp32 masters as bf16 weight + int16 low half (train/precision.py)."""
    return dp * p.cp * p.tp * p.pp == 1


def caches_fp8_weights(p: ParallelConfig, *, dp: int, dtype: str, fp8_recipe: str, enabled: bool = True) -> bool:
    """FP8 on one rank with tensorwise scaling keeps fp8 copies of the block weights
    (train.fp8_weight_cache; parallel/fp8_weights.py)."""
    return enabled and dtype == "fp8" and fp8_recipe == "tensorwise" and splits_masters(p, dp=dp)


def block_linear_params(m: ModelConfig, p: ParallelConfig) -> int:
    """Elements of the transformer blocks' linear weights on the most loaded rank."""
    return (m.layers // p.pp) * (params_per_layer(m) - 2 * m.hidden) // p.tp


def master_weights_note(p: ParallelConfig, *, dp: int) -> str:
    """How the fp32 master weights are held, in words (plan shows it beside the memory)."""
    if splits_masters(p, dp=dp):
        return "bf16 weight + int16 low half (exact fp32)"
    if dp * p.cp == 1:
        return "fp32 weights, bf16 autocast"
    return f"fp32 shards over DP x CP = {dp * p.cp}"


def estimate_memory(
    m: ModelConfig,
    p: ParallelConfig,
    *,
    dp: int,
    mbs: int,
    ga: int,
    dtype: str = "bf16",
    fp8_recipe: str = "tensorwise",
    fp8_weight_cache: bool = True,
) -> MemoryEstimate:
    n = params_per_rank(m, p)
    layers_per_stage = m.layers // p.pp
    act = activation_bytes_per_layer(m, p, mbs, dtype) * layers_per_stage * microbatches_in_flight(p, ga)
    act += logits_bytes(m, p, mbs)
    return breakdown(
        whole=n,
        stored=n // (dp * p.cp),
        activation_bytes=act,
        split_masters=splits_masters(p, dp=dp),
        largest=largest_param_per_rank(m, p),
        fp8_cached=block_linear_params(m, p)
        if caches_fp8_weights(p, dp=dp, dtype=dtype, fp8_recipe=fp8_recipe, enabled=fp8_weight_cache)
        else 0,
    )
