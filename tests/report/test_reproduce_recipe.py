"""Done-when oracle: logs of each foreign format, written with the recipe's published step
times into the recipe's layout, reproduce its published tokens/s (0.2%), MFU (0.1 point) and
time to train (0.5%), and compare as "pass" against the shipped reference cell."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from tests.report.recipe_logs import WRITERS, log_text, provenance, recipe_path, step_times
from trainbench.cli import main
from trainbench.recipe import tables

REFS = tables.references()
CASES = [(fmt, ref) for fmt in WRITERS for ref in REFS]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, int], dict]:
    """One results tree holding every (format, published cell); NeMo 24.09 logs carry no
    provenance line (facts from the layout alone), the others do."""
    root = tmp_path_factory.mktemp("results")
    for i, (fmt, ref) in enumerate(CASES):
        fmt_root = root / fmt
        header = None if fmt == "nemo-24.09" else provenance(ref.model, ref.gpus, ref.dtype)
        path = recipe_path(fmt_root, ref.dtype, ref.model, ref.gpus, job=1000 + i)
        path.write_text(log_text(fmt, step_times(ref.step_time_s), ref.gbs, header=header), encoding="utf-8")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["report", str(root), "--json"]) == 0
    capture = json.loads(buf.getvalue())
    assert len(capture) == len(CASES)
    return {(Path(r["source"]).relative_to(root).parts[0], r["dtype"], r["gpus"]): r for r in capture}


@pytest.mark.parametrize(("fmt", "ref"), CASES, ids=[f"{f}-{r.dtype}-{r.gpus}" for f, r in CASES])
def test_published_numbers_reproduced(report: dict, fmt: str, ref: tables.Reference) -> None:
    row = report[(fmt, ref.dtype, ref.gpus)]
    assert row["format"] == fmt
    assert row["status"] == "complete"
    assert (row["model"], row["gpus"], row["gbs"], row["layers"]) == (ref.model, ref.gpus, ref.gbs, ref.layers)
    assert row["gpu_type"] == "h100" and row["facts_from"]["gpu_type"].startswith("assumed")
    assert row["last_step_time_s"] == pytest.approx(ref.step_time_s, abs=1e-9)
    assert row["tokens_per_s"] == pytest.approx(ref.tokens_per_s, rel=0.002)
    assert abs(row["mfu_pct"] - ref.mfu_pct) <= 0.1
    if ref.ttt_days is None:
        assert row["proxy"] is True and row["ttt_days"] is None
    else:
        assert row["proxy"] is False
        assert row["ttt_days"] == pytest.approx(ref.ttt_days, rel=0.005)
    comparison = row["comparison"]
    assert comparison["verdict"] == "pass"
    assert abs(comparison["gap_pct"]) < 0.2
    assert row["reference"]["tokens_per_s"] == ref.tokens_per_s
    steady = row["steady_state"]
    assert (steady["window"], steady["n"], steady["complete"]) == ("35:44", 10, True)
    assert steady["median_s"] == pytest.approx(ref.step_time_s, rel=0.01)  # the wobble is +-0.8%
