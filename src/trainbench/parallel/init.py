"""Weights of a parallel model, equal to the single-process model's of the same seed.

The single process seeds torch's RNG and runs ``Llama.init_weights`` over the whole model: embedding,
blocks in order, norm, output. Here every rank replays that sequence piece by piece on its device:
each piece is materialised whole (one block, or the embedding, at a time), initialised by the model's
own ``init_weights`` on a model holding only that piece (so the RNG is consumed exactly as in the
single process), and the rank copies its shard of each tensor into its TP/FSDP-sharded parameters.
A rank stops after the last piece it holds. The cost is generating the model's weights up to the
rank's last stage once per rank (seconds on a GPU even for 405B) and one piece of transient memory.

This makes every layout start from the same weights, which is what lets the equivalence tests
compare losses step by step, and makes a parallel run's loss curve comparable with a single GPU's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from trainbench.config import ModelConfig
from trainbench.model import Llama, rope_cache

WRAPPER_NAMES = ("_checkpoint_wrapped_module", "_orig_mod")  # activation checkpointing, torch.compile


def plain_name(fqn: str) -> str:
    """``layers.3._orig_mod.attention.wq.weight`` -> ``layers.3.attention.wq.weight``."""
    return ".".join(part for part in fqn.split(".") if part not in WRAPPER_NAMES)


def _pieces(cfg: ModelConfig) -> Iterator[tuple[str, Llama]]:
    """(name prefix, a meta Llama holding only that piece), in ``Llama.init_weights`` order."""
    with torch.device("meta"):
        whole = Llama(cfg)
    blocks = dict(whole.layers.items())
    embedding, norm, output = whole.tok_embeddings, whole.norm, whole.output
    whole.layers = nn.ModuleDict()
    whole.tok_embeddings = whole.norm = whole.output = None
    whole.tok_embeddings = embedding
    yield "tok_embeddings.", whole
    whole.tok_embeddings = None
    for name, block in blocks.items():
        whole.layers = nn.ModuleDict({name: block})
        yield f"layers.{name}.", whole
    whole.layers = nn.ModuleDict()
    whole.norm = norm
    yield "norm.", whole
    whole.norm, whole.output = None, output
    yield "output.", whole


@torch.no_grad()
def init_like_single_process(chunks: Sequence[nn.Module], cfg: ModelConfig, device: torch.device, seed: int) -> None:
    """Fill the (materialised, possibly sharded) parameters of ``chunks`` and their rope tables."""
    targets = {plain_name(fqn): p for chunk in chunks for fqn, p in chunk.named_parameters()}
    remaining = set(targets)
    torch.manual_seed(seed)
    for prefix, piece in _pieces(cfg):
        if not remaining:
            break
        piece.to_empty(device=device)
        piece.init_weights(buffer_device=torch.device("meta"))  # the rope table is not needed here
        for fqn, full in piece.named_parameters():
            if fqn in targets:
                _copy_shard(targets[fqn], full)
                remaining.discard(fqn)
        piece.to_empty(device="meta")  # free the piece
        assert all(not name.startswith(prefix) for name in remaining), prefix
    assert not remaining, f"parameters no piece initialised: {sorted(remaining)}"
    for chunk in chunks:
        chunk.rope_cache = rope_cache(cfg, device)  # type: ignore[assignment]


def _copy_shard(param: torch.Tensor, full: torch.Tensor) -> None:
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor):
        # src_data_rank=None: every rank holds the same full tensor, so take the shard locally.
        full = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
    param.copy_(full)
