"""``run --profile FIRST:LAST``: a torch profiler trace and a kernel-time table of those steps.

The recipe profiles steps 20-30 with Nsight Systems and keeps profiled runs apart from
performance results; so does trainbench: the summary names the window, and report
never counts a profiled run as a performance result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class StepProfiler:
    def __init__(self, window: tuple[int, int] | None, stem: Path, device: torch.device):
        self.window, self.stem, self.device = window, stem, device
        self._prof: Any = None

    @property
    def trace_path(self) -> Path:
        return Path(f"{self.stem}.trace.json")

    @property
    def table_path(self) -> Path:
        return Path(f"{self.stem}.kernels.txt")

    def before_step(self, step: int) -> None:
        if self.window and step == self.window[0]:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._prof = torch.profiler.profile(activities=activities)
            self._prof.__enter__()

    def after_step(self, step: int) -> None:
        if self._prof is not None and self.window and step == self.window[1]:
            self.finish()

    def finish(self) -> None:
        """Stop and write the trace and the table (also when the run ends inside the window)."""
        if self._prof is None:
            return
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        prof.export_chrome_trace(str(self.trace_path))
        sort = "self_device_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        self.table_path.write_text(prof.key_averages().table(sort_by=sort, row_limit=60, max_name_column_width=90))
