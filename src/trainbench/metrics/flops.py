"""Model FLOPs per sample, the recipe's convention in one place.

The recipe (README "Notes") counts, per sample of ``seq_len`` tokens::

    model flops = seq * (attention + mlp + embedding)
    attention   = 12 * L * h^2 * (1 + g/a + seq/h)
    mlp         = 18 * L * F * h
    embedding   = 6 * V * h

with L layers, hidden h, FFN width F, a attention heads, g query groups, vocab V.
The factor 6 (12 = 6 * 2 matrices, 18 = 6 * 3) is forward (2 FLOPs per multiply-add)
plus a backward of twice the forward. The ``seq/h`` term is the attention scores and
their application to values, counted for the full (non-causal) square.

Convention ``"causal"`` halves that score term, as Megatron-Bridge's newer tables do
(what a causal kernel actually computes); it is available only when asked for by name.
"""

from __future__ import annotations

from typing import Literal

FlopsConvention = Literal["recipe", "causal"]
FLOPS_CONVENTIONS: tuple[str, ...] = ("recipe", "causal")


def model_flops_per_sample(
    *,
    layers: int,
    hidden: int,
    ffn: int,
    heads: int,
    query_groups: int,
    seq_len: int,
    vocab: int,
    convention: FlopsConvention = "recipe",
) -> float:
    """FLOPs of one training sample (forward + backward), by the recipe's formula.

    Proxies pass their reduced ``layers``: the recipe's proxy MFU uses the
    reduced-layer model's FLOPs.
    """
    if convention not in FLOPS_CONVENTIONS:
        raise ValueError(f"unknown FLOPs convention {convention!r}; choose one of {FLOPS_CONVENTIONS}")
    score_factor = 0.5 if convention == "causal" else 1.0
    attention = 12 * layers * hidden**2 * (1 + query_groups / heads + score_factor * seq_len / hidden)
    mlp = 18 * layers * ffn * hidden
    embedding = 6 * vocab * hidden
    return float(seq_len * (attention + mlp + embedding))
