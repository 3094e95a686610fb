"""Does one transformer block compute the same with the fp8 weight cache as with torchao's own casts?

    PYTHONPATH=src python3 benchmarks/fp8_weight_check.py [--shape 8b]

One block (bf16 weights, torchao tensorwise float8), forward + backward on one micro-batch, four
pairs of fresh copies of the same block: torchao vs torchao (the run-to-run noise: attention's
backward need not be deterministic) and torchao vs the cached fp8 weights
(``parallel/fp8_weights.py``), each eager and compiled. Prints, per pair, whether output and
gradients are bit-identical and their largest relative differences, one JSON line each.
On CPU (a smoke test of the script) use a small shape, e.g. ``--shape tiny``.
"""

from __future__ import annotations

import argparse
import copy
import json


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8b")
    args = ap.parse_args()

    import torch

    from trainbench.config import ModelConfig
    from trainbench.model import llama, rope
    from trainbench.parallel.apply import convert_to_float8, inductor_options
    from trainbench.parallel.fp8_weights import Float8WeightCache
    from trainbench.recipe import tables

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = ModelConfig(name=args.shape, **{**tables.preset(args.shape), "layers": 1})
    torch.manual_seed(0)
    block = llama.TransformerBlock(0, cfg).to(device)
    block.init_weights()
    block.to(torch.bfloat16)
    table = rope.rope_cache(cfg, device)
    x = torch.randn(1, cfg.seq_len, cfg.hidden, device=device, dtype=torch.bfloat16)
    grad = torch.randn_like(x)

    def run(cached: bool, compiled: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        holder = torch.nn.Module()
        holder.layers = torch.nn.ModuleDict({"0": copy.deepcopy(block)})
        convert_to_float8(holder, "tensorwise")
        if cached:
            Float8WeightCache(holder, compile_kernels=compiled).refresh()
        mod = holder.layers["0"]
        fn = torch.compile(mod, fullgraph=True, options=inductor_options("fp8") or None) if compiled else mod
        out = fn(x, table)
        out.backward(grad)
        return out.detach(), [p.grad for p in mod.parameters()]

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.float() - b.float()).norm() / a.float().norm().clamp_min(1e-30))

    for compiled in (False, True):
        for pair in ((False, False), (False, True)):
            (ya, ga), (yb, gb) = run(pair[0], compiled), run(pair[1], compiled)
            grads = list(zip(ga, gb, strict=True))
            identical = torch.equal(ya, yb) and all(torch.equal(p, q) for p, q in grads)
            print(json.dumps({
                "compiled": compiled, "pair": ["cached" if c else "torchao" for c in pair], "bit_identical": identical,
                "output_rel_diff": rel(ya, yb), "max_grad_rel_diff": max(rel(p, q) for p, q in grads),
            }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
