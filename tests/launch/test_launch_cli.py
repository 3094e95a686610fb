"""The three subcommands end to end in-process: exit codes, dry run, jobs listing without Slurm."""

from __future__ import annotations

import json

from trainbench.cli import main


def test_dry_run_prints_the_script_and_touches_nothing(tmp_path, capsys):
    stage = tmp_path / "stage"
    argv = ["submit", "--model", "405b", "--dtype", "fp8", "--gpus", "576", "--stage-path", str(stage), "--dry-run",
            "--container-image", str(stage / "nvidia+nemo+24.09.sqsh")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/bash\n") and "#SBATCH --nodes=72" in out
    assert f"--container-image={stage}/nvidia+nemo+24.09.sqsh" in out and "--no-container-mount-home" in out
    assert not stage.exists()


def test_user_errors_exit_2_with_every_reason_and_no_traceback(tmp_path, capsys):
    argv = ["submit", "--model", "405b", "--gpus", "500", "--stage-path", str(tmp_path), "-J", "a b", "-t", "soon",
            "--dry-run"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "500" in err and "job name" in err and "time limit" in err and "Traceback" not in err


def test_unreadable_override_is_a_user_error(tmp_path, capsys):
    argv = [
        "submit",
        "--model",
        "tiny",
        "--gpus",
        "1",
        "--stage-path",
        str(tmp_path),
        "--dry-run",
        "model.name=${PATH}",
    ]
    assert main(argv) == 2
    assert "override" in capsys.readouterr().err


def test_missing_container_file_is_refused_before_submitting(tmp_path, capsys):
    argv = ["submit", "--model", "tiny", "--gpus", "1", "--stage-path", str(tmp_path), "--container-image", "x.sqsh"]
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err


def test_jobs_with_an_empty_history_and_without_slurm(tmp_path, capsys, monkeypatch):
    assert main(["jobs", "--stage-path", str(tmp_path)]) == 0
    assert "no jobs" in capsys.readouterr().out
    history = tmp_path / "trainbench" / "jobs.jsonl"
    history.parent.mkdir()
    fields = dict(submitted_at="t", job_name="n", model="tiny", dtype="bf16", gpus=4, nodes=2, repeat=1,
                  repeats=1, profile=False, run_dir="/r", out="/r/o.out", err="/r/o.err", script="/s",
                  campaign="c")  # fmt: skip
    history.write_text("".join(json.dumps({"job_id": str(i), **fields}) + "\n" for i in range(1, 4)))
    monkeypatch.setenv("PATH", str(tmp_path))  # no sacct, no scontrol
    assert main(["jobs", "--stage-path", str(tmp_path), "--json", "--last", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["job_id"] for r in rows] == ["2", "3"] and {r["state"] for r in rows} == {"unknown"}
    assert main(["jobs", "--stage-path", str(tmp_path), "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["1", "unknown"]
