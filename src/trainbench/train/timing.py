"""Step timing rules in one object: synchronize the device at both step boundaries.

The timed region holds the training step and nothing else: batches are made before
``start()``; logging, loss read-back and record writing come after ``stop()``. With
several ranks the step time is the slowest rank's (``max`` all-reduce, done after the
clock has stopped), i.e. the time until every rank has finished the step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch


class StepTimer:
    def __init__(self, device: torch.device, reduce_max: Callable[[float], float] | None = None):
        self.device = device
        self.reduce_max = reduce_max
        self._t0: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()  # work queued before the step must not be billed to it
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Seconds since ``start()``, after the device finished the step (max over ranks)."""
        assert self._t0 is not None, "stop() without start()"
        self._sync()
        elapsed = time.perf_counter() - self._t0
        self._t0 = None
        return self.reduce_max(elapsed) if self.reduce_max else elapsed


def process_age_s() -> float | None:
    """Seconds since this process started (the interpreter, before any import), from Linux's
    /proc; None where there is no /proc. Resolution: one clock tick (10 ms)."""
    try:
        with open("/proc/self/stat") as f:
            # The command name (field 2) may hold spaces: count fields after its closing ')'.
            # starttime is field 22 of the whole line, in clock ticks since boot.
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
        return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
