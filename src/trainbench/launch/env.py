"""The recipe's environment: variables users already export (as defaults), the job's environment, secrets.

Recipe users launch with ``DTYPE=fp8 MODEL_SIZE=405b sbatch ... launch.sh`` and keep ``STAGE_PATH``,
``SLURM_ACCOUNT``, ``SLURM_PARTITION`` and ``SLURM_GPUS_PER_NODE`` in their shell; ``defaults_from_env``
reads the same names so that ``trainbench submit`` works with that shell unchanged. Command-line options
win over every one of them.

Secrets (``HF_TOKEN`` and anything named like a token, key, password or secret) reach a job only
through the submitting process's environment, which sbatch passes on by itself; they are never
written into a script, a log or the job history.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trainbench.errors import ConfigError

# What the recipe's launch.sh exports for every job (recipe_facts.md, "How the recipe is run").
RECIPE_JOB_ENV: dict[str, str] = {
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    "TORCH_NCCL_AVOID_RECORD_STREAMS": "1",
    "NCCL_NVLS_ENABLE": "0",
    "PYTHONUNBUFFERED": "1",
    "TOKENIZERS_PARALLELISM": "False",
}
MODEL_JOB_ENV: dict[str, dict[str, str]] = {"405b": {"NCCL_P2P_NET_CHUNKSIZE": "262144"}}

# The recipe's optional overrides through the environment, as trainbench override keys.
ENV_OVERRIDES: dict[str, str] = {
    "TP": "parallel.tp",
    "PP": "parallel.pp",
    "VP": "parallel.vp",
    "CP": "parallel.cp",
    "GBS": "train.gbs",
    "NUM_LAYERS": "model.layers",
    "SEQ_LEN": "model.seq_len",
}

# A name part (between underscores) that is, or ends in, a secret's word: HF_TOKEN, WANDB_API_KEY,
# AWS_SECRET_ACCESS_KEY, DB_PASSWORD, GHTOKEN; not TOKENIZERS_PARALLELISM, not KEYBOARD.
_SECRET = re.compile(
    r"(?:^|_)(?:[A-Z0-9]*(?:TOKEN|PASSWORD|PASSWD|SECRET|APIKEY|ACCESSKEY)|KEY|CREDENTIALS?)S?(?:_|$)", re.IGNORECASE
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NULLS = ("", "null", "none")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def is_secret_name(name: str) -> bool:
    """True for ``HF_TOKEN``, ``WANDB_API_KEY``, ``DB_PASSWORD`` and the like."""
    return bool(_SECRET.search(name))


def mentions_secret(text: str) -> bool:
    """True when ``text`` assigns a secret-named variable anywhere (``--export=ALL,HF_TOKEN=x``)."""
    return any(is_secret_name(m.group(1)) for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)=", text))


@dataclass
class EnvDefaults:
    """Defaults for ``trainbench submit`` read from the recipe's environment variables (None: not set)."""

    model: str | None = None
    dtype: str | None = None
    stage_path: str | None = None
    account: str | None = None
    partition: str | None = None
    gpus_per_node: int | None = None
    request_gpus: bool = True  # SLURM_GPUS_PER_NODE=null: the cluster has no GPU gres to ask for
    steps: int | None = None
    profile: bool = False
    overrides: list[str] = field(default_factory=list)


def defaults_from_env(environ: Mapping[str, str]) -> EnvDefaults:
    """The recipe's variables in ``environ`` as submit defaults; every malformed one reported at once."""
    problems: list[str] = []
    out = EnvDefaults()

    def text(name: str) -> str | None:
        value = environ.get(name)
        return value.strip() if value is not None and value.strip() else None

    def whole(name: str) -> int | None:
        value = text(name)
        if value is None:
            return None
        if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
            problems.append(f"environment variable {name}={value!r} must be a positive whole number")
            return None
        return int(value)

    out.model = (text("MODEL_SIZE") or "").lower() or None
    out.dtype = (text("DTYPE") or "").lower() or None
    out.stage_path = text("STAGE_PATH")
    out.account = text("SLURM_ACCOUNT")
    out.partition = text("SLURM_PARTITION")
    gpn = environ.get("SLURM_GPUS_PER_NODE")
    if gpn is not None and gpn.strip().lower() in _NULLS:
        out.request_gpus = False  # the recipe's "8 or null": null means do not ask Slurm for GPUs
    else:
        out.gpus_per_node = whole("SLURM_GPUS_PER_NODE")
    out.steps = whole("MAX_STEPS")
    profile = (environ.get("ENABLE_PROFILE") or "").strip().lower()
    if profile not in _TRUE + _FALSE:
        problems.append(f"environment variable ENABLE_PROFILE={profile!r} must be true or false")
    out.profile = profile in _TRUE
    for name, key in ENV_OVERRIDES.items():
        value = text(name)
        if value is None:
            continue
        if name == "VP" and value.lower() in _NULLS:
            out.overrides.append(f"{key}=null")
        elif whole(name) is not None:
            out.overrides.append(f"{key}={int(value)}")
    if problems:
        raise ConfigError(problems)
    return out


def merge_overrides(from_env: Iterable[str], from_cli: Iterable[str]) -> list[str]:
    """Environment overrides first, minus any key the command line sets again (the command line wins)."""
    cli = list(from_cli)
    cli_keys = {item.partition("=")[0].strip() for item in cli}
    return [item for item in from_env if item.partition("=")[0] not in cli_keys] + cli


def parse_env_assignments(items: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """``NAME=value`` strings from ``--env`` as a dict, and one message per refused item."""
    env: dict[str, str] = {}
    problems: list[str] = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not ENV_NAME.fullmatch(name):
            problems.append(f"--env {_shown(item)} is not of the form NAME=value with NAME a shell variable name")
        elif is_secret_name(name):
            problems.append(
                f"--env {name}=...: {name} looks like a secret and is never written into a job script; "
                "export it in the shell that runs trainbench submit and Slurm passes it to the job"
            )
        else:
            env[name] = value
    return env, problems


def job_environment(model: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The recipe's job environment for ``model``, then the user's ``--env`` values (which win)."""
    env = dict(RECIPE_JOB_ENV)
    env.update(MODEL_JOB_ENV.get(model, {}))
    env.update(extra)
    assert not any(is_secret_name(k) for k in env), "secrets are filtered before this point"
    return env


def _shown(value: str) -> str:
    """A value as an error message may show it: never a secret's value."""
    return "NAME=<hidden>" if mentions_secret(value) else repr(value)
