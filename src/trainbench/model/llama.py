"""Llama 3.1 in plain single-device PyTorch: the workload that parallelism is applied to from outside.

Module names follow torchtitan (``tok_embeddings``, ``layers.<i>.attention.wq``, ``feed_forward.w1``,
``norm``, ``output``) so tensor-parallel plans are tables keyed by these names. Nothing here reads
process groups or environment variables:

- tensor parallel shards ``wq/wk/wv`` and ``w1/w3`` column-wise and ``wo/w2`` row-wise; attention
  derives its local head counts from the sharded weights (``view(B, S, -1, D)``);
- pipeline parallel deletes entries of ``layers`` and sets ``tok_embeddings`` / ``norm`` /
  ``output`` to None; ``forward`` and ``init_weights`` tolerate that;
- context parallel shards the inputs and the ``rope_cache`` buffer along the sequence; attention
  calls SDPA with ``is_causal=True`` on head-expanded K/V, which torch's CP dispatch handles;
- ``torch.compile`` wraps each ``TransformerBlock``; the block takes the rope table as an argument.

Build on the meta device, materialize with ``to_empty``, then ``init_weights`` (``build_model``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainbench.config import ModelConfig
from trainbench.model.rope import apply_rope, rope_cache

INIT_STD = 0.02
EMBEDDING_INIT_STD = 1.0  # as torchtitan and Meta's reference; the first RMSNorm removes the scale


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in fp32 whatever the activation dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, S, KV, D) -> (B, S, KV*n_rep, D): each KV head serves n_rep consecutive query heads."""
    if n_rep == 1:
        return x
    bsz, seqlen, kv_heads, head_dim = x.shape
    return x[:, :, :, None, :].expand(bsz, seqlen, kv_heads, n_rep, head_dim).reshape(bsz, seqlen, -1, head_dim)


class Attention(nn.Module):
    """Grouped-query causal self-attention with rotary embedding, no biases."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.head_dim = cfg.head_dim
        self.wq = nn.Linear(cfg.hidden, cfg.heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.hidden, cfg.query_groups * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.hidden, cfg.query_groups * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.heads * self.head_dim, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        # Head counts come from the (possibly tensor-parallel-sharded) weights, not the config.
        q = self.wq(x).view(bsz, seqlen, -1, self.head_dim)  # (B, S, Hq, D)
        k = self.wk(x).view(bsz, seqlen, -1, self.head_dim)  # (B, S, Hkv, D)
        v = self.wv(x).view(bsz, seqlen, -1, self.head_dim)  # (B, S, Hkv, D)
        # Sliced here, where S is the whole sequence even when the residual stream outside the
        # attention is sequence-parallel (sharded along S over the tensor-parallel ranks).
        rope = rope[:seqlen]  # (S, 2D): positions 0..S-1
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        # Expand K/V to the query heads explicitly (not enable_gqa): context-parallel SDPA
        # dispatch and every SDPA backend then see plain multi-head attention.
        n_rep = q.shape[2] // k.shape[2]
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        # SDPA wants (B, H, S, D).
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        out = out.transpose(1, 2).reshape(bsz, seqlen, -1)  # (B, S, Hq*D)
        return self.wo(out)

    def init_weights(self, out_std: float) -> None:
        for linear in (self.wq, self.wk, self.wv):
            nn.init.normal_(linear.weight, mean=0.0, std=INIT_STD)
        nn.init.normal_(self.wo.weight, mean=0.0, std=out_std)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); w1 is the gate, w3 the up projection, w2 the down projection."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden, cfg.ffn, bias=False)
        self.w2 = nn.Linear(cfg.ffn, cfg.hidden, bias=False)
        self.w3 = nn.Linear(cfg.hidden, cfg.ffn, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))

    def init_weights(self, out_std: float) -> None:
        nn.init.normal_(self.w1.weight, mean=0.0, std=INIT_STD)
        nn.init.normal_(self.w3.weight, mean=0.0, std=INIT_STD)
        nn.init.normal_(self.w2.weight, mean=0.0, std=out_std)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: h = x + attn(norm(x)); out = h + ffn(norm(h))."""

    def __init__(self, layer_id: int, cfg: ModelConfig) -> None:
        super().__init__()
        # Kept on the block because pipeline stages drop layers but keep the original keys.
        self.layer_id = layer_id
        self.attention_norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), rope)
        return h + self.feed_forward(self.ffn_norm(h))

    def init_weights(self) -> None:
        # Depth-scaled init of the residual-branch outputs (torchtitan's depth_init).
        out_std = INIT_STD / math.sqrt(2 * (self.layer_id + 1))
        self.attention_norm.reset_parameters()
        self.ffn_norm.reset_parameters()
        self.attention.init_weights(out_std)
        self.feed_forward.init_weights(out_std)


class Llama(nn.Module):
    """Llama 3.1 decoder. ``forward(tokens)`` -> logits; no loss inside (see ``cross_entropy_loss``)."""

    tok_embeddings: nn.Embedding | None
    norm: RMSNorm | None
    output: nn.Linear | None
    rope_cache: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(i, cfg) for i in range(cfg.layers)})
        self.norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.output = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        # Non-persistent: derived from the config, never checkpointed; on the top-level module so
        # every pipeline stage keeps it and context parallelism can shard it with the inputs.
        self.register_buffer("rope_cache", rope_cache(cfg), persistent=False)  # (S, 2D) fp32

    def init_weights(self, buffer_device: torch.device | None = None) -> None:
        """Initialize every parameter from torch's RNG and recompute the rope table.

        Call after ``to_empty``; works on pipeline stages whose embedding / norm / output are None.
        """
        device = buffer_device if buffer_device is not None else self.rope_cache.device
        with torch.no_grad():
            self.rope_cache = rope_cache(self.cfg, device)
        if self.tok_embeddings is not None:
            nn.init.normal_(self.tok_embeddings.weight, mean=0.0, std=EMBEDDING_INIT_STD)
        for layer in self.layers.values():
            # Blocks may be wrapped from outside (torch.compile, activation checkpointing);
            # the wrappers forward attribute access, so call through them.
            layer.init_weights()  # type: ignore[operator]
        if self.norm is not None:
            self.norm.reset_parameters()
        if self.output is not None:
            nn.init.normal_(self.output.weight, mean=0.0, std=self.cfg.hidden**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, S) int64 ids, or (B, S, hidden) on later pipeline stages -> (B, S, vocab) logits,
        or (B, S, hidden) hidden states when ``output`` is None."""
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens  # (B, S, hidden)
        seqlen = h.shape[1]
        if seqlen > self.rope_cache.shape[0]:
            raise ValueError(f"sequence length {seqlen} exceeds the rope table's {self.rope_cache.shape[0]} positions")
        for layer in self.layers.values():
            h = layer(h, self.rope_cache)  # the whole table: attention takes its sequence's positions
        if self.norm is not None:
            h = self.norm(h)
        return self.output(h) if self.output is not None else h


def build_model(cfg: ModelConfig, device: torch.device | str) -> Llama:
    """Meta-device build, then ``to_empty(device)`` and ``init_weights``: no throwaway allocation."""
    with torch.device("meta"):
        model = Llama(cfg)
    model.to_empty(device=device)
    model.init_weights()
    return model
