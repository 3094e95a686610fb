"""Peak dense TFLOP/s and memory per GPU type, from the shipped table with its source."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from trainbench.errors import ConfigError

DTYPES: tuple[str, ...] = ("bf16", "fp8")


@dataclass(frozen=True)
class GpuSpec:
    key: str
    name: str
    peak_tflops: dict[str, float | None]  # dtype -> dense peak TFLOP/s (None: unsupported)
    memory_gib: float | None  # None: not a fixed device memory (the CPU row)


@cache
def gpu_table() -> dict[str, GpuSpec]:
    raw = json.loads(resources.files("trainbench.data").joinpath("gpus.json").read_text())
    return {
        key: GpuSpec(key, row["name"], {d: row[d] for d in DTYPES}, row["memory_gib"])
        for key, row in raw["gpus"].items()
    }


def gpu_spec(gpu_type: str) -> GpuSpec:
    table = gpu_table()
    spec = table.get(gpu_type.lower())
    if spec is None:
        raise ConfigError(
            f"unknown GPU type {gpu_type!r}: known types are {', '.join(sorted(table))}; "
            "for another GPU give its dense peak with --peak-tflops"
        )
    return spec


def peak_tflops(gpu_type: str, dtype: str, override: float | None = None) -> float:
    """Dense peak TFLOP/s for MFU. ``override`` (the user's own number) wins and is
    the only way to get a number for a GPU type not in the table."""
    if override is not None:
        if not override > 0:
            raise ConfigError(f"--peak-tflops must be positive, got {override}")
        return float(override)
    peak = gpu_spec(gpu_type).peak_tflops.get(dtype)
    if peak is None:
        raise ConfigError(f"GPU type {gpu_type!r} has no published {dtype} peak; give one with --peak-tflops")
    return float(peak)


def gpu_type_from_device_name(device_name: str) -> str | None:
    """Map a CUDA device name (``NVIDIA H200``, ``NVIDIA H100 80GB HBM3``) to a table key.

    Returns None when no key matches: callers must then ask the user, never guess.
    """
    name = device_name.lower()
    # Longest keys first so that "gb200" is not taken for "b200".
    for key in sorted(gpu_table(), key=len, reverse=True):
        if key in name.replace(" ", "").replace("-", "") or key in name.split():
            return key
    return None
