"""Adapters for the log formats ``report`` reads: the only place with regular expressions.

Formats (line shapes in shared/reference/recipe_facts.md, "Log lines users parse"):

- ``nemo-24.09``: the Lightning progress bar of NeMo 24.09, rewritten with carriage
  returns inside the ``.out`` file: ``Epoch 0: : 100%|...| 50/50 [16:26<00:00, ...,
  global_step=49.00, consumed_samples=12600.0, train_step_timing in s=12.80]``.
- ``nemo2``: one line per step, ``Training epoch 0, iteration 49/49 | ... |
  train_step_timing in s: 12.39 | consumed_samples: 6400``. trainbench's own ``.out``
  lines have this shape too (with ``in s=``), so a run directory without its JSONL
  records is still readable.
- ``megatron``: Megatron-LM / Megatron-Bridge, ``[date] iteration   50/   50 | consumed
  samples: 6400 | elapsed time per iteration (ms): 12390.1 | ...``.

Steps are numbered from 1 everywhere here (NeMo's 0-based ``global_step`` 49 is step 50).
A file is scanned in binary chunks: only lines holding a marker are decoded and parsed,
so garbage, huge noise and carriage-return progress bars cost little and never crash.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from trainbench.train.records import parse_provenance_line

FORMATS = ("nemo-24.09", "nemo2", "megatron")
CHUNK_BYTES = 1 << 22  # 4 MiB reads
MAX_LINE_BYTES = 1 << 16  # a record line is < 1 KiB; longer runs of bytes without a line break keep only their tail
HEAD_BYTES = 1 << 16  # where the provenance line is looked for

MARKERS = (b"train_step_timing", b"elapsed time per iteration", b"Traceback (most recent call last)")
_LINE_END = re.compile(rb"[\r\n]")
_BAR_COUNT = re.compile(r"(\d{1,9})/(\d{1,9})\s*\[")  # "| 50/50 [16:26<00:00"
_BAR_FIELD = re.compile(r"([A-Za-z_][\w ]*?)\s*=\s*([^,\]\s]+)")  # "train_step_timing in s=12.80"
_ITERATION = re.compile(r"iteration\s+(\d{1,9})\s*/\s*(\d{1,9})")  # NeMo 2 (0-based) and Megatron (1-based)


@dataclass
class StepPoint:
    """One logged optimizer step, as a log states it."""

    step: int  # 1-based
    step_time_s: float
    total_steps: int | None = None  # the planned number of steps, when the line says it
    gbs: int | None = None  # stated global batch size
    consumed_samples: float | None = None
    loss: float | None = None
    grad_norm: float | None = None
    nan: bool = False  # a loss or grad norm is NaN, or the framework counted a NaN iteration
    mem_peak_gib: float | None = None  # the device's peak allocated memory, when the line says it


@dataclass
class ParsedLog:
    """What one log file says. ``steps`` holds the last line seen for each step number."""

    format: str | None = None  # one of FORMATS, None when no step line was found
    steps: dict[int, StepPoint] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    traceback: bool = False  # a Python traceback was printed
    unparsed_lines: int = 0  # lines with a marker that no adapter could read (garbled, interleaved)
    bytes_read: int = 0

    @property
    def planned_steps(self) -> int | None:
        totals = [p.total_steps for p in self.steps.values() if p.total_steps]
        return max(totals) if totals else None

    @property
    def nan(self) -> bool:
        return any(p.nan for p in self.steps.values())


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _whole(value: float | None) -> int | None:
    return int(value) if value is not None and math.isfinite(value) and value == int(value) else None


def _is_nan(*values: float | None) -> bool:
    return any(v is not None and math.isnan(v) for v in values)


def _point(step: int, step_time_s: float | None, **kw: object) -> StepPoint | None:
    """A step point if the step number and time are usable; None for garbled values."""
    if step < 1 or step_time_s is None or not math.isfinite(step_time_s) or step_time_s <= 0:
        return None
    return StepPoint(step=step, step_time_s=step_time_s, **kw)  # type: ignore[arg-type]


def parse_nemo_bar(line: str) -> StepPoint | None:
    """One NeMo 24.09 progress-bar update (a carriage-return-separated segment)."""
    if "train_step_timing" not in line:
        return None
    fields = {k.strip(): v for k, v in _BAR_FIELD.findall(line)}
    count = _BAR_COUNT.search(line)
    global_step = _whole(_number(fields.get("global_step", "")))
    if global_step is not None:
        step = global_step + 1
    elif count:
        step = int(count.group(1))
    else:
        return None
    loss = _number(fields.get("reduced_train_loss", ""))
    return _point(
        step,
        _number(fields.get("train_step_timing in s", "")),
        total_steps=int(count.group(2)) if count else None,
        consumed_samples=_number(fields.get("consumed_samples", "")),
        loss=loss,
        nan=_is_nan(loss),
    )


def _pipe_fields(line: str) -> dict[str, str]:
    """``key: value | key: value`` (NeMo 2, Megatron; trainbench writes ``key=value`` for the timing)."""
    out: dict[str, str] = {}
    for part in line.split("|"):
        key, sep, value = part.rpartition(":") if ":" in part else part.rpartition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def parse_nemo2(line: str) -> StepPoint | None:
    """One NeMo 2 (or trainbench ``.out``) line; ``iteration`` is 0-based there."""
    it = _ITERATION.search(line)
    if not it or "train_step_timing" not in line:
        return None
    f = _pipe_fields(line[it.end() :])
    loss = _number(f.get("reduced_train_loss", ""))
    grad_norm = _number(f.get("grad_norm", ""))
    peak_bytes = _number(f.get("peak_memory_usage", ""))  # NeMo 2: bytes; trainbench: peak_memory_gib
    mem = _number(f.get("peak_memory_gib", "")) if peak_bytes is None else peak_bytes / 2**30
    return _point(
        int(it.group(1)) + 1,
        _number(f.get("train_step_timing in s", "")),
        total_steps=int(it.group(2)) + 1,
        gbs=_whole(_number(f.get("global_batch_size", ""))),
        consumed_samples=_number(f.get("consumed_samples", "")),
        loss=loss,
        grad_norm=grad_norm,
        nan=_is_nan(loss, grad_norm),
        mem_peak_gib=mem if mem is not None and math.isfinite(mem) and mem > 0 else None,
    )


def parse_megatron(line: str) -> StepPoint | None:
    """One Megatron-LM / Megatron-Bridge iteration line; ``iteration`` is 1-based there."""
    it = _ITERATION.search(line)
    if not it or "elapsed time per iteration" not in line:
        return None
    f = _pipe_fields(line[it.end() :])
    ms = _number(f.get("elapsed time per iteration (ms)", ""))
    loss = _number(f.get("lm loss", ""))
    grad_norm = _number(f.get("grad norm", ""))
    nan_iterations = _number(f.get("number of nan iterations", "")) or 0.0
    return _point(
        int(it.group(1)),
        None if ms is None else ms / 1000.0,
        total_steps=int(it.group(2)),
        gbs=_whole(_number(f.get("global batch size", ""))),
        consumed_samples=_number(f.get("consumed samples", "")),
        loss=loss,
        grad_norm=grad_norm,
        nan=_is_nan(loss, grad_norm) or nan_iterations > 0,
    )


def parse_line(line: str) -> tuple[str, StepPoint] | None:
    """Try each adapter on one line; (format, point) for the first that reads it."""
    if "elapsed time per iteration" in line:
        point = parse_megatron(line)
        return None if point is None else ("megatron", point)
    if _ITERATION.search(line):
        point = parse_nemo2(line)
        return None if point is None else ("nemo2", point)
    point = parse_nemo_bar(line)
    return None if point is None else ("nemo-24.09", point)


def _marker_positions(body: bytes) -> list[int]:
    """Where any marker starts, in order (``bytes.find`` is ten times faster than a regex here)."""
    found = []
    for marker in MARKERS:
        at = body.find(marker)
        while at >= 0:
            found.append(at)
            at = body.find(marker, at + len(marker))
    return sorted(found)


def _marked_lines(body: bytes) -> Iterator[bytes]:
    """The lines (split at CR or LF) of ``body`` that hold a marker, each once."""
    done = 0
    for at in _marker_positions(body):
        if at < done:
            continue
        start = max(body.rfind(b"\n", 0, at), body.rfind(b"\r", 0, at)) + 1
        end = _LINE_END.search(body, at)
        done = end.start() if end else len(body)
        yield body[start:done]


def _record_lines(fh: BinaryIO) -> Iterator[bytes]:
    carry = b""
    while block := fh.read(CHUNK_BYTES):
        data = carry + block
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        body, carry = (b"", data) if cut < 0 else (data[:cut], data[cut + 1 :])
        carry = carry[-MAX_LINE_BYTES:]
        yield from _marked_lines(body)
    yield from _marked_lines(carry)


def parse_stream(fh: BinaryIO) -> ParsedLog:
    """Read one log from a binary file object. Never raises on content, only on I/O."""
    log = ParsedLog()
    for raw in fh.read(HEAD_BYTES).splitlines()[:20]:  # the recipe writes it first; allow a few lines of noise
        line = raw.decode("utf-8", "replace").strip()
        if line.startswith("GSW:"):
            log.provenance = parse_provenance_line(line)
            break
    fh.seek(0)
    by_format: dict[str, dict[int, StepPoint]] = {}
    for raw in _record_lines(fh):
        line = raw.decode("utf-8", "replace")
        if "Traceback (most recent call last)" in line:
            log.traceback = True
            if "train_step_timing" not in line and "elapsed time per iteration" not in line:
                continue
        parsed = parse_line(line)
        if parsed is None:
            log.unparsed_lines += 1
            continue
        fmt, point = parsed
        by_format.setdefault(fmt, {})[point.step] = point
    log.bytes_read = fh.tell()
    if by_format:
        # A log holds one framework's lines; if several matched, the one with most steps is the log's.
        log.format, log.steps = max(by_format.items(), key=lambda kv: len(kv[1]))
    return log


def parse_file(path: str) -> ParsedLog:
    """Parse one log file; OSError (missing, unreadable, a directory) is the caller's to report."""
    with open(path, "rb") as fh:
        return parse_stream(fh)


def infer_gbs(steps: dict[int, StepPoint]) -> int | None:
    """GBS as the log states it (``global_batch_size``), else ``consumed_samples`` over steps.

    NeMo 24.09's bar gives consumed samples after step ``global_step + 1``: GBS = samples /
    step. If that is not whole (a batch-size ramp), the slope between the last two points is used.
    """
    if not steps:
        return None
    last = steps[max(steps)]
    if last.gbs:
        return last.gbs
    with_samples = [p for _, p in sorted(steps.items()) if p.consumed_samples is not None]
    if not with_samples:
        return None
    p = with_samples[-1]
    gbs = _whole(p.consumed_samples / p.step if p.consumed_samples else None)
    if gbs is None and len(with_samples) > 1:
        q = with_samples[-2]
        gbs = _whole(((p.consumed_samples or 0.0) - (q.consumed_samples or 0.0)) / (p.step - q.step))
    return gbs if gbs and gbs > 0 else None


# Line writers: the inverse of the adapters, for synthetic logs (benchmarks, property tests).


def nemo_bar_line(step: int, total: int, step_time_s: float, gbs: int, loss: float = 11.7) -> str:
    return (
        f"Epoch 0: : {100 * step // total}%|{'█' * (10 * step // total):<10}| {step}/{total} [16:26<00:00, "
        f"v_num=gjbq, reduced_train_loss={loss:.2f}, global_step={step - 1:.2f}, "
        f"consumed_samples={step * gbs:.1f}, train_step_timing in s={step_time_s}]"
    )


def nemo2_line(step: int, total: int, step_time_s: float, gbs: int, loss: float = 11.96) -> str:
    return (
        f"Training epoch 0, iteration {step - 1}/{total - 1} | lr: 7.496e-06 | global_batch_size: {gbs} | "
        f"global_step: {step - 1} | peak_memory_usage: 70833405952 | memory_allocated: 44271689728 | "
        f"reduced_train_loss: {loss} | train_step_timing in s: {step_time_s} | consumed_samples: {step * gbs}"
    )


def megatron_line(step: int, total: int, step_time_s: float, gbs: int, loss: float = 11.96) -> str:
    return (
        f"[2025-01-01 12:00:00.000000] iteration {step:8d}/{total:8d} | consumed samples: {step * gbs:12d} | "
        f"elapsed time per iteration (ms): {step_time_s * 1000:.1f} | throughput per GPU (TFLOP/s/GPU): 702.3 | "
        f"learning rate: 7.496E-06 | global batch size: {gbs:5d} | lm loss: {loss:.6E} | loss scale: 1.0 | "
        f"grad norm: 1.234 | number of skipped iterations:   0 | number of nan iterations:   0 |"
    )


LINE_WRITERS = {"nemo-24.09": nemo_bar_line, "nemo2": nemo2_line, "megatron": megatron_line}
