"""Hostile values never run as shell, secrets never land in scripts, logs or the history.

Oracle: bash really executes each rendered script, with stand-ins for srun and scontrol that record the
argv and environment they receive; a hostile value must either be refused (ConfigError) or arrive
byte for byte, and the marker file a successful injection would create must not exist.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.launch.helpers import one_job, request
from trainbench.cli import main
from trainbench.errors import ConfigError
from trainbench.launch.sbatch import render
from trainbench.launch.submit import plan_jobs

HOSTILE = [
    "$(touch {m})",
    "`touch {m}`",
    "x; touch {m}",
    "x && touch {m} #",
    "x' ; touch {m} ; echo '",
    'x" ; touch {m} ; echo "',
    'x\\" ; touch {m} ; #',
    "x\ntouch {m}",
    "$HOME ${{PATH}} !! ~",
]
SRUN = """#!/bin/bash
printf '%s\\0' "$@" > "$STUB_DIR/srun.argv"
env -0 > "$STUB_DIR/srun.env"
"""
SCONTROL = "#!/bin/bash\nprintf 'node1\\nnode2\\n'\n"


def execute(script: str, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """Run ``script`` with bash as a batch job would; the argv and environment srun got."""
    stubs = tmp / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (stubs / name).write_text(text)
        (stubs / name).chmod(stat.S_IRWXU)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node[1-2]",
           "STUB_DIR": str(stubs), "HOME": str(tmp)}  # fmt: skip
    (tmp / "job.sh").write_text(script)
    proc = subprocess.run(["bash", str(tmp / "job.sh")], env=env, cwd=tmp, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    argv = (stubs / "srun.argv").read_text().split("\0")[:-1]
    got_env = dict(item.split("=", 1) for item in (stubs / "srun.env").read_text().split("\0") if "=" in item)
    return argv, got_env


def field_request(field: str, value: str, tmp: Path) -> dict:
    """Request options putting ``value`` into ``field``; the container fields need an image."""
    image = {"container_image": "nvcr.io#nvidia/nemo:24.09"}
    return {
        "stage_path": dict(stage_path=f"{tmp}/stage {value}"),
        "results_dir": dict(results_dir=f"{tmp}/res {value}"),
        "python": dict(python=value),
        "env_value": dict(env={"NOTE": value}),
        "override": dict(overrides=[f"model.name={value}"]),
        "srun_arg": dict(srun_args=[f"--comment={value}"]),
        "container_mount": dict(container_mounts=[f"/data:/data{value}"], **image),
        "container_stage": dict(stage_path=f"{tmp}/stage{value}", **image),
        "job_name": dict(job_name=value),
        "account": dict(account=value),
        "partition": dict(partition=value),
        "time_limit": dict(time_limit=value),
        "container_image": dict(container_image=value),
        "env_name": dict(env={value: "1"}),
    }[field]


def expected_word(field: str, value: str, tmp: Path) -> str:
    """The argv word (or NAME=value) that must carry ``value`` unchanged when it is accepted."""
    return {
        "stage_path": f"{tmp}/stage {value}/results",
        "results_dir": f"{tmp}/res {value}",
        "python": value,
        "env_value": f"NOTE={value}",
        "override": f"model.name={value}",
        "srun_arg": f"--comment={value}",
        "container_mount": f"/data:/data{value}",
        "container_stage": f"{tmp}/stage{value}:{tmp}/stage{value}",
    }[field]


ALWAYS_REFUSED = {"job_name", "account", "partition", "time_limit", "container_image", "env_name"}
FIELDS = sorted(ALWAYS_REFUSED | {"stage_path", "results_dir", "python", "env_value", "override", "srun_arg",
                                  "container_mount", "container_stage"})  # fmt: skip


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("field", FIELDS)
def test_hostile_value_is_refused_or_arrives_literally(field, hostile, tmp_path):
    marker = tmp_path / "pwned"
    value = hostile.format(m=marker)
    try:
        job = one_job(
            models=["tiny"], dtypes=["bf16"], gpus=[4], gpus_per_node=2, **field_request(field, value, tmp_path)
        )
    except ConfigError:
        return  # refused, with a message
    assert field not in ALWAYS_REFUSED, f"{field}={value!r} should have been refused"
    assert "\n" not in value and "%" not in value, "control characters and % never reach a script"
    argv, env = execute(render(job.spec), tmp_path)
    assert not marker.exists(), f"{field}={value!r} ran as shell"
    word = expected_word(field, value, tmp_path)
    if field == "env_value":
        assert env["NOTE"] == value
    elif field.startswith("container_"):
        mounts = next(a for a in argv if a.startswith("--container-mounts="))
        assert word in mounts.removeprefix("--container-mounts=").split(",")
    else:
        assert word in argv
    if field in ("stage_path", "results_dir"):
        assert env["TRAINBENCH_JOB_OUT"].endswith("/24.11/bf16/tiny/4/log-trainbench_llama3.1_tiny_4_4242.out")
        assert env["TRAINBENCH_JOB_OUT"].startswith(word.removesuffix("/results"))


def sbatch_read(line: str) -> str:
    """One ``#SBATCH`` argument as sbatch reads it: '\\' escapes a character, '"' toggles quoting."""
    out, quoted, escaped = [], False, False
    for ch in line.removeprefix("#SBATCH "):
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            break
        else:
            out.append(ch)
    return "".join(out)


@pytest.mark.parametrize("hostile", [h for h in HOSTILE if "\n" not in h], ids=range(len(HOSTILE) - 1))
def test_sbatch_lines_read_back_as_given(hostile, tmp_path):
    value = hostile.format(m=tmp_path / "pwned")
    spec = one_job(sbatch_args=[f"--comment={value}"], results_dir=f"{tmp_path}/r {value}").spec
    script = render(spec)
    lines = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    read = [sbatch_read(line) for line in lines]
    assert f"--comment={value}" in read
    assert f"--output={spec.log_path('%j')}" in read
    # Nothing after the header changed: the hostile values added no line.
    assert len(script.splitlines()) == len(render(one_job().spec).splitlines()) + 1


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        (dict(sbatch_args=["--nodes=3"]), "--nodes"),
        (dict(sbatch_args=["-o/tmp/x"]), "-o"),
        (dict(sbatch_args=["qos=high"]), "starting with '-'"),
        (dict(srun_args=["--ntasks-per-node=8"]), "--ntasks-per-node"),
        (dict(gpus=[12]), "whole number of 8-GPU nodes"),
        (dict(stage_path="relative/dir"), None),
        (dict(results_dir="/x/%u"), "'%'"),
        (dict(container_image="docker://me:hunter2@nvcr.io#nvidia/nemo"), "password"),
        (dict(profile=True, steps=25), "at least 30"),
    ],
)
def test_bad_options_are_refused_with_a_reason(kw, needle):
    if kw.get("stage_path") == "relative/dir":  # made absolute, as the CLI does: accepted
        assert one_job(**kw).spec.options.stage_path == os.path.abspath("relative/dir")
        return
    with pytest.raises(ConfigError) as err:
        plan_jobs(request(**kw))
    assert needle in str(err.value)


SECRETS = {"HF_TOKEN": "hf_s3cr3tvalue", "WANDB_API_KEY": "wandb-s3cr3t", "DB_PASSWORD": "pw-s3cr3t"}


def fake_sbatch(tmp: Path) -> Path:
    """A stand-in sbatch that keeps the submitted script and answers a job id, as --parsable does."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\ncp "${{@: -1}}" {tmp}/submitted.sh\necho "777;cluster"\n')
    (bin_dir / "sbatch").chmod(stat.S_IRWXU)
    return bin_dir


def test_secrets_in_the_environment_reach_no_file_and_no_output(tmp_path, monkeypatch, capsys):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", f"{fake_sbatch(tmp_path)}:{os.environ['PATH']}")
    stage = tmp_path / "stage"
    args = ["submit", "--model", "tiny", "--dtype", "bf16", "--gpus", "4", "--gpus-per-node", "2",
            "--stage-path", str(stage), "--env", "NOTE=fine"]  # fmt: skip
    assert main([*args, "--dry-run"]) == 0
    assert main(args) == 0
    printed = capsys.readouterr()
    everything = printed.out + printed.err
    files = [p for p in [tmp_path / "submitted.sh", *stage.rglob("*")] if p.is_file()]
    assert any(p.name == "jobs.jsonl" for p in files) and any(p.suffix == ".sbatch" for p in files)
    everything += "".join(p.read_text() for p in files)
    for name, value in SECRETS.items():
        assert value not in everything and name not in everything


@pytest.mark.parametrize(
    "option",
    [
        ["--env", "HF_TOKEN=hf_s3cr3tvalue"],
        ["--env", "my_github_token=hf_s3cr3tvalue"],
        ["--sbatch-arg=--export=ALL,HF_TOKEN=hf_s3cr3tvalue"],
        ["--srun-arg=--export=ALL,WANDB_API_KEY=hf_s3cr3tvalue"],
        ["--sbatch-arg=--comment=db_password=hf_s3cr3tvalue"],
    ],
)
def test_secret_options_are_refused_without_echoing_the_secret(option, tmp_path, capsys):
    code = main(["submit", "--model", "tiny", "--gpus", "1", "--stage-path", str(tmp_path), "--dry-run", *option])
    err = capsys.readouterr()
    assert code == 2
    assert "secret" in err.err and "hf_s3cr3tvalue" not in err.err + err.out
    assert not re.search("Traceback", err.err)
