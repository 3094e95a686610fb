"""FLOPs, MFU, throughput, time-to-train and the peak table: pure functions."""

from trainbench.metrics.flops import FLOPS_CONVENTIONS, model_flops_per_sample
from trainbench.metrics.peaks import gpu_spec, gpu_table, peak_tflops
from trainbench.metrics.throughput import mfu_pct, tflops_per_gpu, time_to_train_days, tokens_per_s

__all__ = [
    "FLOPS_CONVENTIONS",
    "gpu_spec",
    "gpu_table",
    "mfu_pct",
    "model_flops_per_sample",
    "peak_tflops",
    "tflops_per_gpu",
    "time_to_train_days",
    "tokens_per_s",
]
