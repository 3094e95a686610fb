"""Rotary position embedding, real-valued, with Llama 3.1 ("llama3") frequency scaling.

Convention: the rotate-half layout (GPT-NeoX / Hugging Face), so a head vector ``x`` of size D
pairs element ``i`` with ``i + D/2``. The cos/sin tables are plain fp32 tensors (no complex
dtype) so DTensor, context parallelism (which shards them along the sequence) and
``torch.compile`` treat them like any other buffer.
"""

from __future__ import annotations

import math

import torch

from trainbench.config import ModelConfig


def rope_inv_freq(cfg: ModelConfig, device: torch.device | None = None) -> torch.Tensor:
    """Inverse frequencies, shape (D/2,), fp32; Llama 3.1 scaling when ``cfg.rope_scaling``.

    The scaling matches Hugging Face's ``_compute_llama3_parameters``: wavelengths shorter than
    ``original_context / high_freq_factor`` are kept, longer than ``original_context /
    low_freq_factor`` are divided by ``factor``, and the band between is interpolated smoothly.
    """
    dim = cfg.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device=device).to(torch.float32) / dim
    inv_freq = 1.0 / (cfg.rope_theta**exponents)  # (D/2,)
    if not cfg.rope_scaling:
        return inv_freq

    factor, low, high = cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    old_context = cfg.rope_original_context
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen = old_context / low  # longer than this: fully scaled
    high_freq_wavelen = old_context / high  # shorter than this: untouched
    # smooth = 0 at the low-frequency edge (fully scaled), 1 at the high-frequency edge (untouched)
    smooth = (old_context / wavelen - low) / (high - low)
    interpolated = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, interpolated, scaled)


def rope_cache(cfg: ModelConfig, device: torch.device | None = None) -> torch.Tensor:
    """The cos/sin table for positions 0..seq_len-1: shape (S, 2*D), fp32, ``[cos | sin]``.

    One tensor rather than two so that context parallelism has a single buffer to shard along
    dim 0; each half repeats the D/2 angles twice to match the rotate-half layout.
    """
    inv_freq = rope_inv_freq(cfg, device)  # (D/2,)
    positions = torch.arange(cfg.seq_len, dtype=torch.float32, device=device)  # (S,)
    angles = torch.outer(positions, inv_freq)  # (S, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (S, D)
    return torch.cat((angles.cos(), angles.sin()), dim=-1)  # (S, 2D)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, S, H, D) by the table ``cache`` (S, 2D); computed in fp32, returned in x's dtype."""
    cos, sin = cache.float().chunk(2, dim=-1)  # (S, D) each
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # (1, S, 1, D): broadcast over batch and heads
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).type_as(x)
