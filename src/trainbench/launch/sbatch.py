"""The sbatch script of one job: a pure function of a validated ``JobSpec``.

The script is the recipe's ``launch.sh`` in trainbench's terms: the same ``#SBATCH`` header
(job name, ``--exclusive``, ``--mem=0``, time limit, ``--dependency=singleton``, account, partition,
GPUs per node), the same job environment, the same results layout and log names, and the same pyxis
options when a container image is given. One difference, on purpose: one Slurm task per node
instead of one per GPU. ``trainbench run`` starts the node's workers through torchrun, which
supervises them, gives each its local rank and stops the node's workers as soon as one fails; srun's
``--kill-on-bad-exit`` then stops the other nodes. Workers meet at the allocation's first node.

Every user value that reaches the script is validated (``check``) and quoted on the way out:
``shlex.quote`` in the shell body, Slurm's own double-quote escaping in ``#SBATCH`` lines (which
sbatch parses, not the shell). Control characters are refused everywhere, so no value can end a line.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainbench import __version__
from trainbench.config import Plan
from trainbench.launch.env import ENV_NAME, is_secret_name, job_environment, mentions_secret
from trainbench.train.records import FRAMEWORK, run_dir

CONTAINER_CODE_ROOT = "/opt/trainbench"  # trainbench's package is mounted below this inside a container
PROFILE_STEPS = (20, 30)  # the recipe's profiling window
JOB_ID = "\x00SLURM_JOB_ID"  # stands for the job id in an argv; no user value holds a control character
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
IMAGE_PATTERN = re.compile(r"[A-Za-z0-9._/:@#+-]+")
_SLURM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._,-]{0,127}")  # account, partition (a comma list)
_TIME = re.compile(r"(?:\d+-)?\d+(?::\d+){0,2}|UNLIMITED|INFINITE|unlimited|infinite")
_OVERRIDE_KEY = re.compile(r"[a-z_]+\.[a-z0-9_]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SBATCH_BARE = re.compile(r"[A-Za-z0-9_./:@%+=,-]+")
# Options that would break the one-task-per-node layout or move the logs away from the results,
# with the trainbench option to use instead.
RESERVED_SBATCH: dict[str, str | None] = {
    "-N": "--gpus", "--nodes": "--gpus", "-n": None, "--ntasks": None, "--ntasks-per-node": None,
    "-o": "--results-dir", "--output": "--results-dir", "-e": "--results-dir", "--error": "--results-dir",
    "-J": "--job-name", "--job-name": "--job-name", "--wrap": None,
}  # fmt: skip
RESERVED_SRUN: dict[str, str | None] = {"-n": None, "--ntasks": None, "--ntasks-per-node": None, "-N": None,
                                        "--nodes": None}  # fmt: skip


@dataclass(frozen=True)
class LaunchOptions:
    """How to launch, shared by every job of one submit command; checked without any plan."""

    stage_path: str
    results_root: str  # <stage>/results, or <stage>/profile for the profiling variant
    python: str = "python"
    code_dir: str = ""  # the trainbench package directory, mounted into a container
    gpus_per_node: int = 8
    request_gpus: bool = True  # ask Slurm for the GPUs (--gpus-per-node); off where GPUs are no gres
    job_name: str | None = None  # None: trainbench_llama3.1_<model>_<dtype>_<gpus>[_profile]
    time_limit: str = "1:00:00"
    account: str | None = None
    partition: str | None = None
    singleton: bool = True
    profile: bool = False
    container_image: str | None = None
    container_mounts: tuple[str, ...] = ()  # extra SRC:DST[:FLAGS]
    env: tuple[tuple[str, str], ...] = ()  # the user's --env, on top of the recipe's job environment
    sbatch_args: tuple[str, ...] = ()
    srun_args: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()  # key=value, handed to ``trainbench run`` as given


@dataclass(frozen=True)
class JobSpec:
    """One job: a resolved cell and how to launch it. ``model`` is the preset name the user asked for."""

    plan: Plan
    model: str
    options: LaunchOptions

    @property
    def job_name(self) -> str:
        profile = "_profile" if self.options.profile else ""
        return self.options.job_name or f"trainbench_llama3.1_{self.model}_{self.plan.dtype}_{self.plan.gpus}{profile}"

    @property
    def nodes(self) -> int:
        return max(1, self.plan.gpus // self.options.gpus_per_node)

    @property
    def nproc_per_node(self) -> int:
        return min(self.plan.gpus, self.options.gpus_per_node)

    @property
    def run_dir(self) -> str:
        return str(run_dir(Path(self.options.results_root), self.plan.dtype, self.model, self.plan.gpus))

    def log_path(self, job_id: str, suffix: str = ".out") -> str:
        """``<run dir>/log-trainbench_llama3.1_<model>_<gpus>_<job id>.out``: the recipe's name, our framework."""
        return f"{self.run_dir}/log-{FRAMEWORK}_llama3.1_{self.model}_{self.plan.gpus}_{job_id}{suffix}"


def check(spec: JobSpec) -> list[str]:
    """Every problem with ``spec``; empty when it may be rendered and submitted."""
    return check_options(spec.options) + check_cell(spec)


def check_cell(spec: JobSpec) -> list[str]:
    """The problems of this cell with these options (those of the options alone: ``check_options``)."""
    out: list[str] = []
    gpus, per_node = spec.plan.gpus, spec.options.gpus_per_node
    if per_node >= 1 and gpus > per_node and gpus % per_node:
        out.append(f"--gpus {gpus} is not a whole number of {per_node}-GPU nodes; give a multiple of {per_node}")
    if spec.options.profile and spec.plan.train.steps < PROFILE_STEPS[1]:
        out.append(
            f"--profile traces steps {PROFILE_STEPS[0]}-{PROFILE_STEPS[1]}: --steps must be at least "
            f"{PROFILE_STEPS[1]}, got {spec.plan.train.steps}"
        )
    return out


def check_options(o: LaunchOptions) -> list[str]:
    """Every problem with the launch options, each a sentence."""
    out: list[str] = []
    if o.gpus_per_node < 1:
        out.append(f"--gpus-per-node must be positive, got {o.gpus_per_node}")
    if o.job_name is not None and not JOB_NAME.fullmatch(o.job_name):
        out.append(f"job name {o.job_name!r} may hold only letters, digits, '.', '_' and '-' (at most 128)")
    for what, value in (("account", o.account), ("partition", o.partition)):
        if value is not None and not _SLURM_NAME.fullmatch(value):
            out.append(f"{what} {value!r} may hold only letters, digits, '.', '_', '-' and ','")
    if not _TIME.fullmatch(o.time_limit):
        out.append(f"time limit {o.time_limit!r} is not a Slurm time ([days-]hours:minutes:seconds or minutes)")
    container = o.container_image is not None
    for what, path in (("stage path", o.stage_path), ("results directory", o.results_root)):
        out += _path_problems(what, path, in_mount=container)
    if _CONTROL.search(o.python):
        out.append("--python may not contain control characters")
    if container:
        out += _container_problems(o)
    for item in o.overrides:
        key, _, value = item.partition("=")
        if not _OVERRIDE_KEY.fullmatch(key) or _CONTROL.search(value):
            out.append(f"override {item!r} must be section.key=value without control characters")
    for name, value in o.env:
        if not ENV_NAME.fullmatch(name):
            out.append(f"environment variable name {name!r} is not a shell variable name")
        elif is_secret_name(name):
            out.append(f"environment variable {name} looks like a secret: never written into a script")
        elif _CONTROL.search(value):
            out.append(f"environment variable {name}: its value may not contain control characters")
    out += _extra_problems("--sbatch-arg", o.sbatch_args, RESERVED_SBATCH)
    out += _extra_problems("--srun-arg", o.srun_args, RESERVED_SRUN)
    return out


def _path_problems(what: str, path: str, *, in_mount: bool) -> list[str]:
    if not path.startswith("/"):
        return [f"{what} {path!r} must be absolute"]
    if _CONTROL.search(path) or "%" in path:
        return [f"{what} {path!r} may not contain control characters or '%' (a Slurm file-name pattern)"]
    if in_mount and ("," in path or ":" in path):
        return [f"{what} {path!r} may not contain ',' or ':' when mounted into a container"]
    return []


def _container_problems(o: LaunchOptions) -> list[str]:
    out: list[str] = []
    image = o.container_image or ""
    if not IMAGE_PATTERN.fullmatch(image) or image.startswith("-"):
        out.append(f"container image {image!r} may hold only letters, digits and . _ / : @ # + -")
    elif re.search(r"//[^/@#]*:[^/@#]*@", image):
        out.append("container image URI may not carry a password; log in through enroot's credentials file")
    for mount in o.container_mounts:
        parts = mount.split(":")
        if _CONTROL.search(mount) or "," in mount or " " in mount or not 2 <= len(parts) <= 3:
            out.append(f"container mount {mount!r} must be SRC:DST[:FLAGS] without spaces or commas")
        elif not (parts[0].startswith("/") and parts[1].startswith("/")):
            out.append(f"container mount {mount!r}: SRC and DST must be absolute paths")
    if not o.code_dir.startswith("/") or _CONTROL.search(o.code_dir) or "," in o.code_dir or ":" in o.code_dir:
        out.append(f"trainbench's code directory {o.code_dir!r} cannot be mounted into a container")
    return out


def _extra_problems(flag: str, args: tuple[str, ...], reserved: Mapping[str, str | None]) -> list[str]:
    out: list[str] = []
    for arg in args:
        name = arg.partition("=")[0]
        short = name[:2] if not name.startswith("--") else name  # -N4 is -N
        if not arg.startswith("-") or _CONTROL.search(arg):
            out.append(f"{flag} {arg!r} must be one option starting with '-', without control characters")
        elif mentions_secret(arg):
            out.append(f"{flag} {name}=...: sets a secret-named variable; secrets are never written into a script")
        elif short in reserved:
            instead = reserved[short]
            use = f"; use trainbench's {instead}" if instead else ""
            out.append(f"{flag} {short} would break the job's one-task-per-node layout or its log place{use}")
    return out


def sbatch_quote(value: str) -> str:
    """A value as sbatch reads it back from a ``#SBATCH`` line: bare when plain, else double-quoted."""
    assert not _CONTROL.search(value), "control characters are refused by check()"
    if _SBATCH_BARE.fullmatch(value):
        return value
    return '"' + re.sub(r'(["\\])', r"\\\1", value) + '"'


def container_mounts(spec: JobSpec) -> str:
    """pyxis ``--container-mounts``: the stage and results directories at their own paths, trainbench's code."""
    o = spec.options
    mounts = [f"{o.stage_path}:{o.stage_path}"]
    if not (o.results_root + "/").startswith(o.stage_path.rstrip("/") + "/"):
        mounts.append(f"{o.results_root}:{o.results_root}")
    mounts.append(f"{o.code_dir}:{CONTAINER_CODE_ROOT}/trainbench:ro")
    return ",".join(mounts + list(o.container_mounts))


def run_groups(spec: JobSpec) -> list[list[str]]:
    """What each node's task runs, in the script's line groups; ``JOB_ID`` stands for ``"$SLURM_JOB_ID"``."""
    plan, o = spec.plan, spec.options
    cell = ["--model", spec.model, "--gpus", str(plan.gpus), "--dtype", plan.dtype, "--gpu-type", plan.gpu_type]
    cell += ["--steps", str(plan.train.steps)]
    where = ["--results-dir", o.results_root, "--run-id", JOB_ID, "--nproc-per-node", str(spec.nproc_per_node)]
    if o.profile:
        where += ["--profile", f"{PROFILE_STEPS[0]}:{PROFILE_STEPS[1]}"]
    groups = [[o.python, "-m", "trainbench", "run"], cell, where]
    return [*groups, list(o.overrides)] if o.overrides else groups


def sbatch_options(spec: JobSpec) -> list[str]:
    o = spec.options
    out = [f"--job-name={spec.job_name}", f"--nodes={spec.nodes}", "--ntasks-per-node=1"]
    if o.request_gpus:
        out.append(f"--gpus-per-node={spec.nproc_per_node}")
    out += ["--exclusive", "--mem=0", f"--time={o.time_limit}"]
    if o.singleton:
        out.append("--dependency=singleton")
    if o.account:
        out.append(f"--account={o.account}")
    if o.partition:
        out.append(f"--partition={o.partition}")
    out += [f"--output={spec.log_path('%j')}", f"--error={spec.log_path('%j', '.err')}"]
    return out + list(o.sbatch_args)


def render(spec: JobSpec) -> str:
    """The sbatch script for ``spec`` (which ``check`` found clean)."""
    problems = check(spec)
    assert not problems, problems
    plan, p, o = spec.plan, spec.plan.parallel, spec.options
    header = [
        "#!/bin/bash",
        f"# Llama 3.1 {spec.model}, {plan.dtype}, {plan.gpus} GPUs ({spec.nodes} x {spec.nproc_per_node}): "
        f"the recipe's DTYPE={plan.dtype} MODEL_SIZE={spec.model} sbatch -N {spec.nodes} launch.sh",
        f"# TP {p.tp}, PP {p.pp}, VP {p.vp or 'none'}, CP {p.cp}, DP {plan.dp}; GBS {plan.train.gbs}, "
        f"MBS {plan.train.mbs}, {plan.model.layers} layers, {plan.train.steps} steps"
        + (" (proxy)" if plan.proxy else "")
        + (f"; profiling steps {PROFILE_STEPS[0]}-{PROFILE_STEPS[1]}" if o.profile else ""),
        f"# Rendered by trainbench {__version__}; submit with: sbatch <this file>",
        *(f"#SBATCH {sbatch_quote(option)}" for option in sbatch_options(spec)),
    ]
    env = [f"export {k}={shlex.quote(v)}" for k, v in job_environment(spec.model, dict(o.env)).items()]
    rendezvous = [
        "# One task per node: torchrun, inside trainbench run, starts this node's workers and gives them",
        "# their local ranks; every node meets at the allocation's first node.",
        "# (sed, not head: head would stop reading early and, under pipefail, fail the job with SIGPIPE)",
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
        "MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))",
        "export MASTER_ADDR MASTER_PORT",
        "# Slurm writes the job's stdout into this .out (through srun's pipes): trainbench run prints its",
        "# log lines rather than opening the file a second time.",
        f'export TRAINBENCH_JOB_OUT={shlex.quote(spec.log_path("", suffix=""))}"$SLURM_JOB_ID".out',
    ]
    srun = [["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]]
    if o.container_image is not None:
        srun += [
            [f"--container-image={o.container_image}"],
            [f"--container-mounts={container_mounts(spec)}"],
            ["--container-writable"],
            ["--no-container-mount-home"],
            [f"--export=ALL,PYTHONPATH={CONTAINER_CODE_ROOT}"],
        ]
    srun += [[a] for a in o.srun_args] + run_groups(spec)
    srun_text = " \\\n    ".join(" ".join(_shell_word(w) for w in group) for group in srun)
    return "\n".join([*header, "", "set -euo pipefail", "", *env, "", *rendezvous, "", srun_text, ""])


def _shell_word(word: str) -> str:
    return '"$SLURM_JOB_ID"' if word == JOB_ID else shlex.quote(word)
