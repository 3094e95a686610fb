"""Parallelism applied from outside the plain model, in one place and a fixed order."""

from trainbench.parallel.apply import compile_enabled, parallelize

__all__ = ["compile_enabled", "parallelize"]
