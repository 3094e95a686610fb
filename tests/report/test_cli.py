"""``trainbench report`` end to end: outputs, exit codes, refusal of bad options."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.report.recipe_logs import log_text, provenance, recipe_path, step_times
from trainbench.cli import main

JSON_KEYS = {
    "source",
    "model",
    "dtype",
    "gpus",
    "gbs",
    "layers",
    "steps",
    "status",
    "last_step_time_s",
    "tokens_per_s",
    "tflops_per_gpu",
    "mfu_pct",
    "ttt_days",
    "steady_state",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    recipe_path(root, "fp8", "405b", 576, 1).write_text(log_text("megatron", step_times(11.24), 252))
    slow = step_times(18.5)  # published 17.20 s: 7% slower, fails the 5% tolerance
    recipe_path(root, "bf16", "405b", 576, 2).write_text(
        log_text("nemo2", slow, 252, header=provenance("405b", 576, "bf16"))
    )
    short = recipe_path(root, "fp8", "405b", 1152, 3)
    short.write_text(log_text("nemo-24.09", step_times(11.31)[:20], 504, total=50))
    (tmp_path / "stray.out").write_text(log_text("megatron", step_times(1.0), 8))  # no facts anywhere
    return tmp_path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["report", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, str(tree), "--json")
    assert code == 0
    rows = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert isinstance(rows, list) and len(rows) == 4
    for row in rows:
        assert row.keys() >= JSON_KEYS
    by = {(r["dtype"], r["gpus"]): r for r in rows}
    assert by[("fp8", 576)]["comparison"]["verdict"] == "pass"
    assert by[("bf16", 576)]["comparison"]["verdict"] == "fail"
    assert by[("fp8", 1152)]["status"] == "incomplete" and by[("fp8", 1152)]["steps"] == 20
    assert by[(None, None)]["missing"] == ["model", "dtype", "gpus"]
    assert by[("bf16", 576)]["mem_peak_gib"] == pytest.approx(70833405952 / 2**30)  # NeMo 2's peak_memory_usage
    assert by[("fp8", 576)]["mem_peak_gib"] is None  # Megatron's iteration lines carry no memory


def test_table_csv_markdown(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    csv_path, md_path = tmp_path / "r.csv", tmp_path / "r.md"
    code, out, err = run_cli(capsys, str(tree), "--csv", str(csv_path), "--markdown", str(md_path))
    assert code == 0
    assert "Recipe numbers, from the last step" in out and "183,664" in out and "fail" in out
    assert "missing model, dtype, gpus (state with --model --dtype --gpus)" in out
    assert "wrote" in err
    with open(csv_path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4
    fp8 = next(r for r in table if r["dtype"] == "fp8" and r["gpus"] == "576")
    assert float(fp8["tokens_per_s"]) == pytest.approx(183664, rel=0.002) and fp8["verdict"] == "pass"
    bf16 = next(r for r in table if r["dtype"] == "bf16")
    assert float(bf16["mem_peak_gib"]) == pytest.approx(65.97, abs=0.01) and fp8["mem_peak_gib"] == ""
    assert "peak GiB" in out and "66.0" in out
    md = md_path.read_text()
    assert md.count("| log-nemo_llama3.1_405b_576_1.out |") == 2 and "## Notes" in md


def test_check_exit_code(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, str(tree), "--check")[0] == 1
    good = next(tree.rglob("log-nemo_llama3.1_405b_576_1.out"))
    assert run_cli(capsys, str(good), "--check")[0] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "13b"], "--model '13b'"),
        (["--dtype", "fp4"], "--dtype 'fp4'"),
        (["--gpus", "0"], "--gpus must be a positive"),
        (["--gbs", "-4"], "--gbs must be a positive"),
        (["--gpu-type", "x100"], "--gpu-type 'x100'"),
        (["--tolerance", "-1"], "--tolerance must be"),
        (["--tolerance", "nan"], "--tolerance must be"),
        (["--peak-tflops", "0"], "--peak-tflops must be"),
        (["--window", "44:35"], "--window"),
        (["--window", "a:b"], "--window"),
        (["--csv", "/no/such/dir/x.csv"], "--csv"),
    ],
)
def test_bad_options_exit_2(tree: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, str(tree), *argv)
    assert code == 2 and message in err and out == ""


def test_all_problems_at_once_and_nothing_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, str(tmp_path), "--gpus", "0", "--dtype", "fp4")
    assert code == 2 and "--gpus" in err and "--dtype" in err
    code, _, err = run_cli(capsys, str(tmp_path))
    assert code == 2 and "no logs found" in err
