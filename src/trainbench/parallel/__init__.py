"""Parallelism applied from outside the plain model, in one place and a fixed order.

``parallelize`` transforms a model (or a pipeline stage's chunk of one); ``build_chunks`` builds one
rank's chunks through it with the single process's weights; ``PipelineTrainer`` (in
``trainbench.parallel.trainer``) runs pipelined layouts.
"""

from trainbench.parallel.apply import bf16_enabled, compile_enabled, parallelize
from trainbench.parallel.build import build_chunks
from trainbench.parallel.context import sequence_sharding
from trainbench.parallel.fp8_weights import Float8WeightCache
from trainbench.parallel.grads import clip_grad_norm_

__all__ = [
    "Float8WeightCache",
    "bf16_enabled",
    "build_chunks",
    "clip_grad_norm_",
    "compile_enabled",
    "parallelize",
    "sequence_sharding",
]
