"""``trainbench setup``: image names as enroot gives them, the import command, the readiness report."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from trainbench.cli import main
from trainbench.errors import ConfigError
from trainbench.launch.setup import container_checks, enroot_uri, import_image, slurm_checks, sqsh_name


@pytest.mark.parametrize(
    ("image", "uri", "sqsh"),
    [
        ("nvcr.io/nvidia/nemo:24.09", "docker://nvcr.io#nvidia/nemo:24.09", "nvidia+nemo+24.09.sqsh"),
        ("nvcr.io#nvidia/nemo:24.09", "docker://nvcr.io#nvidia/nemo:24.09", "nvidia+nemo+24.09.sqsh"),
        ("docker://nvcr.io#nvidia/nemo:24.09", "docker://nvcr.io#nvidia/nemo:24.09", "nvidia+nemo+24.09.sqsh"),
        ("ubuntu:22.04", "docker://ubuntu:22.04", "ubuntu+22.04.sqsh"),
        ("localhost:5000/me/img:1", "docker://localhost:5000#me/img:1", "me+img+1.sqsh"),
        ("docker://user@nvcr.io#nvidia/pytorch:24.09-py3", "docker://user@nvcr.io#nvidia/pytorch:24.09-py3",
         "nvidia+pytorch+24.09-py3.sqsh"),
    ],
)  # fmt: skip
def test_image_names_follow_enroot_and_the_recipe(image, uri, sqsh):
    assert enroot_uri(image) == uri
    assert sqsh_name(image) == sqsh


def fake_enroot(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = f'#!/bin/bash\necho "$@" >> {tmp_path}/enroot.calls\n[ "$1" = import ] && echo sqsh > "$3"\nexit 0\n'
    (bin_dir / "enroot").write_text(script)
    (bin_dir / "enroot").chmod(stat.S_IRWXU)
    return bin_dir


def test_import_runs_enroot_as_setup_sh_does_and_only_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_enroot(tmp_path)}:{os.environ['PATH']}")
    target, imported = import_image("nvcr.io/nvidia/nemo:24.09", tmp_path)
    assert imported and target == tmp_path / "nvidia+nemo+24.09.sqsh" and target.exists()
    calls = (tmp_path / "enroot.calls").read_text().splitlines()
    assert calls == [f"import --output {target} docker://nvcr.io#nvidia/nemo:24.09"]
    assert import_image("nvcr.io/nvidia/nemo:24.09", tmp_path) == (target, False)


def test_import_without_enroot_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="enroot is not installed"):
        import_image("nvcr.io/nvidia/nemo:24.09", tmp_path, which=lambda _: None)
    with pytest.raises(ConfigError, match="may hold only"):
        import_image("nvcr.io/x;touch y", tmp_path)


def test_missing_programs_are_reported_with_what_to_do():
    checks = slurm_checks(which=lambda p: "/usr/bin/sbatch" if p == "sbatch" else None)
    assert checks[0].ok and not any(c.ok for c in checks[1:])
    assert all(c.todo for c in checks[1:])
    no_accounting = subprocess.CompletedProcess([], 1, "", "Slurm accounting storage is disabled\n")
    sacct = slurm_checks(which=lambda p: f"/usr/bin/{p}", runner=lambda argv: no_accounting)[-1]
    assert sacct.ok and "accounting storage is disabled" in sacct.detail and "scontrol" in sacct.detail

    def runner(argv):
        out = "  --container-image=[USER@][REGISTRY#]IMAGE[:TAG]|PATH\n" if argv[0] == "srun" else "3.5.0\n"
        return subprocess.CompletedProcess(argv, 0, out, "")

    enroot, pyxis = container_checks(which=lambda p: f"/usr/bin/{p}", runner=runner)
    assert (enroot.ok, enroot.detail, pyxis.ok) == (True, "3.5.0", True)
    enroot, pyxis = container_checks(which=lambda p: None, runner=runner)
    assert not enroot.ok and not pyxis.ok and "enroot" in enroot.todo


def test_setup_command_creates_the_stage_and_reports_every_item(tmp_path, capsys):
    stage = tmp_path / "stage"
    assert main(["setup", "--stage-path", str(stage)]) == 0
    out = capsys.readouterr().out
    assert (stage / "results").is_dir() and (stage / "trainbench").is_dir()
    for item in ("Python", "torch", "CUDA", "NCCL", "GPUs", "sbatch", "srun", "squeue", "sacct", "enroot", "pyxis",
                 "disk"):  # fmt: skip
        assert any(line.split()[1:2] == [item] for line in out.splitlines() if line[:2] in ("ok", "mi")), item
    assert "GiB free" in out
