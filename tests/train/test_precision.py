"""bf16 weights with fp32 masters kept as two 16-bit halves: exact fp32 masters, torch's AdamW on them."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainbench.config import TrainConfig
from trainbench.recipe.resolve import resolve
from trainbench.train.dist import DistContext
from trainbench.train.loop import Trainer
from trainbench.train.precision import SplitMasterAdamW, join_fp32, split_fp32

CPU = torch.device("cpu")
FINITE_FP32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(FINITE_FP32, min_size=1, max_size=64))
def test_halves_rebuild_the_fp32_master_bit_for_bit(values):
    master = torch.tensor(values, dtype=torch.float32)
    high, low = split_fp32(master)
    assert high.dtype == torch.bfloat16 and low.dtype == torch.int16
    assert torch.equal(join_fp32(high, low).view(torch.int32), master.view(torch.int32))


def test_high_half_is_the_master_rounded_to_nearest_bf16():
    """torch's fp32 -> bf16 cast rounds to nearest even; the halves round ties away from zero, so the
    two agree everywhere but on exact ties (low half 0x8000), about one value in 65536."""
    torch.manual_seed(0)
    master = torch.randn(1_000_000) * torch.logspace(-30, 30, 1_000_000)
    high, low = split_fp32(master)
    not_tie = low != -0x8000
    assert not_tie.float().mean() > 0.999
    assert torch.equal(high[not_tie], master[not_tie].to(torch.bfloat16))
    # on a tie the magnitude rounds up: exactly half a bf16 ulp above the master
    tie = torch.tensor([1.0 + 2**-8], dtype=torch.float32)  # halfway between 1 and 1 + 2^-7
    assert split_fp32(tie)[0].item() == 1.0 + 2**-7 and split_fp32(-tie)[0].item() == -(1.0 + 2**-7)


def _reference_and_split(compile_kernels: bool):
    torch.manual_seed(0)
    t = TrainConfig(lr=1e-2, weight_decay=0.1)
    shapes = [(64, 32), (7,), (3, 5, 2)]
    ref = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    ours = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    adam = torch.optim.AdamW(ref, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.adam_eps, weight_decay=t.weight_decay)
    split = SplitMasterAdamW(ours, t, compile_kernels=compile_kernels)
    return ref, adam, split


@pytest.mark.parametrize("compile_kernels", [False, True], ids=["eager", "inductor"])
def test_split_adamw_is_torch_adamw_on_the_fp32_masters(compile_kernels):
    torch._dynamo.reset()
    ref, adam, split = _reference_and_split(compile_kernels)
    for step in range(5):
        lr = 1e-2 * (step + 1) / 5  # a changing lr, as the warm-up does
        adam.param_groups[0]["lr"] = split.param_groups[0]["lr"] = lr
        for p, g in zip(ref, split.grads, strict=True):
            grad = torch.randn_like(p)
            p.grad = grad.clone()
            g.copy_(grad)
        adam.step()
        split.step()
        for want, got, weight in zip(ref, split.masters(), split.params, strict=True):
            torch.testing.assert_close(got, want.detach(), rtol=2e-6, atol=1e-7)
            assert weight.dtype == torch.bfloat16
            assert torch.equal(weight.detach(), split_fp32(got)[0])  # the bf16 weight is the master's high half
        assert all(not g.any() for g in split.grads)  # each step starts its sums from zero


def test_main_gradients_accumulate_in_fp32_and_clip_as_torch_does():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4, bias=False)
    fp32_weight = lin.weight.detach().clone()
    split = SplitMasterAdamW([lin.weight], TrainConfig())
    assert lin.weight.dtype == torch.bfloat16
    assert torch.equal(split.masters()[0], fp32_weight)  # the master is the unrounded weight
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    for _ in range(3):  # three micro-batches accumulate
        lin(x).float().sum().backward()
        assert lin.weight.grad is None  # each micro-batch's bf16 gradient is folded in and freed
    one = torch.autograd.grad(torch.nn.functional.linear(x, lin.weight).float().sum(), lin.weight)[0]
    assert split.grads[0].dtype == torch.float32
    torch.testing.assert_close(split.grads[0], 3 * one.float())
    holder = torch.nn.Parameter(torch.zeros(4, 8))
    holder.grad = split.grads[0].clone()
    want = torch.nn.utils.clip_grad_norm_([holder], 0.5)
    got = split.clip_(0.5)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(split.grads[0], holder.grad)


def test_trainer_with_bf16_masters_tracks_the_fp32_trainer():
    """CPU bf16 is emulated but exact enough to compare: 3 steps, losses within bf16 noise."""
    fp32 = resolve("tiny", 1, "bf16", "cpu", ["train.gbs=2", "train.warmup_steps=1", "train.lr=1e-3"])
    bf16 = resolve("tiny", 1, "bf16", "cpu", ["train.gbs=2", "train.warmup_steps=1", "train.lr=1e-3",
                                               "train.bf16_autocast=true"])  # fmt: skip
    a, b = Trainer(fp32, CPU, DistContext()), Trainer(bf16, CPU, DistContext())
    assert a.master is None and b.master is not None
    assert b.model.layers["0"].attention.wq.weight.dtype == torch.bfloat16
    assert b.model.rope_cache.dtype == torch.float32  # buffers keep their precision
    for step in (1, 2, 3):
        la = float(a.step(a.batches(step), 1e-3)[0])
        lb = float(b.step(b.batches(step), 1e-3)[0])
        assert lb == pytest.approx(la, rel=2e-2)
    drift = (b.master.masters()[0] - a.params[0].detach()).norm() / a.params[0].detach().norm()
    assert drift < 1e-2


def test_compiled_accumulation_matches_eager():
    """The inductor-compiled fp32 += bf16 that GPUs use folds in exactly what the eager add does."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager, compiled = torch.nn.Linear(8, 4, bias=False), torch.nn.Linear(8, 4, bias=False)
    compiled.load_state_dict(eager.state_dict())
    a = SplitMasterAdamW([eager.weight], TrainConfig())
    b = SplitMasterAdamW([compiled.weight], TrainConfig(), compile_kernels=True)
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    for _ in range(2):
        eager(x).float().sum().backward()
        compiled(x).float().sum().backward()
    assert b.grads[0].abs().sum() > 0
    assert torch.equal(a.grads[0], b.grads[0])


def test_compiled_update_is_compiled_once_whatever_the_learning_rate():
    """torch 2.11 specialises compiled functions on float arguments: a per-step lr passed as a float
    recompiled the update every step (seen on the H200). The changing scalars travel as a tensor."""
    torch._dynamo.reset()
    ours = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    split = SplitMasterAdamW(ours, TrainConfig(), compile_kernels=True)
    # one graph for every parameter shape and rank too (the tensors go in flat): no recompiles at all
    with torch._dynamo.config.patch(specialize_float=True, error_on_recompile=True):
        (ours[0].sum() + ours[1].sum()).backward()  # the accumulation hooks: (4, 3) then (5,)
        for lr in (1e-4, 2e-4, 3e-4):
            split.param_groups[0]["lr"] = lr
            split.step()
    assert torch.equal(split.grads[0], torch.zeros(4, 3))  # the step started the next sums at zero


def test_fp8_training_tracks_bf16_on_the_same_weights_and_data():
    """torchao float8 (tensorwise) on the split-master path: the loss of each step within 1e-3 of
    bf16's (the H200's 50-step runs agree within 2.3e-4). CPU bf16 and fp8 matmuls are emulated."""
    pytest.importorskip("torchao")
    common = ["train.gbs=2", "train.warmup_steps=1", "train.lr=1e-3", "train.bf16_autocast=true",
              "train.compile=false"]  # fmt: skip
    bf16 = Trainer(resolve("tiny", 1, "bf16", "cpu", common), CPU, DistContext())
    fp8 = Trainer(resolve("tiny", 1, "fp8", "cpu", common), CPU, DistContext())
    assert type(fp8.model.layers["0"].attention.wq).__name__.startswith("Float8Linear") and fp8.master is not None
    for step in (1, 2, 3):
        want = float(bf16.step(bf16.batches(step), 1e-3)[0])
        got = float(fp8.step(fp8.batches(step), 1e-3)[0])
        assert got == pytest.approx(want, rel=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_kernels_are_tuned_on_scratch_then_reused_for_every_parameter():
    """Construction compiles and autotunes both kernels on scratch tensors; the parameters' own calls
    (2-D and 1-D, other sizes) reuse those graphs and give the eager update's masters."""
    torch._dynamo.reset()
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(shape, device=cuda)) for shape in ((640, 48), (40,))]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    compiled = SplitMasterAdamW(ours, TrainConfig(), compile_kernels=True)
    eager = SplitMasterAdamW(ref, TrainConfig(), compile_kernels=False)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            for opt, params in ((compiled, ours), (eager, ref)):
                sum((p.float() ** 2).sum() for p in params).backward()
                opt.step()
    for got, want in zip(compiled.masters(), eager.masters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_the_scratch_tuning_compiles_the_graphs_the_training_step_then_uses(monkeypatch):
    """The GPU tunes on scratch tensors at construction (``_tune_on_scratch``); run here on CPU with
    small scratch: the parameters' accumulations and updates after it must not compile again (on the
    H200 a graph tuned with grad mode on was compiled and tuned again in the step, 35 s)."""
    import trainbench.train.precision as precision

    monkeypatch.setattr(precision, "TUNE_NUMEL", 1000)
    torch._dynamo.reset()
    ours = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    split = SplitMasterAdamW(ours, TrainConfig(), compile_kernels=True)
    split._tune_on_scratch(CPU)
    with torch._dynamo.config.patch(error_on_recompile=True):
        (ours[0].float().sum() + ours[1].float().sum()).backward()
        split.step()
