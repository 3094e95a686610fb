"""``trainbench plan`` end to end, through the console entry point's main()."""

import json

import pytest

from trainbench.cli import main

KEYS = [
    "model",
    "dtype",
    "gpus",
    "gpu_type",
    "layers",
    "hidden",
    "ffn",
    "heads",
    "query_groups",
    "seq_len",
    "vocab",
    "tp",
    "pp",
    "vp",
    "cp",
    "dp",
    "mbs",
    "gbs",
    "ga",
    "proxy",
    "model_flops_per_sample",
    "memory_per_gpu_gib",
    "reference",
]


def test_plan_json_has_the_promised_keys(capsys):
    assert main(["plan", "--model", "405b", "--gpus", "576", "--dtype", "fp8", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(KEYS) <= set(info)
    assert info["reference"] == {**info["reference"], "step_time_s": 11.24, "tokens_per_s": 183664, "mfu_pct": 42.71}
    assert info["vp"] == 7 and info["gpu_type"] == "h100"


def test_plan_table_prints_the_expectation(capsys):
    assert main(["plan", "--model", "405b", "--gpus", "32", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "8.85 s" in out and "58.63 %" in out and "n/a (proxy)" in out


def test_bad_input_exits_2_with_every_reason_and_no_traceback(capsys):
    code = main(["plan", "--model", "405b", "--gpus", "576", "parallel.tp=3", "train.gbs=250"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "heads 128 not divisible by TP 3" in err and "GPUs 576 not divisible" in err


def test_unknown_flag_is_argparse_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--modle", "8b"])
    assert exc.value.code == 2
