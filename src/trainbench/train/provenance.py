"""Where and with what a run ran: versions, hardware, host, time. Recorded with every run."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trainbench

if TYPE_CHECKING:
    import torch


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def git_commit() -> str | None:
    here = Path(trainbench.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
    return out.stdout.strip() + ("-dirty" if dirty else "")


def driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def collect(device: torch.device, world_size: int) -> dict[str, Any]:
    import torch  # here, not at import time: `trainbench plan/report/jobs` never need it

    cuda = device.type == "cuda"
    nccl = None
    if cuda and torch.distributed.is_available() and torch.distributed.is_nccl_available():
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
    try:  # the version without importing it (its import is slow and noisy)
        torchao_version: str | None = importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        torchao_version = None
    return {
        "trainbench_version": trainbench.__version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "nccl_version": nccl,
        "torchao_version": torchao_version,
        "driver_version": driver_version() if cuda else None,
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "world_size": world_size,
        "hostname": socket.gethostname(),
    }
