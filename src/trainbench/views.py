"""Terminal views of structured records (rich). No computation lives here."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_plan(info: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    t = Table(title=f"trainbench plan: {info['model']} {info['dtype']} on {info['gpus']} x {info['gpu_type']}")
    t.add_column("item")
    t.add_column("value", justify="right")
    rows = [
        ("scale", "proxy" if info["proxy"] else "full scale"),
        ("layers / hidden / FFN", f"{info['layers']} / {info['hidden']} / {info['ffn']}"),
        ("heads / query groups", f"{info['heads']} / {info['query_groups']}"),
        ("seq / vocab", f"{info['seq_len']} / {info['vocab']}"),
        ("TP / PP / VP / CP / DP", f"{info['tp']} / {info['pp']} / {info['vp'] or '-'} / {info['cp']} / {info['dp']}"),
        ("sequence parallel", "on" if info["sequence_parallel"] else "off"),
        ("MBS / GBS / GA", f"{info['mbs']} / {info['gbs']} / {info['ga']}"),
        (f"model FLOPs per sample ({info['flops_convention']})", f"{info['model_flops_per_sample']:.3e}"),
    ]
    for key, gib in info["memory_breakdown_gib"].items():
        rows.append((f"memory/GPU: {key.removesuffix('_gib').replace('_', ' ')}", f"{gib:.1f} GiB"))
    rows.append(("master weights", info["master_weights"]))
    if info["gpu_memory_gib"] is not None:
        fits = "fits" if info["fits"] else "DOES NOT FIT"
        rows.append(("GPU memory", f"{info['gpu_memory_gib']:.0f} GiB ({fits})"))
    ref = info["reference"]
    if ref:
        ttt = "n/a (proxy)" if ref["ttt_days"] is None else f"{ref['ttt_days']:.2f} days"
        rows += [
            (f"published step time ({ref['gpu_type']})", f"{ref['step_time_s']:.2f} s"),
            ("published tokens/s", f"{ref['tokens_per_s']:,.0f}"),
            ("published MFU", f"{ref['mfu_pct']:.2f} %"),
            ("published time to train 1T tokens", ttt),
        ]
    else:
        rows.append(("published reference", "none for this cell"))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    console.print(f"[dim]{info['scale_note']}[/dim]")
