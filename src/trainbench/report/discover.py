"""Find runs under the paths a user names, read them, and infer the facts their numbers need.

A run is either trainbench's own (``<stem>.summary.json`` / ``.steps.jsonl`` / ``.out``,
see ``trainbench.train.records``) or one foreign ``.out`` log. Facts (model, dtype, GPUs,
GBS, layers, sequence length, GPU type) come from, in this order of trust:

1. the run itself: its resolved config, its provenance line, the numbers in its lines;
2. the command line (``--model --dtype --gpus --gbs --layers --seq-len --gpu-type``);
3. the recipe's directory layout ``<root>/<GSW_VERSION>/<dtype>/<model>/<gpus>/`` and the
   log name ``log-<framework>_llama3.1_<model>_<gpus>_<jobid>.out``;
4. the recipe's tables: layers from the proxy row for that GPU count (else the preset's),
   sequence length from the preset, and H100 (the recipe's hardware) as GPU type.

GBS is never taken from a table: a run whose log states neither ``global_batch_size``
nor ``consumed_samples`` and that has no ``--gbs`` is listed with GBS missing.
Where two sources disagree, the more trusted one wins and the run carries a note.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainbench.config import Plan
from trainbench.metrics.peaks import DTYPES, gpu_table
from trainbench.recipe import tables
from trainbench.report.parsers import ParsedLog, infer_gbs, parse_file
from trainbench.train.records import FRAMEWORK, RunSummary

OWN_SUFFIXES = (".summary.json", ".steps.jsonl", ".out")  # trainbench's run files, by stem
FACT_KEYS = ("model", "dtype", "gpus", "gbs", "layers", "seq_len", "gpu_type")
SHAPE_KEYS = ("layers", "hidden", "ffn", "heads", "query_groups", "seq_len", "vocab")
RECIPE_GPU_TYPE = "h100"


@dataclass
class Source:
    """The files of one run: an own run has a summary and/or steps; a foreign log only ``out``."""

    directory: Path
    stem: str
    out: Path | None = None
    steps: Path | None = None
    summary: Path | None = None
    error: str | None = None  # a named path that does not exist

    @property
    def own(self) -> bool:
        return self.summary is not None or self.steps is not None

    @property
    def label(self) -> str:
        main = self.out or self.summary or self.steps
        return str(main) if main else str(self.directory / self.stem)


@dataclass
class Run:
    """One run as read: step times, status and facts. ``analyze`` turns it into numbers."""

    source: str
    format: str  # trainbench | nemo-24.09 | nemo2 | megatron | unknown
    status: str  # complete | incomplete | failed | NaN | unreadable
    step_times_s: dict[int, float] = field(default_factory=dict)
    planned_steps: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    facts_from: dict[str, str] = field(default_factory=dict)
    shape: dict[str, int] | None = None  # model shape for FLOPs (SHAPE_KEYS)
    proxy: bool | None = None
    peak_tflops_override: float | None = None
    warmup_steps: tuple[int, ...] = ()  # own runs flag their timing warm-up
    mem_peak_gib: float | None = None  # the largest per-step peak the run logged (GPU memory)
    # seconds from the run's start / from its process's start to the first finished step (own runs)
    time_to_first_step_s: float | None = None
    process_to_first_step_s: float | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _stem(name: str) -> str | None:
    for suffix in OWN_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def find_sources(paths: list[str]) -> list[Source]:
    """Runs under ``paths`` (directories are walked for ``.out``, ``.summary.json`` and
    ``.steps.jsonl`` files; a named file brings its same-stem siblings), each once."""
    groups: dict[tuple[Path, str], Source] = {}

    def add(file: Path) -> None:
        stem = _stem(file.name) or file.name
        src = groups.setdefault((file.parent, stem), Source(file.parent, stem))
        if file.name.endswith(".summary.json"):
            src.summary = file
        elif file.name.endswith(".steps.jsonl"):
            src.steps = file
        else:
            src.out = file

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for top, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if _stem(name) is not None:
                        add(Path(top) / name)
        elif path.exists() or path.is_symlink():
            add(path)
            stem = _stem(path.name)
            for suffix in OWN_SUFFIXES if stem else ():
                sibling = path.with_name(stem + suffix)  # type: ignore[operator]
                if sibling != path and sibling.is_file():
                    add(sibling)
        else:
            groups[(path.parent, path.name)] = Source(path.parent, path.name, error="no such file or directory")
    return list(groups.values())


def _positive_int(text: str | None) -> int | None:
    """A positive whole number written in ASCII digits, else None (never raises)."""
    if not text or len(text) > 18 or not (text.isascii() and text.isdigit()):
        return None
    return int(text) or None


def facts_from_path(path: Path) -> dict[str, Any]:
    """Model, dtype and GPUs from the recipe's layout and its log name."""
    facts: dict[str, Any] = {}
    parts = path.parent.parts
    if len(parts) >= 3 and _positive_int(parts[-1]) and parts[-2].lower() in tables.model_names():
        facts["gpus"] = _positive_int(parts[-1])
        facts["model"] = parts[-2].lower()
        if parts[-3].lower() in DTYPES:
            facts["dtype"] = parts[-3].lower()
    # log-<framework>_llama3.1_<model>_<gpus>_<jobid>.out
    fields = path.name.removeprefix("log-").split("_", 4)
    if path.name.startswith("log-") and len(fields) == 5 and fields[1].startswith("llama"):
        if fields[2].lower() in tables.model_names():
            facts.setdefault("model", fields[2].lower())
        if gpus := _positive_int(fields[3]):
            facts.setdefault("gpus", gpus)
    return facts


def facts_from_provenance(prov: dict[str, str]) -> dict[str, Any]:
    """The recipe's ``GSW:`` line, with the launch script's override names (GBS, NUM_LAYERS, SEQ_LEN)
    and those trainbench adds (LAYERS, GPU_TYPE)."""
    facts: dict[str, Any] = {}
    if (model := prov.get("MODEL_SIZE", "").lower()) in tables.model_names():
        facts["model"] = model
    if (dtype := prov.get("DTYPE", "").lower()) in DTYPES:
        facts["dtype"] = dtype
    nodes, per_node = _positive_int(prov.get("JOB_NUM_NODES")), _positive_int(prov.get("GPUS_PER_NODE"))
    total = _positive_int(prov.get("JOB_TOTAL_GPUS"))
    facts["gpus"] = total or (nodes * per_node if nodes and per_node else None)
    facts["gbs"] = _positive_int(prov.get("GBS"))
    facts["layers"] = _positive_int(prov.get("NUM_LAYERS") or prov.get("LAYERS"))  # launch.sh's / trainbench's
    facts["seq_len"] = _positive_int(prov.get("SEQ_LEN"))
    if (gpu_type := prov.get("GPU_TYPE", "").lower()) in gpu_table():
        facts["gpu_type"] = gpu_type
    return {k: v for k, v in facts.items() if v is not None}


def merge_facts(layers: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """First non-None value of each fact in trust order; a note for each disagreement."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    notes: list[str] = []
    for name, facts in layers:
        for key, value in facts.items():
            if value is None:
                continue
            if key not in values:
                values[key], origin[key] = value, name
            elif values[key] != value:
                notes.append(f"{key}: {name} says {value}, {origin[key]} says {values[key]}; used {values[key]}")
    return values, origin, notes


def table_facts(known: dict[str, Any], own_gpu_type: bool) -> dict[str, Any]:
    """What the recipe's tables say for the model and GPU count known so far."""
    model, gpus = known.get("model"), known.get("gpus")
    out: dict[str, Any] = {}
    if model in tables.model_names():
        row = tables.proxy_row(model, gpus) if gpus else None
        out["layers"] = row["layers"] if row else tables.preset(model)["layers"]
        out["seq_len"] = tables.preset(model)["seq_len"]
    if not own_gpu_type:
        out["gpu_type"] = RECIPE_GPU_TYPE
    return out


def _finish_facts(run: Run, layers: list[tuple[str, dict[str, Any]]]) -> None:
    """Merge fact layers, add the tables' inferences, and the model shape for FLOPs."""
    values, origin, notes = merge_facts(layers)
    inferred = table_facts(values, own_gpu_type="gpu_type" in values)
    labels = {"layers": "recipe table", "seq_len": "model preset", "gpu_type": "assumed (the recipe's hardware)"}
    for key, value in inferred.items():
        if key not in values:
            values[key], origin[key] = value, labels[key]
    run.facts = {k: values.get(k) for k in FACT_KEYS}
    run.facts_from = {k: origin[k] for k in FACT_KEYS if k in origin}
    run.notes += notes
    model = values.get("model")
    if model in tables.model_names() and run.shape is None:
        run.shape = {**{k: tables.preset(model)[k] for k in SHAPE_KEYS}, "layers": values["layers"]}
        run.shape["seq_len"] = values["seq_len"]
        run.proxy = values["layers"] < tables.preset(model)["layers"]


def log_status(log: ParsedLog, err_traceback: bool) -> str:
    """complete: the last logged step reaches the planned total; NaN: a loss or grad norm was NaN;
    failed: not complete and a traceback was printed; incomplete otherwise."""
    if log.nan:
        return "NaN"
    last = max(log.steps, default=0)
    planned = log.planned_steps
    if planned and last >= planned:
        return "complete"
    return "failed" if log.traceback or err_traceback else "incomplete"


def _err_traceback(out: Path) -> bool:
    err = out.with_suffix(".err")
    try:
        return err.is_file() and parse_file(str(err)).traceback
    except OSError:
        return False


def load_foreign(src: Source, flags: dict[str, Any]) -> Run:
    assert src.out is not None
    log = parse_file(str(src.out))
    own_out = log.provenance.get("FRAMEWORK") == FRAMEWORK or src.stem.startswith(f"log-{FRAMEWORK}_")
    run = Run(source=src.label, format="trainbench" if own_out else (log.format or "unknown"), status="incomplete")
    run.step_times_s = {s: p.step_time_s for s, p in sorted(log.steps.items())}
    run.mem_peak_gib = log_peak_gib(log)
    run.planned_steps = log.planned_steps
    run.status = log_status(log, err_traceback=False)
    if run.status == "incomplete" and _err_traceback(src.out):
        run.status = "failed"
    from_log = {**facts_from_provenance(log.provenance), "gbs": infer_gbs(log.steps)}
    _finish_facts(run, [("log", from_log), ("command line", flags), ("path", facts_from_path(src.out))])
    if log.format is None:
        run.notes.append("no step lines found (formats read: NeMo 24.09 progress bar, NeMo 2, Megatron)")
    if log.unparsed_lines:
        run.notes.append(f"{log.unparsed_lines} garbled step line(s) skipped")
    _note_gaps(run)
    return run


def log_peak_gib(log: ParsedLog) -> float | None:
    return max((p.mem_peak_gib for p in log.steps.values() if p.mem_peak_gib), default=None)


def _read_steps(path: Path, run: Run) -> tuple[dict[int, float], bool, tuple[int, ...]]:
    """Step times, whether any loss/grad norm is NaN, and the warm-up steps, from a JSONL file
    (and the run's peak memory into ``run``). A line that does not parse (a run killed
    mid-write) is skipped with a note."""
    times: dict[int, float] = {}
    nan = False
    warmup: list[int] = []
    bad = 0
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                rec = json.loads(raw)
                step, t = int(rec["step"]), float(rec["step_time_s"])
            except (ValueError, KeyError, TypeError, OverflowError):
                bad += bool(raw.strip())
                continue
            if step < 1 or not (math.isfinite(t) and t > 0):
                bad += 1
                continue
            times[step] = t
            mem = rec.get("mem_peak_gib")
            if isinstance(mem, int | float) and math.isfinite(mem) and mem > 0:  # CPU runs log 0
                run.mem_peak_gib = max(run.mem_peak_gib or 0.0, float(mem))
            nan = nan or any(isinstance(rec.get(k), float) and math.isnan(rec[k]) for k in ("loss", "grad_norm"))
            if rec.get("warmup"):
                warmup.append(step)
    if bad:
        run.notes.append(f"{bad} unreadable line(s) in {path.name} skipped")
    return dict(sorted(times.items())), nan, tuple(warmup)


OWN_STATUS = {"complete": "complete", "incomplete": "incomplete", "failed": "failed"}


def _seconds(value: Any) -> float | None:
    """A duration from a summary, or None where it is missing or not a finite non-negative number."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _read_summary(path: Path, run: Run) -> tuple[RunSummary, Plan] | tuple[None, None]:
    try:
        summary = RunSummary.read(path)
        return summary, Plan.from_dict(summary.config)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        run.notes.append(f"{path.name} unreadable ({type(exc).__name__}: {exc}); facts from elsewhere")
        return None, None


def load_own(src: Source, flags: dict[str, Any]) -> Run:
    """trainbench's run files: summary (status, config) and JSONL steps; the ``.out`` when they lack."""
    run = Run(source=src.label, format="trainbench", status="incomplete")
    summary, plan = _read_summary(src.summary, run) if src.summary is not None else (None, None)
    nan = False
    log: ParsedLog | None = None
    if src.steps is not None:
        run.step_times_s, nan, run.warmup_steps = _read_steps(src.steps, run)
    elif src.out is not None:
        log = parse_file(str(src.out))
        run.step_times_s = {s: p.step_time_s for s, p in sorted(log.steps.items())}
        run.mem_peak_gib = log_peak_gib(log)
        nan = log.nan
    layers: list[tuple[str, dict[str, Any]]] = []
    if summary is not None and plan is not None:
        m = plan.model
        run.shape = {k: getattr(m, k) for k in SHAPE_KEYS}
        run.proxy = plan.proxy
        run.peak_tflops_override = plan.peak_tflops_override
        run.planned_steps = plan.train.steps
        layers.append(
            (
                "config",
                {
                    "model": m.name,
                    "dtype": plan.dtype,
                    "gpus": plan.gpus,
                    "gbs": plan.train.gbs,
                    "layers": m.layers,
                    "seq_len": m.seq_len,
                    "gpu_type": plan.gpu_type,
                },
            )
        )
        run.time_to_first_step_s = _seconds(summary.results.get("time_to_first_step_s"))
        run.process_to_first_step_s = _seconds((summary.results.get("startup") or {}).get("process_to_first_step_s"))
        run.status = OWN_STATUS.get(summary.status, "incomplete")
        if summary.status not in OWN_STATUS:
            run.notes.append(f"summary says {summary.status!r}")
        if summary.failure:
            run.notes.append(f"failure: {summary.failure}")
    else:
        run.notes.append("no readable summary: counted incomplete")
        if log is None and src.out is not None:
            log = parse_file(str(src.out))
        if log is not None:
            run.planned_steps = log.planned_steps
            layers.append(("log", {**facts_from_provenance(log.provenance), "gbs": infer_gbs(log.steps)}))
    if nan:
        run.status = "NaN"
    path = src.out or src.summary or src.steps
    assert path is not None
    _finish_facts(run, [*layers, ("command line", flags), ("path", facts_from_path(path))])
    _note_gaps(run)
    return run


def _note_gaps(run: Run) -> None:
    if run.step_times_s:
        last = max(run.step_times_s)
        if len(run.step_times_s) < last:
            run.notes.append(f"{len(run.step_times_s)} of steps 1-{last} logged")


def load(src: Source, flags: dict[str, Any]) -> Run:
    """Read one run; any I/O problem makes an ``unreadable`` run that says why."""
    if src.error is not None:
        return Run(source=src.label, format="unknown", status="unreadable", error=src.error)
    files = [p for p in (src.out, src.steps, src.summary) if p is not None]
    for p in files:
        if not p.is_file():
            what = "no such file" if not p.exists() else "not a regular file"
            return Run(source=src.label, format="unknown", status="unreadable", error=f"{p}: {what}")
    try:
        return load_own(src, flags) if src.own else load_foreign(src, flags)
    except OSError as exc:
        return Run(source=src.label, format="unknown", status="unreadable", error=f"{exc.strerror or exc}")
