"""From a submit request to jobs on the scheduler: plan every cell (pure), then a thin executor.

A request names one or more cells (models x dtypes x GPU counts) and a repeat count; ``plan_jobs``
resolves and checks all of them before anything is submitted and reports every problem of every
cell at once. ``submit_jobs`` then, per job: creates its run directory (Slurm opens the log there
before the job starts), writes its script under ``<stage>/trainbench/scripts/``, runs
``sbatch --parsable <script>`` and appends the job to the history.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml
from omegaconf.errors import OmegaConfBaseException

from trainbench.errors import ConfigError
from trainbench.launch.jobs import JobRecord, Runner, append_record, run_command
from trainbench.launch.sbatch import JobSpec, LaunchOptions, check_cell, check_options, render
from trainbench.recipe.resolve import resolve

DEFAULT_STEPS = 50  # the recipe runs 50 steps


@dataclass
class SubmitRequest:
    """What ``trainbench submit`` was asked, environment defaults already applied."""

    models: list[str]
    dtypes: list[str]
    gpus: list[int]
    stage_path: str
    python: str
    code_dir: str
    repeats: int = 1
    gpu_type: str = "h100"
    steps: int | None = None  # None: train.steps from the overrides, else the recipe's 50
    gpus_per_node: int = 8
    request_gpus: bool = True
    results_dir: str | None = None  # default <stage>/results
    profile_dir: str | None = None  # default <stage>/profile
    profile: bool = False
    account: str | None = None
    partition: str | None = None
    time_limit: str = "1:00:00"
    job_name: str | None = None  # default trainbench_llama3.1_<model>_<dtype>_<gpus>[_profile]
    singleton: bool = True
    container_image: str | None = None
    container_mounts: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    sbatch_args: list[str] = field(default_factory=list)
    srun_args: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedJob:
    spec: JobSpec
    repeat: int  # 1-based
    repeats: int

    @property
    def cell(self) -> str:
        p = self.spec.plan
        return f"{self.spec.model} {p.dtype} {p.gpus} GPUs" + (" (profile)" if self.spec.options.profile else "")

    @property
    def label(self) -> str:
        return self.cell + (f", repeat {self.repeat} of {self.repeats}" if self.repeats > 1 else "")


def plan_jobs(req: SubmitRequest) -> list[PlannedJob]:
    """Every job of the request, resolved and checked; ConfigError lists all problems of all cells."""
    problems: list[str] = []
    if req.repeats < 1:
        problems.append(f"--repeats must be at least 1, got {req.repeats}")
    if req.steps is not None and req.steps < 1:
        problems.append(f"--steps must be positive, got {req.steps}")
    cells = list(itertools.product(req.models, req.dtypes, req.gpus))
    dupes = sorted({c for c in cells if cells.count(c) > 1})
    if dupes:
        problems.append(f"cells given twice: {', '.join(' '.join(map(str, c)) for c in dupes)}; use --repeats")
    options = launch_options(req)
    problems += check_options(options)
    specs: list[JobSpec] = []
    for model, dtype, gpus in dict.fromkeys(cells):
        prefix = f"{model} {dtype} {gpus} GPUs: " if len(cells) > 1 else ""
        try:
            plan = resolve(model, gpus, dtype, req.gpu_type, req.overrides)
        except ConfigError as exc:
            problems += [prefix + r for r in exc.reasons]
            continue
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            # resolve() lets these through for values OmegaConf cannot read (``${PATH}``, backquotes).
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problems.append(f"{prefix}an override value cannot be read as an OmegaConf value: {first}")
            continue
        if req.steps is not None:
            plan.train.steps = req.steps
        spec = JobSpec(plan=plan, model=model.lower(), options=options)
        problems += [prefix + r for r in check_cell(spec)]
        specs.append(spec)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))  # cells share most problems: say each once
    return [PlannedJob(s, r, req.repeats) for s in specs for r in range(1, req.repeats + 1)]


def launch_options(req: SubmitRequest) -> LaunchOptions:
    stage = os.path.abspath(req.stage_path)
    if req.profile:
        root = os.path.abspath(req.profile_dir) if req.profile_dir else f"{stage}/profile"
    else:
        root = os.path.abspath(req.results_dir) if req.results_dir else f"{stage}/results"
    return LaunchOptions(
        stage_path=stage,
        results_root=root,
        python=req.python,
        code_dir=req.code_dir,
        gpus_per_node=req.gpus_per_node,
        request_gpus=req.request_gpus,
        job_name=req.job_name,
        time_limit=req.time_limit,
        account=req.account,
        partition=req.partition,
        singleton=req.singleton,
        profile=req.profile,
        container_image=req.container_image,
        container_mounts=tuple(req.container_mounts),
        env=tuple(req.env.items()),
        sbatch_args=tuple(req.sbatch_args),
        srun_args=tuple(req.srun_args),
        overrides=tuple(req.overrides),
    )


def dry_run_text(jobs: list[PlannedJob]) -> str:
    """The scripts that would be submitted; one per cell (repeats share theirs)."""
    firsts = [j for j in jobs if j.repeat == 1]
    if len(firsts) == 1:
        return render(firsts[0].spec)
    parts = []
    for n, job in enumerate(firsts, 1):
        times = f", submitted {job.repeats} times" if job.repeats > 1 else ""
        parts.append(f"# ===== script {n} of {len(firsts)}: {job.cell}{times} =====\n{render(job.spec)}")
    return "\n".join(parts)


def submit_jobs(jobs: list[PlannedJob], runner: Runner = run_command, now: datetime | None = None) -> list[JobRecord]:
    """Submit each job with sbatch and record it; stops at the first refusal (earlier jobs stay submitted)."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    records: list[JobRecord] = []
    for job in jobs:
        spec = job.spec
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)  # Slurm opens the .out before the job runs
        script = write_script(spec, stamp)
        proc = runner(["sbatch", "--parsable", str(script)])
        if proc.returncode != 0:
            script.unlink()
            done = ", ".join(r.job_id for r in records)
            raise ConfigError(
                f"sbatch refused {job.label}: {proc.stderr.strip() or f'exit {proc.returncode}'}"
                + (f" (already submitted: {done})" if done else "")
            )
        job_id = proc.stdout.strip().split(";")[0]
        record = JobRecord(
            job_id=job_id,
            submitted_at=now.isoformat(timespec="seconds"),
            job_name=spec.job_name,
            model=spec.model,
            dtype=spec.plan.dtype,
            gpus=spec.plan.gpus,
            nodes=spec.nodes,
            repeat=job.repeat,
            repeats=job.repeats,
            profile=spec.options.profile,
            run_dir=spec.run_dir,
            out=spec.log_path(job_id),
            err=spec.log_path(job_id, ".err"),
            script=str(script),
            campaign=stamp,
            overrides=list(spec.options.overrides),
            container_image=spec.options.container_image,
        )
        append_record(spec.options.stage_path, record)
        records.append(record)
    return records


def write_script(spec: JobSpec, stamp: str) -> Path:
    folder = Path(spec.options.stage_path) / "trainbench" / "scripts"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{stamp}_{spec.job_name}_", suffix=".sbatch", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(render(spec))
    return Path(name)
