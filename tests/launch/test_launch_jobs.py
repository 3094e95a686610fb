"""Job states from sacct or scontrol (outputs recorded from Slurm 22.05), and the local history."""

from __future__ import annotations

import subprocess

import pytest

from trainbench.errors import ConfigError
from trainbench.launch.jobs import (
    JobRecord,
    append_record,
    as_json,
    history_path,
    normalize_state,
    parse_sacct,
    parse_scontrol,
    query_states,
    read_records,
    table,
)

SACCT = (
    "101|COMPLETED|0:0\n102|FAILED|3:0\n103|CANCELLED by 0|0:15\n104|TIMEOUT|0:0\n105|OUT_OF_MEMORY|0:125\n"
    "106|PENDING|0:0\n"
)
SCONTROL_FAILED = (
    "JobId=2 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=1 Nice=0 Account=(null) "
    "QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 "
    "Reboot=0 ExitCode=3:0 RunTime=00:00:00 StdOut=/tmp/odd dir #1/f-2.out Comment=JobState=COMPLETED"
)
SCONTROL_CANCELLED = "JobId=3 JobName=wrap JobState=CANCELLED Reason=None Dependency=(null) ExitCode=0:15"


@pytest.mark.parametrize(
    ("slurm", "ours"),
    [("PENDING", "pending"), ("RUNNING", "running"), ("COMPLETING", "running"), ("COMPLETED", "completed"),
     ("FAILED", "failed"), ("NODE_FAIL", "failed"), ("TIMEOUT", "timeout"), ("CANCELLED by 1000", "cancelled"),
     ("OUT_OF_MEMORY", "out-of-memory"), ("CANCELLED+", "cancelled"), ("", "unknown"), ("NEW_STATE", "new_state")],
)  # fmt: skip
def test_state_words(slurm, ours):
    assert normalize_state(slurm) == ours


def test_parse_sacct():
    states = parse_sacct(SACCT)
    assert [(s.state, s.exit_code, s.signal) for s in states.values()] == [
        ("completed", 0, 0), ("failed", 3, 0), ("cancelled", 0, 15), ("timeout", 0, 0), ("out-of-memory", 0, 125),
        ("pending", 0, 0),
    ]  # fmt: skip
    assert states["103"].slurm_state == "CANCELLED by 0" and states["103"].exit_text == "0 (signal 15)"


def test_parse_scontrol_reads_the_first_fields_even_with_spaces_and_lookalikes_later():
    states = parse_scontrol(SCONTROL_FAILED + "\n" + SCONTROL_CANCELLED + "\n")
    assert (states["2"].state, states["2"].exit_code, states["2"].source) == ("failed", 3, "scontrol")
    assert (states["3"].state, states["3"].signal) == ("cancelled", 15)


def fake_runner(answers):
    """Answers keyed by the program name; records every call."""
    calls = []

    def run(argv):
        calls.append(list(argv))
        rc, out, err = answers[argv[0]](argv) if callable(answers[argv[0]]) else answers[argv[0]]
        return subprocess.CompletedProcess(argv, rc, out, err)

    run.calls = calls
    return run


def test_sacct_first_for_all_jobs_in_one_call():
    run = fake_runner({"sacct": (0, SACCT, "")})
    states = query_states(["101", "102", "103"], run)
    assert [s.state for s in states.values()] == ["completed", "failed", "cancelled"]
    assert len(run.calls) == 1 and run.calls[0][-1] == "101,102,103"


def test_without_accounting_scontrol_answers_each_job():
    def scontrol(argv):
        job = argv[-1]
        if job == "2":
            return 0, SCONTROL_FAILED + "\n", ""
        return 1, "", "slurm_load_jobs error: Invalid job id specified\n"

    run = fake_runner({"sacct": (1, "", "Slurm accounting storage is disabled\n"), "scontrol": scontrol})
    states = query_states(["2", "99"], run)
    assert states["2"].state == "failed" and states["2"].source == "scontrol"
    assert states["99"].state == "unknown" and "forgotten" in states["99"].slurm_state


def test_no_slurm_at_all_says_so():
    run = fake_runner({"sacct": (127, "", ""), "scontrol": (127, "", "")})
    assert query_states(["5"], run)["5"].slurm_state == "no scontrol here"


def record(job_id, **kw):
    base = dict(job_id=job_id, submitted_at="2025-01-01T00:00:00+00:00", job_name="n", model="405b", dtype="fp8",
                gpus=576, nodes=72, repeat=1, repeats=1, profile=False, run_dir="/r", out=f"/r/x_{job_id}.out",
                err=f"/r/x_{job_id}.err", script="/s", campaign="c")  # fmt: skip
    return JobRecord(**{**base, **kw})


def test_history_round_trip_and_listing(tmp_path):
    append_record(tmp_path, record("101"))
    append_record(tmp_path, record("102", repeat=2, repeats=3, profile=True))
    records = read_records(tmp_path)
    assert [r.job_id for r in records] == ["101", "102"]
    states = parse_sacct(SACCT)
    text = table(records, states).splitlines()
    assert text[0].split() == ["JOB", "STATE", "EXIT", "CELL", "REPEAT", "SUBMITTED", "RESULTS"]
    assert text[2].split()[:2] == ["102", "failed"] and "2/3" in text[2] and "profile" in text[2]
    assert text[1].endswith("/r/x_101.out")
    rows = as_json(records, states)
    assert rows[1]["state"] == "failed" and rows[1]["exit_code"] == 3 and rows[1]["state_source"] == "sacct"


def test_a_damaged_history_line_is_named(tmp_path):
    append_record(tmp_path, record("1"))
    with history_path(tmp_path).open("a") as f:
        f.write("{not json\n")
    with pytest.raises(ConfigError, match="line 2"):
        read_records(tmp_path)
