"""The recipe's presets, layouts, proxy rows and published results, loaded from shipped data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

RECIPE_FILE = "recipe_24.11.json"


@cache
def recipe_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resources.files("trainbench.data").joinpath(RECIPE_FILE).read_text())
    return data


def model_names() -> list[str]:
    return list(recipe_data()["presets"])


def preset(model: str) -> dict[str, int]:
    return dict(recipe_data()["presets"][model])


def layout(model: str) -> dict[str, Any]:
    return dict(recipe_data()["layouts"][model])


def proxy_row(model: str, gpus: int) -> dict[str, Any] | None:
    for row in recipe_data()["proxy_rows"].get(model, []):
        if row["gpus"] == gpus:
            return dict(row)
    return None


def proxy_rows(model: str) -> list[dict[str, Any]]:
    return [dict(r) for r in recipe_data()["proxy_rows"].get(model, [])]


@dataclass(frozen=True)
class Reference:
    """One published cell of the recipe's tables (H100 unless ``gpu_type`` says otherwise)."""

    model: str
    dtype: str
    gpus: int
    gpu_type: str
    layers: int
    gbs: int
    step_time_s: float
    tokens_per_s: float
    mfu_pct: float
    ttt_days: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "step_time_s": self.step_time_s,
            "tokens_per_s": self.tokens_per_s,
            "mfu_pct": self.mfu_pct,
            "ttt_days": self.ttt_days,
            "gpu_type": self.gpu_type,
            "source": recipe_data()["source"],
        }


def references() -> list[Reference]:
    return [Reference(**row) for row in recipe_data()["references"]]


def find_reference(model: str, dtype: str, gpus: int, layers: int, gbs: int) -> Reference | None:
    """The published cell for exactly this workload (same layers and GBS), if any."""
    for ref in references():
        if (ref.model, ref.dtype, ref.gpus, ref.layers, ref.gbs) == (model, dtype, gpus, layers, gbs):
            return ref
    return None
