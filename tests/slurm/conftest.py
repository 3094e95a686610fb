"""A real Slurm cluster for the session: slurmctld and two slurmd "nodes" on this machine.

``scripts/slurm-cluster.sh`` installs Debian's packages when they are missing (CI does this on a fresh
machine), starts the daemons with all their state under a temporary directory, and stops every one of
them at the end. The tests skip, with the reason, only where Slurm cannot be installed (no root, no
apt-get, no package mirror) or, without root, cannot be started.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from trainbench.cli import main
from trainbench.launch.jobs import TERMINAL, JobState, query_states

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = ROOT / "scripts" / "slurm-cluster.sh"


@dataclass
class Cluster:
    directory: Path
    env: dict[str, str]  # this process's environment plus SLURM_CONF

    def trainbench(self, *args: str, env: dict[str, str] | None = None, own_process: bool = False):
        """The trainbench CLI on ``args``: in this process (fast), or as its own process like a user's shell."""
        if own_process:
            proc = subprocess.run([sys.executable, "-m", "trainbench", *args], env={**self.env, **(env or {})},
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
        else:
            out, err = io.StringIO(), io.StringIO()
            with mock.patch.dict(os.environ, env or {}), redirect_stdout(out), redirect_stderr(err):
                code = main(list(args))
            proc = subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
        assert proc.returncode == 0, f"trainbench {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def slurm(self, *argv: str) -> str:
        proc = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
        return proc.stdout

    def wait(self, job_id: str, states=TERMINAL, timeout_s: float = 120) -> JobState:
        """Poll the job's state (as ``trainbench jobs`` reads it) until it is one of ``states``."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = query_states([job_id])[job_id]
            if state.state in states:
                return state
            if time.monotonic() > deadline:
                log = (self.directory / "log" / "slurmctld.log").read_text()[-3000:]
                pytest.fail(f"job {job_id} still {state.state} after {timeout_s} s; slurmctld log:\n{log}")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    installed = subprocess.run(["bash", str(CLUSTER_SCRIPT), "ensure-installed"], capture_output=True, text=True,
                               timeout=900)  # fmt: skip
    if installed.returncode != 0:
        why = (installed.stderr.strip().splitlines() or [f"exit {installed.returncode}"])[-1]
        pytest.skip(f"Slurm cannot be installed here: {why}")
    directory = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["bash", str(CLUSTER_SCRIPT), "start", str(directory)], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    mp = pytest.MonkeyPatch()
    try:
        if started.returncode != 0:
            if os.geteuid() != 0:
                pytest.skip(f"a Slurm cluster cannot be started without root: {started.stderr.strip()}")
            pytest.fail(f"the test Slurm cluster did not start:\n{started.stderr}")
        mp.setenv("SLURM_CONF", str(directory / "slurm.conf"))  # for the in-process state queries too
        yield Cluster(directory, dict(os.environ))
    finally:
        mp.undo()
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", str(directory)], capture_output=True, timeout=120)
