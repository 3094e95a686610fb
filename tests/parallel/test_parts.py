"""The parallel layer's parts, in one process: stage split, TP plans, initialisation, clipping, CP on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from trainbench.model import Llama, build_model
from trainbench.parallel import clip_grad_norm_
from trainbench.parallel.init import init_like_single_process, plain_name
from trainbench.parallel.pipeline import num_stages, pipeline_problems, split_model, stage_ids, stage_layers
from trainbench.parallel.tensor import BLOCK_PLAN, MODEL_PLAN, ReplicateParallel, resolve_plan, style
from trainbench.recipe.resolve import resolve

CPU = torch.device("cpu")


def test_interleaved_stages_loop_over_pipeline_ranks_and_split_layers_evenly():
    plan = resolve("405b", 576)  # the recipe's full scale: PP 9, VP 7, 126 layers
    assert num_stages(plan) == 63
    assert stage_ids(0, plan) == [0, 9, 18, 27, 36, 45, 54] and stage_ids(8, plan)[-1] == 62
    assert list(stage_layers(0, plan)) == [0, 1] and list(stage_layers(62, plan)) == [124, 125]
    held = sorted(i for r in range(9) for s in stage_ids(r, plan) for i in stage_layers(s, plan))
    assert held == list(range(126))


def test_a_stage_holds_its_layers_and_the_first_and_last_the_ends():
    plan = resolve("tiny", 4, "bf16", "cpu", ["parallel.pp=2", "parallel.vp=2", "train.gbs=4"])
    with torch.device("meta"):
        whole = Llama(plan.model)
    chunks = [split_model(whole, s, plan) for s in range(4)]
    assert [list(c.layers) for c in chunks] == [["0"], ["1"], ["2"], ["3"]]
    assert [c.tok_embeddings is not None for c in chunks] == [True, False, False, False]
    assert [c.output is not None and c.norm is not None for c in chunks] == [False, False, False, True]
    assert list(whole.layers) == ["0", "1", "2", "3"] and whole.output is not None  # the whole is left whole


def test_pipeline_layouts_torch_cannot_schedule_are_refused_before_they_start():
    assert pipeline_problems(resolve("tiny", 2, "bf16", "cpu", ["parallel.pp=2", "train.gbs=1"])) == [
        "pipeline parallel 2 needs at least 2 micro-batches per step, got GA 1 (GBS 1 / (DP 1 x MBS 1)): "
        "raise train.gbs"
    ]
    plan = resolve("tiny", 2, "bf16", "cpu", ["parallel.pp=2", "parallel.vp=2", "train.gbs=5"])
    assert "divisible by GA // PP = 2" in pipeline_problems(plan)[0]
    for cell in [("405b", 576), ("405b", 96), ("405b", 192), ("70b", 64), ("8b", 8)]:
        assert pipeline_problems(resolve(*cell)) == []


def test_tp_plans_are_data_shared_by_bf16_and_fp8():
    names = {"colwise", "rowwise", "norm", "attention_input", "ffn_input", "embedding", "output"}
    assert set(BLOCK_PLAN.values()) | set(MODEL_PLAN.values()) == names
    sp = resolve_plan(BLOCK_PLAN, sequence_parallel=True, float8=False)
    assert {type(s).__name__ for s in sp.values()} == {
        "ColwiseParallel", "RowwiseParallel", "SequenceParallel", "PrepareModuleInput"}  # fmt: skip
    plain = resolve_plan(BLOCK_PLAN, sequence_parallel=False, float8=False)
    assert "attention" not in plain and isinstance(plain["attention_norm"], ReplicateParallel)
    with pytest.raises(ValueError, match="unknown tensor-parallel style"):
        style("diagonal", sequence_parallel=True, float8=False)


def test_fp8_takes_torchaos_float8_styles_for_the_blocks_only():
    pytest.importorskip("torchao")
    fp8 = resolve_plan(BLOCK_PLAN, sequence_parallel=True, float8=True)
    assert type(fp8["attention.wq"]).__name__ == "Float8ColwiseParallel"
    assert type(fp8["feed_forward.w2"]).__name__ == "Float8RowwiseParallel"
    assert type(fp8["attention"]).__name__ == "PrepareFloat8ModuleInput"
    ends = resolve_plan(MODEL_PLAN, sequence_parallel=True, float8=True)
    assert type(ends["output"]).__name__ == "ColwiseParallel"  # the output layer stays out of float8


def test_piecewise_initialisation_reproduces_the_single_process_weights_for_any_split():
    plan = resolve("tiny", 2, "bf16", "cpu", ["parallel.pp=2", "parallel.vp=2", "train.gbs=4"])
    torch.manual_seed(plan.train.seed)
    single = build_model(plan.model, CPU)
    with torch.device("meta"):
        whole = Llama(plan.model)
    for stages in ([0, 2], [1, 3], [3]):
        chunks = [split_model(whole, s, plan) for s in stages]
        for c in chunks:
            c.to_empty(device=CPU)
        torch.manual_seed(999)  # whatever the RNG held before
        init_like_single_process(chunks, plan.model, CPU, plan.train.seed)
        for chunk in chunks:
            for name, p in chunk.named_parameters():
                assert torch.equal(p, single.get_parameter(name)), name
            assert torch.equal(chunk.rope_cache, single.rope_cache)


def test_wrapper_names_are_dropped_to_find_the_plain_parameter():
    assert plain_name("layers.3._orig_mod._checkpoint_wrapped_module.attention.wq.weight") == (
        "layers.3.attention.wq.weight"
    )


def test_clipping_without_a_mesh_is_torchs():
    torch.manual_seed(0)
    a, b = (torch.nn.Parameter(torch.randn(5)) for _ in range(2))
    for p in (a, b):
        p.grad = torch.randn(5) * 3
    expected = torch.linalg.vector_norm(torch.cat([a.grad, b.grad]))
    norm = clip_grad_norm_([a, b], 1.0, None)
    assert norm == pytest.approx(expected.item())
    assert torch.linalg.vector_norm(torch.cat([a.grad, b.grad])).item() == pytest.approx(1.0, rel=1e-5)


def test_context_parallel_does_not_run_on_cpu_in_this_torch():
    """A canary: when this fails, PyTorch's CP runs on CPU, and CP joins test_equivalence's CPU layouts."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.experimental import context_parallel

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("cp",))
        q = torch.randn(1, 2, 8, 4)
        with pytest.raises(NotImplementedError, match="_scaled_dot_product_flash_attention_for_cpu"):  # noqa: SIM117
            with context_parallel(mesh, buffers=[q], buffer_seq_dims=[2]):
                F.scaled_dot_product_attention(q, q, q, is_causal=True)
    finally:
        dist.destroy_process_group()
