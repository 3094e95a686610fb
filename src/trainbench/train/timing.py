"""Step timing rules in one object: synchronize the device at both step boundaries.

The timed region holds the training step and nothing else: batches are made before
``start()``; logging, loss read-back and record writing come after ``stop()``. With
several ranks the step time is the slowest rank's (``max`` all-reduce, done after the
clock has stopped), i.e. the time until every rank has finished the step.
"""

from __future__ import annotations

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
