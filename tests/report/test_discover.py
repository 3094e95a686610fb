"""Finding runs and inferring their facts: layout, log name, provenance, flags, tables, and
the refusal to guess what nothing states."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.report.recipe_logs import log_text, provenance, recipe_path, step_times
from trainbench.report import build
from trainbench.report.discover import facts_from_path, facts_from_provenance, find_sources, merge_facts


def test_layout_and_log_name() -> None:
    p = Path("/stage/results/24.11/fp8/405b/576/log-nemo_llama3.1_405b_576_123.out")
    assert facts_from_path(p) == {"gpus": 576, "model": "405b", "dtype": "fp8"}
    assert facts_from_path(Path("/tmp/log-nemo_llama3.1_70b_64_9_9.out")) == {"model": "70b", "gpus": 64}
    assert facts_from_path(Path("/tmp/some.out")) == {}
    assert facts_from_path(Path("/x/BF16/8b/16/a.out"))["dtype"] == "bf16"  # DTYPE is case-insensitive


def test_provenance_facts() -> None:
    prov = {"MODEL_SIZE": "405B", "JOB_NUM_NODES": "72", "GPUS_PER_NODE": "8", "DTYPE": "FP8", "GBS": "252"}
    assert facts_from_provenance(prov) == {"model": "405b", "dtype": "fp8", "gpus": 576, "gbs": 252}
    assert facts_from_provenance({"JOB_NUM_NODES": "x", "MODEL_SIZE": "13b"}) == {}


def test_merge_prefers_trusted_and_notes_conflicts() -> None:
    values, origin, notes = merge_facts(
        [("log", {"gpus": 576, "gbs": None}), ("command line", {"gpus": 1152, "gbs": 8})]
    )
    assert values == {"gpus": 576, "gbs": 8} and origin == {"gpus": "log", "gbs": "command line"}
    assert notes == ["gpus: command line says 1152, log says 576; used 576"]


part = st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s and "\x00" not in s)
digits = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=30)  # "٣", "²", 10**25


@given(st.lists(part | digits, max_size=6), st.lists(part | digits, min_size=4, max_size=4))
def test_any_path_never_crashes(parts: list[str], name: list[str]) -> None:
    facts = facts_from_path(Path("/", *parts, "log-{}_llama3.1_{}_{}_{}.out".format(*name)))
    assert all(v > 0 for k, v in facts.items() if k == "gpus")


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "MODEL_SIZE",
                "DTYPE",
                "JOB_NUM_NODES",
                "GPUS_PER_NODE",
                "JOB_TOTAL_GPUS",
                "GBS",
                "LAYERS",
                "NUM_LAYERS",
                "SEQ_LEN",
                "GPU_TYPE",
            ]
        ),
        part | digits,
    )
)
def test_any_provenance_never_crashes(prov: dict[str, str]) -> None:
    facts = facts_from_provenance(prov)
    assert all(isinstance(v, int) and v > 0 for k, v in facts.items() if k in ("gpus", "gbs", "layers", "seq_len"))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_log_outside_the_layout_lists_what_is_missing(tmp_path: Path) -> None:
    log = _write(tmp_path / "job.out", log_text("megatron", step_times(11.24), gbs=252))
    (row,) = (r for _, r in build([str(log)]))
    assert row["status"] == "complete" and row["gbs"] == 252
    assert row["missing"] == ["model", "dtype", "gpus"]
    assert row["tokens_per_s"] is None and row["comparison"]["verdict"] == "unknown"
    (row,) = (r for _, r in build([str(log)], {"model": "405b", "dtype": "fp8", "gpus": 576}))
    assert row["missing"] == [] and row["comparison"]["verdict"] == "pass"
    assert row["facts_from"] == {
        "model": "command line",
        "dtype": "command line",
        "gpus": "command line",
        "gbs": "log",
        "layers": "recipe table",
        "seq_len": "model preset",
        "gpu_type": "assumed (the recipe's hardware)",
    }


def test_gbs_is_never_guessed(tmp_path: Path) -> None:
    text = log_text("nemo-24.09", step_times(11.24), gbs=252)
    text = text.replace("consumed_samples=", "consumed=")  # a bar without consumed samples
    log = _write(recipe_path(tmp_path, "fp8", "405b", 576, 1), text)
    (row,) = (r for _, r in build([str(tmp_path)]))
    assert row["missing"] == ["gbs"] and row["tokens_per_s"] is None
    (row,) = (r for _, r in build([str(log)], {"gbs": 252}))
    assert row["tokens_per_s"] is not None and row["facts_from"]["gbs"] == "command line"


def test_provenance_beats_flags_and_layout(tmp_path: Path) -> None:
    path = recipe_path(tmp_path, "bf16", "405b", 1152, 7)  # the layout says bf16, 1152
    _write(path, log_text("nemo2", step_times(11.24), gbs=252, header=provenance("405b", 576, "fp8")))
    (row,) = (r for _, r in build([str(tmp_path)], {"gpus": 2304}))
    assert (row["dtype"], row["gpus"]) == ("fp8", 576)
    assert row["comparison"]["verdict"] == "pass"
    assert len([n for n in row["notes"] if "used" in n]) == 3  # flag gpus, layout gpus, layout dtype


def test_layers_from_the_proxy_table_or_the_flag(tmp_path: Path) -> None:
    _write(recipe_path(tmp_path, "fp8", "405b", 32, 1), log_text("megatron", step_times(5.80), gbs=126))
    (row,) = (r for _, r in build([str(tmp_path)]))
    assert (row["layers"], row["proxy"], row["facts_from"]["layers"]) == (7, True, "recipe table")
    (row,) = (r for _, r in build([str(tmp_path)], {"layers": 14}))
    assert row["layers"] == 14 and row["comparison"]["verdict"] == "proxy-other-scale"


def test_tree_walk_groups_own_files_and_skips_others(tmp_path: Path) -> None:
    d = tmp_path / "24.11" / "bf16" / "8b" / "8"
    _write(d / "log-trainbench_llama3.1_8b_8_a.out", "x\n")
    _write(d / "log-trainbench_llama3.1_8b_8_a.steps.jsonl", "")
    _write(d / "log-trainbench_llama3.1_8b_8_a.summary.json", "{}")
    _write(d / "log-nemo_llama3.1_8b_8_5.out", "")
    _write(d / "log-nemo_llama3.1_8b_8_5.err", "")
    _write(d / "notes.txt", "")
    sources = find_sources([str(tmp_path)])
    assert [(s.stem, s.own) for s in sources] == [
        ("log-nemo_llama3.1_8b_8_5", False),
        ("log-trainbench_llama3.1_8b_8_a", True),
    ]
    missing = find_sources([str(tmp_path / "nope")])
    assert missing[0].error == "no such file or directory"
