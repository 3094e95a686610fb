"""``trainbench setup``: the stage directory, a readiness report, and the container import of setup.sh.

The recipe's ``setup.sh`` imports ``nvcr.io/nvidia/nemo:24.09`` into ``$STAGE_PATH/nvidia+nemo+24.09.sqsh``
with ``enroot import``; ``import_image`` does the same for any image. The report says, for each thing
a run needs, whether it is here and what to do when it is not.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainbench.errors import ConfigError
from trainbench.launch.jobs import Runner, run_command
from trainbench.launch.sbatch import IMAGE_PATTERN

MIN_FREE_GIB = 50.0  # a NeMo image is about 20 GiB as .sqsh; the rest is room for results and traces
SLURM_PROGRAMS = {
    "sbatch": "submits jobs",
    "srun": "starts each node's task",
    "squeue": "lists queued jobs",
    "scontrol": "job states without accounting",
    "sacct": "job states from accounting (optional: trainbench jobs falls back to scontrol)",
}
Which = Callable[[str], str | None]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found
    todo: str = ""  # what to do when not ok


def torch_checks() -> list[Check]:
    """torch, CUDA, NCCL and the GPUs this process sees."""
    try:
        import torch
    except ImportError:
        hint = "pip install torch (a CUDA build on GPU machines)"
        return [Check(n, False, "torch is not installed", hint) for n in ("torch", "CUDA", "NCCL", "GPUs")]
    out = [Check("torch", True, torch.__version__)]
    cuda = torch.version.cuda
    out.append(
        Check(
            "CUDA",
            cuda is not None,
            cuda or f"torch {torch.__version__} is a CPU build",
            "" if cuda else "install a CUDA build of torch for GPU runs (CPU runs use gloo)",
        )
    )
    try:
        nccl = ".".join(map(str, torch.cuda.nccl.version())) if cuda else None
    except (RuntimeError, AttributeError):
        nccl = None
    out.append(Check("NCCL", nccl is not None, nccl or "not available", "" if nccl else "comes with a CUDA torch"))
    gpus = torch.cuda.device_count() if cuda else 0
    names = sorted({torch.cuda.get_device_name(i) for i in range(gpus)})
    out.append(
        Check(
            "GPUs",
            gpus > 0,
            f"{gpus} visible" + (f" ({', '.join(names)})" if names else ""),
            "" if gpus else "run setup on a GPU node (e.g. through srun) to see its GPUs",
        )
    )
    return out


def slurm_checks(which: Which = shutil.which, runner: Runner = run_command) -> list[Check]:
    out = []
    for prog, role in SLURM_PROGRAMS.items():
        path = which(prog)
        detail = path or "not found"
        if path and prog == "sacct":
            probe = runner(["sacct", "-n", "-X", "-S", "now", "-o", "JobID"])
            if probe.returncode != 0:  # e.g. "Slurm accounting storage is disabled"
                why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
                detail = f"{path} ({why}: trainbench jobs uses scontrol)"
        out.append(Check(prog, path is not None, detail, "" if path else f"install Slurm's client ({role})"))
    return out


def container_checks(which: Which = shutil.which, runner: Runner = run_command) -> list[Check]:
    """enroot (imports images) and pyxis (srun's --container-image): needed only with --container-image."""
    todo = "needed only for --container-image; see https://github.com/NVIDIA/{0}"
    enroot = which("enroot")
    version = runner(["enroot", "version"]).stdout.strip() if enroot else ""
    out = [
        Check("enroot", enroot is not None, version or enroot or "not found", "" if enroot else todo.format("enroot"))
    ]
    srun_help = runner(["srun", "--help"]).stdout if which("srun") else ""
    pyxis = "--container-image" in srun_help
    out.append(
        Check(
            "pyxis",
            pyxis,
            "srun has --container-image" if pyxis else "srun has no --container-image",
            "" if pyxis else todo.format("pyxis"),
        )
    )
    return out


def disk_check(stage: Path) -> Check:
    free_gib = shutil.disk_usage(stage).free / 2**30
    ok = free_gib >= MIN_FREE_GIB
    return Check(
        "disk",
        ok,
        f"{free_gib:.0f} GiB free in {stage}",
        "" if ok else f"free space or choose another STAGE_PATH (at least {MIN_FREE_GIB:.0f} GiB)",
    )


def readiness(stage: Path, which: Which = shutil.which, runner: Runner = run_command) -> list[Check]:
    python = Check("Python", True, f"{platform.python_version()} ({platform.python_implementation()})")
    return [python, *torch_checks(), *slurm_checks(which, runner), *container_checks(which, runner), disk_check(stage)]


def format_report(checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        line = f"{'ok' if c.ok else 'missing':8} {c.name:{width}}  {c.detail}"
        lines.append(line + (f"\n{'':8} {'':{width}}  -> {c.todo}" if c.todo else ""))
    return "\n".join(lines)


def prepare_stage(stage: Path) -> None:
    for sub in ("", "results", "profile", "trainbench"):
        (stage / sub).mkdir(parents=True, exist_ok=True)


def enroot_uri(image: str) -> str:
    """``nvcr.io/nvidia/nemo:24.09`` -> ``docker://nvcr.io#nvidia/nemo:24.09`` (enroot names the registry with #)."""
    if "://" in image:
        return image
    if "#" in image:  # already enroot's (and pyxis') registry#image form
        return f"docker://{image}"
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return f"docker://{first}#{rest}"
    return f"docker://{image}"


def sqsh_name(image: str) -> str:
    """The file enroot and the recipe give an image: ``nvidia+nemo+24.09.sqsh`` for nvcr.io/nvidia/nemo:24.09."""
    uri = enroot_uri(image)
    path = uri.split("://", 1)[1]
    path = path.split("#", 1)[1] if "#" in path else path
    path = path.split("@", 1)[1] if "@" in path.split("/")[0] else path  # a user@ before the image
    return re.sub(r"[/:]", "+", path) + ".sqsh"


def import_image(image: str, stage: Path, which: Which = shutil.which) -> tuple[Path, bool]:
    """Import ``image`` into ``<stage>/<name>.sqsh``; returns the file and whether it was imported now."""
    if not IMAGE_PATTERN.fullmatch(image) or image.startswith("-"):
        raise ConfigError(f"image {image!r} may hold only letters, digits and . _ / : @ # + -")
    if image.endswith(".sqsh"):
        raise ConfigError(f"{image} is already a .sqsh file: pass it to trainbench submit --container-image")
    target = stage / sqsh_name(image)
    if target.exists():
        return target, False
    if which("enroot") is None:
        raise ConfigError(
            f"enroot is not installed here, so {image} cannot be imported; install enroot "
            f"(https://github.com/NVIDIA/enroot) or import on a machine that has it into {target}"
        )
    proc = subprocess.run(["enroot", "import", "--output", str(target), enroot_uri(image)], check=False)
    if proc.returncode != 0:
        raise ConfigError(f"enroot import of {image} failed (exit {proc.returncode}); see its output above")
    return target, True
