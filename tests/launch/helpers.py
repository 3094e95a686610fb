"""Shared pieces of the launcher tests: a request with fixed machine-specific paths, golden files."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from trainbench import __version__
from trainbench.launch.submit import PlannedJob, SubmitRequest, plan_jobs

GOLDEN = Path(__file__).parent / "golden"
STAGE = "/lustre/proj/llama"
PYTHON = "/opt/venv/bin/python"
CODE_DIR = "/opt/venv/lib/python3.11/site-packages/trainbench"


def request(**kw: Any) -> SubmitRequest:
    """A submit request as the CLI builds it, with this machine's paths replaced by fixed ones."""
    base = SubmitRequest(
        models=["405b"], dtypes=["fp8"], gpus=[576], stage_path=STAGE, python=PYTHON, code_dir=CODE_DIR
    )
    return replace(base, **kw)


def one_job(**kw: Any) -> PlannedJob:
    jobs = plan_jobs(request(**kw))
    assert len(jobs) == 1
    return jobs[0]


def check_golden(name: str, text: str) -> None:
    """Compare with tests/launch/golden/<name>; UPDATE_GOLDEN=1 rewrites the file instead."""
    text = text.replace(f"trainbench {__version__};", "trainbench <version>;")
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    if not path.exists():
        pytest.fail(f"no golden file {path}: run with UPDATE_GOLDEN=1 once and review it")
    assert text == path.read_text(), f"rendered script differs from {path} (UPDATE_GOLDEN=1 to accept)"
