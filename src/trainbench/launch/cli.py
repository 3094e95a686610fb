"""``trainbench submit``, ``setup`` and ``jobs``: arguments and the recipe's environment in, library calls out."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import trainbench
from trainbench.errors import ConfigError
from trainbench.launch import jobs as jobs_lib
from trainbench.launch import setup as setup_lib
from trainbench.launch.env import defaults_from_env, merge_overrides, parse_env_assignments
from trainbench.launch.submit import SubmitRequest, dry_run_text, plan_jobs, submit_jobs


def register(sub: Any) -> None:
    """Add submit, setup and jobs to ``trainbench``'s subparsers."""
    env_note = "Defaults come from the recipe's environment variables; options win."
    p = sub.add_parser(
        "submit",
        help="render an sbatch script for recipe cells and submit it",
        description=f"Render the recipe's sbatch job for each cell and submit it. {env_note}",
    )
    p.add_argument("--model", help="preset(s), comma-separated: tiny, 8b, 70b, 405b (default $MODEL_SIZE)")
    p.add_argument("--dtype", help="bf16 and/or fp8, comma-separated (default $DTYPE, else fp8)")
    p.add_argument("--gpus", required=True, help="total GPUs per job, comma-separated for a campaign: 576,1152,2304")
    p.add_argument("--repeats", type=int, default=1, help="jobs per cell, each with its own results (default 1)")
    p.add_argument("--gpu-type", default="h100", help="peak-FLOPS table key (default h100, the recipe's)")
    p.add_argument("--steps", type=int, help="training steps (default $MAX_STEPS, else 50)")
    p.add_argument(
        "--gpus-per-node", type=int, help="GPUs (worker processes) per node (default $SLURM_GPUS_PER_NODE, else 8)"
    )
    p.add_argument(
        "--no-gpu-request",
        action="store_true",
        help="do not ask Slurm for GPUs (--gpus-per-node); as SLURM_GPUS_PER_NODE=null",
    )
    p.add_argument("--stage-path", help="shared directory for results, scripts and history (default $STAGE_PATH)")
    p.add_argument("--results-dir", help="results root (default <stage>/results)")
    p.add_argument("--profile-dir", help="results root of --profile runs (default <stage>/profile)")
    p.add_argument(
        "--profile",
        action="store_true",
        default=None,
        help="the recipe's profiling variant: trace steps 20-30, results kept apart (default $ENABLE_PROFILE)",
    )
    p.add_argument("-A", "--account", help="Slurm account (default $SLURM_ACCOUNT)")
    p.add_argument("-p", "--partition", help="Slurm partition (default $SLURM_PARTITION)")
    p.add_argument("-t", "--time", default="1:00:00", help="time limit (default 1:00:00, the recipe's)")
    p.add_argument("-J", "--job-name", help="job name (default trainbench_llama3.1_<model>_<dtype>_<gpus>)")
    p.add_argument("--no-singleton", action="store_true", help="drop --dependency=singleton (the recipe's)")
    p.add_argument("--container-image", help="run in this container through pyxis: a .sqsh file or an image URI")
    p.add_argument(
        "--container-mount",
        action="append",
        default=[],
        metavar="SRC:DST[:FLAGS]",
        help="one more container mount (repeatable)",
    )
    p.add_argument("--python", help="Python on the nodes (default: this one; 'python' inside a container)")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="export this in the job (repeatable; secrets refused: export them in your shell)",
    )
    p.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="OPT",
        help="extra sbatch option, e.g. --sbatch-arg=--qos=high (repeatable)",
    )
    p.add_argument(
        "--srun-arg",
        action="append",
        default=[],
        metavar="OPT",
        help="extra srun option, e.g. --srun-arg=--mpi=pmix (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the script(s); submit nothing")
    p.add_argument("--json", action="store_true", help="print the submitted jobs as JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. parallel.tp=4 train.gbs=64")
    p.set_defaults(func=cmd_submit)

    s = sub.add_parser("setup", help="create the stage directory, report readiness, import a container image")
    s.add_argument("--stage-path", help="the stage directory (default $STAGE_PATH)")
    s.add_argument(
        "--image", help="import this image into <stage>/<name>.sqsh with enroot, e.g. nvcr.io/nvidia/nemo:24.09"
    )
    s.set_defaults(func=cmd_setup)

    j = sub.add_parser("jobs", help="jobs trainbench submitted, with their state from Slurm")
    j.add_argument("--stage-path", help="where the history is (default $STAGE_PATH)")
    j.add_argument("--last", type=int, default=20, help="show the newest N jobs (default 20)")
    j.add_argument("--all", action="store_true", help="show every job of the history")
    j.add_argument("--json", action="store_true", help="print one JSON array")
    j.add_argument("job_ids", nargs="*", metavar="JOBID", help="only these jobs")
    j.set_defaults(func=cmd_jobs)


def _stage(args: argparse.Namespace, environ: Mapping[str, str]) -> Path:
    stage = args.stage_path or (environ.get("STAGE_PATH") or "").strip()
    if not stage:
        raise ConfigError("no stage directory: pass --stage-path or export STAGE_PATH (a shared filesystem path)")
    return Path(os.path.abspath(stage))


def _list(value: str | None, what: str) -> list[str]:
    items = [v.strip().lower() for v in (value or "").split(",") if v.strip()]
    if not items:
        raise ConfigError(f"{what} is empty")
    return items


def _sets(overrides: list[str], key: str) -> bool:
    return any(item.partition("=")[0].strip() == key for item in overrides)


def request_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> SubmitRequest:
    """The submit request: options, else the recipe's environment variables, else the recipe's defaults."""
    problems: list[str] = []
    try:
        env = defaults_from_env(environ)
    except ConfigError as exc:
        problems += exc.reasons
        env = defaults_from_env({})
    model = args.model or env.model
    if not model:
        problems.append("no model: pass --model (e.g. --model 405b) or export MODEL_SIZE, as the recipe asks")
    gpus = []
    for item in (args.gpus or "").split(","):
        if item.strip().isdigit() and int(item) > 0:
            gpus.append(int(item))
        else:
            problems.append(f"--gpus {args.gpus!r}: give positive whole numbers, comma-separated")
            break
    job_env, env_problems = parse_env_assignments(args.env)
    problems += env_problems
    stage = None
    try:
        stage = _stage(args, environ)
    except ConfigError as exc:
        problems += exc.reasons
    if problems:
        raise ConfigError(problems)
    assert stage is not None
    image = args.container_image
    if image and (image.endswith(".sqsh") or (os.path.sep in image and os.path.exists(image))):
        image = os.path.abspath(image)  # pyxis takes files by absolute path
        if not args.dry_run and not os.path.isfile(image):
            raise ConfigError(f"container image {image} does not exist; import one with trainbench setup --image")
    return SubmitRequest(
        models=_list(model, "--model"),
        dtypes=_list(args.dtype or env.dtype or "fp8", "--dtype"),
        gpus=gpus,
        stage_path=str(stage),
        python=args.python or ("python" if image else sys.executable),
        code_dir=str(Path(trainbench.__file__).resolve().parent),
        repeats=args.repeats,
        gpu_type=args.gpu_type,
        steps=args.steps if args.steps is not None or _sets(args.overrides, "train.steps") else env.steps,
        gpus_per_node=args.gpus_per_node if args.gpus_per_node is not None else env.gpus_per_node or 8,
        request_gpus=not args.no_gpu_request and env.request_gpus,
        results_dir=args.results_dir,
        profile_dir=args.profile_dir,
        profile=args.profile if args.profile is not None else env.profile,
        account=args.account or env.account,
        partition=args.partition or env.partition,
        time_limit=args.time,
        job_name=args.job_name,
        singleton=not args.no_singleton,
        container_image=image,
        container_mounts=args.container_mount,
        env=job_env,
        sbatch_args=args.sbatch_arg,
        srun_args=args.srun_arg,
        overrides=merge_overrides(env.overrides, args.overrides),
    )


def cmd_submit(args: argparse.Namespace) -> int:
    planned = plan_jobs(request_from_args(args, os.environ))
    if args.dry_run:
        print(dry_run_text(planned), end="")
        return 0
    records = submit_jobs(planned)
    if args.json:
        print(json.dumps([asdict(r) for r in records], indent=2))
        return 0
    for r in records:
        repeat = f", repeat {r.repeat}/{r.repeats}" if r.repeats > 1 else ""
        print(f"submitted {r.job_id}: {r.cell} ({r.nodes} node{'s' * (r.nodes > 1)}{repeat}) -> {r.out}")
    stage = planned[0].spec.options.stage_path
    print(f"history: {jobs_lib.history_path(stage)}; follow with: trainbench jobs --stage-path {shlex.quote(stage)}")
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    stage = _stage(args, os.environ)
    setup_lib.prepare_stage(stage)
    print(f"stage directory: {stage}")
    print(setup_lib.format_report(setup_lib.readiness(stage)))
    if args.image:
        target, imported = setup_lib.import_image(args.image, stage)
        print(f"{'imported' if imported else 'already there'}: {target}")
        print(f"submit with: trainbench submit --container-image {target} ...")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    stage = _stage(args, os.environ)
    records = jobs_lib.read_records(stage)
    if args.job_ids:
        records = [r for r in records if r.job_id in set(args.job_ids)]
    elif not args.all:
        records = records[-args.last :] if args.last > 0 else []
    states = jobs_lib.query_states(r.job_id for r in records)
    if args.json:
        print(json.dumps(jobs_lib.as_json(records, states), indent=2))
    elif records:
        print(jobs_lib.table(records, states))
    else:
        print(f"no jobs in {jobs_lib.history_path(stage)}")
    return 0
