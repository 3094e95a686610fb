"""The dry run: every layout of the recipe's tables builds for its world size, on the meta device."""

from __future__ import annotations

import json

import pytest

from trainbench.cli import main
from trainbench.parallel.dryrun import dry_run
from trainbench.recipe.memory import params_per_layer, params_per_rank, total_params
from trainbench.recipe.resolve import resolve

RECIPE_CELLS = [("8b", 8), ("70b", 64), ("405b", 576), ("405b", 32), ("405b", 96), ("405b", 192)]


def check(plan, reports):
    m, p = plan.model, plan.parallel
    assert [r["pp_rank"] for r in reports] == list(range(p.pp))
    stages = sorted(s for r in reports for s in r["stages"])
    assert stages == list(range(p.pp * (p.vp or 1)))
    assert sorted(i for r in reports for i in r["layers"]) == list(range(m.layers))
    assert reports[0]["embedding"] and reports[-1]["output"]
    assert sum(r["params_whole"] for r in reports) == total_params(m)  # nothing lost or held twice
    # The analytic estimate (recipe.memory) divides the norms by TP too; the built model keeps them whole.
    norms = (m.layers // p.pp * 2 + 1) * m.hidden
    assert max(r["params_tp"] for r in reports) == pytest.approx(params_per_rank(m, p), abs=norms)
    shards = plan.dp * p.cp
    for r in reports:
        assert r["params_stored"] == pytest.approx(r["params_tp"] / shards, rel=1e-3)  # FSDP pads a little


def test_the_tiny_preset_on_eight_ranks_builds_per_stage():
    plan = resolve("tiny", 8, "bf16", "cpu", ["parallel.tp=2", "parallel.pp=2", "train.gbs=4"])
    check(plan, dry_run(plan))


@pytest.mark.parametrize(("model", "gpus"), RECIPE_CELLS)
def test_every_recipe_cell_builds_for_its_world_size(model, gpus):
    plan = resolve(model, gpus, "bf16", "h100")
    reports = dry_run(plan)
    check(plan, reports)
    assert reports[0]["params_whole"] >= (plan.model.layers // plan.parallel.pp) * params_per_layer(plan.model)


def test_a_layout_the_schedules_refuse_is_refused_by_the_dry_run_too(capsys):
    argv = ["plan", "--model", "tiny", "--gpus", "2", "--dry-run", "parallel.pp=2", "train.gbs=1"]
    assert main(argv) == 2
    assert "needs at least 2 micro-batches per step" in capsys.readouterr().err


def test_plan_dry_run_prints_the_stage_split_and_json_has_it(capsys):
    argv = ["plan", "--model", "tiny", "--gpus", "4", "--gpu-type", "h100", "--dry-run",
            "parallel.pp=2", "parallel.vp=2", "train.gbs=4"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dry run: tiny on 4 ranks, mesh (pp 2, dp 2, cp 1, tp 1), 4 pipeline stage(s), schedule interleaved" in out
    assert main([*argv, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["stages"] for r in info["dry_run"]] == [[0, 2], [1, 3]]
