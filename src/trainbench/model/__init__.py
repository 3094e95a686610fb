"""Llama 3.1 in plain PyTorch: no torch.distributed, no environment variables."""

from trainbench.model.llama import Attention, FeedForward, Llama, RMSNorm, TransformerBlock, build_model, repeat_kv
from trainbench.model.loss import cross_entropy_loss
from trainbench.model.rope import apply_rope, rope_cache, rope_inv_freq

__all__ = [
    "Attention",
    "FeedForward",
    "Llama",
    "RMSNorm",
    "TransformerBlock",
    "apply_rope",
    "build_model",
    "cross_entropy_loss",
    "repeat_kv",
    "rope_cache",
    "rope_inv_freq",
]
