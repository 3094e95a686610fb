"""``trainbench report``: logs in, the recipe's numbers, statistics and comparisons out.

``build(paths, flags, opts)`` is the library entry: find runs (``discover``), read them
(``parsers`` for foreign logs, ``trainbench.train.records`` for own runs), and analyse each
(``analyze``). ``render`` and ``plots`` are views of the result.
"""

from __future__ import annotations

from typing import Any

from trainbench.report.analyze import Options, analyze_all
from trainbench.report.discover import Run, find_sources, load

__all__ = ["Options", "Run", "build"]


def build(
    paths: list[str], flags: dict[str, Any] | None = None, opts: Options | None = None
) -> list[tuple[Run, dict[str, Any]]]:
    """(run, report row) for every run under ``paths``; ``flags`` state facts logs lack."""
    runs = [load(src, flags or {}) for src in find_sources(paths)]
    return analyze_all(runs, opts or Options())
