"""FP8 weights cast once per optimizer step give what torchao's per-micro-batch casts give, bit for bit."""

import pytest
import torch
from torch import nn

from trainbench.recipe.describe import describe
from trainbench.recipe.memory import block_linear_params
from trainbench.recipe.resolve import resolve
from trainbench.train.dist import DistContext
from trainbench.train.loop import Trainer

torchao_float8 = pytest.importorskip("torchao.float8")
from trainbench.parallel.fp8_weights import Float8WeightCache, cacheable  # noqa: E402

CPU = torch.device("cpu")


DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[
        pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]),
]  # fmt: skip


def float8_mlp(recipe: str = "tensorwise", device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 128, bias=False), nn.SiLU(), nn.Linear(128, 64, bias=False))
    mlp = mlp.to(device=device, dtype=torch.bfloat16)
    config = torchao_float8.Float8LinearConfig.from_recipe_name(recipe)
    torchao_float8.convert_to_float8_training(mlp, config=config)
    return mlp


def sgd_(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(0.5 * p.grad)
            p.grad = None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_cached_weights_give_torchaos_outputs_and_gradients_bit_for_bit(compiled, device):
    """Compiled, the cache's own cast is compiled too (as ``run`` does on a GPU)."""
    torch._dynamo.reset()
    ref, ours = float8_mlp(device=device), float8_mlp(device=device)
    cache = Float8WeightCache(ours, compile_kernels=compiled)
    assert len(cache.modules) == 2 and cache.nbytes == 2 * 64 * 128
    cache.refresh()
    run_ref = torch.compile(ref, fullgraph=True) if compiled else ref
    run_ours = torch.compile(ours, fullgraph=True) if compiled else ours
    x = torch.randn(2, 32, 64, dtype=torch.bfloat16, device=device)
    grad = torch.randn(2, 32, 64, dtype=torch.bfloat16, device=device)
    for _ in range(3):  # the weights change between iterations: the cache must follow
        y_ref, y_ours = run_ref(x), run_ours(x)
        y_ref.backward(grad)
        y_ours.backward(grad)
        assert torch.equal(y_ours, y_ref)
        for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
            assert p.grad.abs().sum() > 0 and torch.equal(p.grad, q.grad)
        sgd_(ref)
        sgd_(ours)
        cache.refresh()


def test_the_compiled_cast_is_compiled_once_for_every_weight_shape():
    """Dynamo keeps a Parameter's shape static whatever ``dynamic=True`` says: passed the weights
    themselves, the cast compiled once per shape (4 times for a 405B block on the H200, seconds of
    start-up each). ``refresh`` passes plain tensors, so the second shape reuses the first graph."""
    torch._dynamo.reset()

    def model() -> nn.Module:  # a square weight first (as a block's wq): dynamo gives both sizes one symbol
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(64, 64, bias=False), nn.Linear(64, 128, bias=False), nn.Linear(128, 64, bias=False))
        torchao_float8.convert_to_float8_training(m.to(torch.bfloat16))
        return m

    cache = Float8WeightCache(model(), compile_kernels=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        cache.refresh()
        cache.refresh()
    eager = Float8WeightCache(model(), compile_kernels=False)
    eager.refresh()
    for m, e in zip(cache.modules, eager.modules, strict=True):
        assert torch.equal(m.weight_fp8.view(torch.uint8), e.weight_fp8.view(torch.uint8))
        assert torch.equal(m.weight_scale, e.weight_scale)


def test_a_stale_cache_computes_with_the_old_weights():
    """The forward really reads the cached fp8 weights: without a refresh it misses the update."""
    ref, ours = float8_mlp(), float8_mlp()
    cache = Float8WeightCache(ours)
    cache.refresh()
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        for model in (ref, ours):
            model[0].weight.mul_(-1)
    assert not torch.equal(ours(x), ref(x))
    cache.refresh()
    assert torch.equal(ours(x), ref(x))


def test_only_tensorwise_weights_are_cached():
    assert all(cacheable(m) for m in float8_mlp("tensorwise") if isinstance(m, nn.Linear))
    assert not any(cacheable(m) for m in float8_mlp("rowwise"))
    assert not cacheable(nn.Linear(4, 4))


def trainer(*overrides: str) -> Trainer:
    common = ["train.gbs=2", "train.warmup_steps=1", "train.lr=1e-3", "train.bf16_autocast=true", "train.compile=false"]
    return Trainer(resolve("tiny", 1, "fp8", "cpu", [*common, *overrides]), CPU, DistContext())


def test_fp8_training_with_cached_weights_is_torchaos_bit_for_bit():
    """Two micro-batches per step, three steps: the same losses and masters with and without the cache."""
    cached, per_microbatch = trainer(), trainer("train.fp8_weight_cache=false")
    assert cached.fp8_weights is not None and len(cached.fp8_weights.modules) == 7 * cached.plan.model.layers
    assert per_microbatch.fp8_weights is None
    assert trainer("train.fp8_recipe=rowwise").fp8_weights is None  # as the memory plan counts it
    assert cached.ga == 2
    for step in (1, 2, 3):
        want = float(per_microbatch.step(per_microbatch.batches(step), 1e-3)[0])
        got = float(cached.step(cached.batches(step), 1e-3)[0])
        assert got == want
    for a, b in zip(cached.master.masters(), per_microbatch.master.masters(), strict=True):
        assert torch.equal(a, b)


def test_the_memory_plan_counts_one_byte_per_cached_weight_element():
    fp8 = resolve("8b", 1, "fp8", "h200")
    off = resolve("8b", 1, "fp8", "h200", ["train.fp8_weight_cache=false"])
    rowwise = resolve("8b", 1, "fp8", "h200", ["train.fp8_recipe=rowwise"])
    extra = describe(fp8)["memory_breakdown_gib"]["weights_gib"] - describe(off)["memory_breakdown_gib"]["weights_gib"]
    assert block_linear_params(fp8.model, fp8.parallel) == 23 * (4096 * 6144 + 4096 * 4096 + 3 * 4096 * 14336)
    assert extra == pytest.approx(block_linear_params(fp8.model, fp8.parallel) / 2**30, abs=0.01)
    assert describe(rowwise)["memory_per_gpu_gib"] == describe(off)["memory_per_gpu_gib"]
    assert "cast once per optimizer step" in describe(fp8)["master_weights"]
    assert "fp8" not in describe(off)["master_weights"]
