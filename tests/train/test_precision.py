"""bf16 weights with fp32 masters: the same training as fp32 weights under autocast, to bf16 noise."""

import pytest
import torch

from trainbench.recipe.resolve import resolve
from trainbench.train.dist import DistContext
from trainbench.train.loop import Trainer
from trainbench.train.precision import Bf16MasterWeights

CPU = torch.device("cpu")


def test_main_gradients_accumulate_in_fp32_and_masters_drive_the_weights():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4, bias=False)
    fp32_weight = lin.weight.detach().clone()
    mp = Bf16MasterWeights([lin.weight])
    assert lin.weight.dtype == torch.bfloat16 and mp.masters[0].dtype == torch.float32
    assert torch.equal(mp.masters[0], fp32_weight)  # the master is the unrounded weight
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    for _ in range(3):  # three micro-batches accumulate
        lin(x).float().sum().backward()
        assert lin.weight.grad is None  # each micro-batch's bf16 gradient is folded in and freed
    one = torch.autograd.grad(torch.nn.functional.linear(x, lin.weight).float().sum(), lin.weight)[0]
    assert mp.main_grads[0].dtype == torch.float32
    torch.testing.assert_close(mp.main_grads[0], 3 * one.float())
    opt = torch.optim.SGD(mp.optimizer_params, lr=0.5)
    opt.step()
    mp.after_optimizer_step()
    torch.testing.assert_close(mp.masters[0], fp32_weight - 0.5 * 3 * one.float())
    assert torch.equal(lin.weight, mp.masters[0].to(torch.bfloat16))
    assert not mp.main_grads[0].any()  # next step starts from zero


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
    drift = (b.master.masters[0] - a.params[0].detach()).norm() / a.params[0].detach().norm()
    assert drift < 1e-2


def test_compiled_accumulation_matches_eager():
    """The inductor-compiled fp32 += bf16 that GPUs use folds in exactly what the eager add does."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager, compiled = torch.nn.Linear(8, 4, bias=False), torch.nn.Linear(8, 4, bias=False)
    compiled.load_state_dict(eager.state_dict())
    a = Bf16MasterWeights([eager.weight])
    b = Bf16MasterWeights([compiled.weight], compile_accumulate=True)
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    for _ in range(2):
        eager(x).float().sum().backward()
        compiled(x).float().sum().backward()
    assert b.main_grads[0].abs().sum() > 0
    assert torch.equal(a.main_grads[0], b.main_grads[0])
