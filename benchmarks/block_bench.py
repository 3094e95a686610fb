"""Time one compiled transformer block's forward + backward on a GPU, in variants, with its kernels.

    PYTHONPATH=src python3 benchmarks/block_bench.py [--shape 8b] [--variants bf16,fp8,...] [--out DIR]

One micro-batch (1 x seq x hidden, bf16 weights as the single-GPU path holds them) through one
``TransformerBlock`` compiled as ``trainbench run`` compiles it; each variant runs in its own
process (a fresh inductor cache and config). Prints ms per forward + backward, TFLOP/s by the
recipe's per-layer FLOPs, and the kernels that take the time; with ``--out``, writes the source
of the slowest generated (Triton) kernels there, to read what inductor fused.

Variants: ``bf16``; ``fp8`` (torchao tensorwise with trainbench's inductor options, as ``run
--dtype fp8``); ``fp8-mixorder`` (inductor's mix-order reductions left on, its default);
``fp8-nopersist`` (persistent reductions off); ``fp8-gqa`` (SDPA's own GQA instead of expanded
K/V); ``fp8-ropebf16`` (rotary embedding computed in bf16, as Hugging Face does);
``-fused`` (q, k, v as one projection and gate, up as one, as Megatron's ``linear_qkv`` and
``linear_fc1``: fewer, larger GEMMs, each input cast to fp8 once); ``-nocache`` (fp8 only:
torchao casts the weights in every forward and backward, instead of the fp8 weights being cast
once per optimizer step as ``run`` does; the timed iterations leave that one cast out, it
runs once per GA micro-batches). Modifiers combine: ``fp8-fused-nocache``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ["bf16", "fp8", "fp8-nocache"]  # the default set
BASES = ("bf16", "fp8")
MODIFIERS = {"fused": BASES, "mixorder": ("fp8",), "nopersist": ("fp8",), "gqa": ("fp8",), "ropebf16": ("fp8",),
             "nocache": ("fp8",)}  # fmt: skip


def variant_error(variant: str) -> str | None:
    base, *mods = variant.split("-")
    if base not in BASES:
        return f"{variant}: starts with one of {', '.join(BASES)}"
    for mod in mods:
        if base not in MODIFIERS.get(mod, ()):
            return f"{variant}: -{mod} is not a modifier of {base} (known: {', '.join(MODIFIERS)})"
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8b")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process's variant
    args = ap.parse_args()
    if args.one:
        return run_one(args)
    if args.iters < 1:
        ap.error(f"--iters must be at least 1, got {args.iters}")
    variants = args.variants.split(",")
    if errors := [e for v in variants if (e := variant_error(v))]:
        ap.error("; ".join(errors))
    rows = []
    for variant in variants:
        cmd = [sys.executable, __file__, "--shape", args.shape, "--one", variant, "--iters", str(args.iters)]
        if args.out:
            cmd += ["--out", str(args.out)]
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            rows.append({"variant": variant, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]})
        else:
            rows.append(json.loads(lines[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print()
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<14} failed: {r['error']}")
            continue
        print(f"{r['variant']:<14} {r['ms']:8.2f} ms  {r['tflops']:7.1f} TFLOP/s  peak {r['peak_gib']:.1f} GiB")
        for k in r["kernels"][:8]:
            print(f"    {k['us']:9.1f} us x{k['calls']:<3} {k['name'][:110]}")
    return 0


def run_one(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F

    from trainbench.config import ModelConfig
    from trainbench.metrics.flops import model_flops_per_sample
    from trainbench.model import llama, rope
    from trainbench.parallel.apply import convert_to_float8, inductor_options
    from trainbench.parallel.fp8_weights import Float8WeightCache
    from trainbench.recipe import tables

    variant = args.one
    base, *mods = variant.split("-")
    fp8 = base == "fp8"
    cfg = ModelConfig(name=args.shape, **{**tables.preset(args.shape), "layers": 1})
    if "nopersist" in mods:
        torch._inductor.config.triton.persistent_reductions = False
    if "gqa" in mods:

        def attention_forward(self, x, rope_table):  # type: ignore[no-untyped-def]
            bsz, seqlen, _ = x.shape
            q = self.wq(x).view(bsz, seqlen, -1, self.head_dim)
            k = self.wk(x).view(bsz, seqlen, -1, self.head_dim)
            v = self.wv(x).view(bsz, seqlen, -1, self.head_dim)
            table = rope_table[:seqlen]
            q, k = rope.apply_rope(q, table), rope.apply_rope(k, table)
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
            )
            return self.wo(out.transpose(1, 2).reshape(bsz, seqlen, -1))

        llama.Attention.forward = attention_forward  # type: ignore[method-assign]
    if "ropebf16" in mods:

        def apply_rope_bf16(x, cache):  # type: ignore[no-untyped-def]
            cos, sin = cache.to(x.dtype).chunk(2, dim=-1)
            cos, sin = cos[None, :, None, :], sin[None, :, None, :]
            return x * cos + rope._rotate_half(x) * sin

        llama.apply_rope = apply_rope_bf16  # type: ignore[assignment]

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")  # CPU: a smoke test of this script only
    torch.manual_seed(0)
    block = llama.TransformerBlock(0, cfg).to(device)
    block.init_weights()
    block.to(torch.bfloat16)
    if "fused" in mods:
        fuse_projections(block, cfg)
    holder = torch.nn.Module()
    holder.layers = torch.nn.ModuleDict({"0": block})
    if fp8:
        convert_to_float8(holder, "tensorwise")
        if "nocache" not in mods:  # run's default: fp8 weights cast once per optimizer step
            cache = Float8WeightCache(holder)
            cache.refresh()
    options = inductor_options(base)
    if "mixorder" in mods:
        options = {}
    compiled = torch.compile(holder.layers["0"], fullgraph=True, options=options or None)
    table = rope.rope_cache(cfg, device)
    x = torch.randn(1, cfg.seq_len, cfg.hidden, device=device, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn_like(x)

    def once() -> None:
        out = compiled(x, table)
        out.backward(grad)
        block.zero_grad(set_to_none=True)  # no .grad accumulation kernels: the real run folds grads in hooks
        x.grad = None

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(3):
        once()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        once()
    sync()
    ms = (time.perf_counter() - t0) * 1e3 / args.iters
    activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
    with torch.profiler.profile(activities=[activity]) as prof:
        for _ in range(2):
            once()
        sync()
    kernels = []
    for evt in prof.key_averages():
        us = (evt.self_device_time_total if cuda else evt.self_cpu_time_total) / 2
        if us > 0:
            kernels.append({"name": evt.key, "us": us, "calls": evt.count // 2})
    kernels.sort(key=lambda k: -k["us"])
    flops = model_flops_per_sample(
        layers=1, hidden=cfg.hidden, ffn=cfg.ffn, heads=cfg.heads, query_groups=cfg.query_groups,
        seq_len=cfg.seq_len, vocab=0, convention="recipe",
    )  # fmt: skip
    if args.out:
        dump_kernel_sources(args.out / f"kernels-{args.shape}-{variant}.txt", kernels)
    print(json.dumps({
        "variant": variant, "ms": ms, "tflops": flops / (ms / 1e3) / 1e12,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0, "kernels": kernels[:20],
    }))  # fmt: skip
    return 0


def fuse_projections(block, cfg) -> None:  # type: ignore[no-untyped-def]
    """Replace wq/wk/wv by one ``wqkv`` and w1/w3 by one ``w13`` holding the same weights."""
    import types

    import torch
    import torch.nn.functional as F

    from trainbench.model.llama import repeat_kv
    from trainbench.model.rope import apply_rope

    att, ffn, d = block.attention, block.feed_forward, cfg.head_dim
    sizes = [cfg.heads * d, cfg.query_groups * d, cfg.query_groups * d]
    att.wqkv = torch.nn.Linear(cfg.hidden, sum(sizes), bias=False)
    att.wqkv.weight = torch.nn.Parameter(torch.cat([att.wq.weight, att.wk.weight, att.wv.weight]).detach())
    del att.wq, att.wk, att.wv

    def attention_forward(self, x, rope_table):  # type: ignore[no-untyped-def]
        bsz, seqlen, _ = x.shape
        q, k, v = (t.view(bsz, seqlen, -1, d) for t in self.wqkv(x).split(sizes, dim=-1))
        table = rope_table[:seqlen]
        q, k = apply_rope(q, table), apply_rope(k, table)
        n_rep = q.shape[2] // k.shape[2]
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(bsz, seqlen, -1))

    ffn.w13 = torch.nn.Linear(cfg.hidden, 2 * cfg.ffn, bias=False)
    ffn.w13.weight = torch.nn.Parameter(torch.cat([ffn.w1.weight, ffn.w3.weight]).detach())
    del ffn.w1, ffn.w3

    def ffn_forward(self, x):  # type: ignore[no-untyped-def]
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)

    att.forward = types.MethodType(attention_forward, att)
    ffn.forward = types.MethodType(ffn_forward, ffn)


def dump_kernel_sources(path: Path, kernels: list[dict]) -> None:
    """The generated source of the slowest Triton kernels (from this process's inductor cache)."""
    cache = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", "/nonexistent"))
    sources = [f for f in cache.rglob("*.py")] if cache.exists() else []
    out = []
    for k in [k for k in kernels if k["name"].startswith("triton_")][:6]:
        for f in sources:
            text = f.read_text(errors="replace")
            at = text.find(f"def {k['name']}(")
            if at >= 0:
                lines = text[:at].splitlines()[-12:] + text[at:].splitlines()[:150]
                out.append(f"# ==== {k['name']}: {k['us']:.1f} us x{k['calls']} ({f.name})\n" + "\n".join(lines) + "\n")
                break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(out) or "no kernel sources found\n")


if __name__ == "__main__":
    raise SystemExit(main())
