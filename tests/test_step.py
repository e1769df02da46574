"""TrainStep on the CPU: what it returns, that it trains, that warm-up leaves weights alone."""

from __future__ import annotations

import pytest
import torch

from rabench.errors import RabenchError
from rabench.model import GPT, preset
from rabench.training.step import TrainStep, make_optimizer, set_lr


def tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(preset("tiny"), "sdpa")


def batches(n: int = 1, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        idx = torch.randint(0, 64, (4, 33), generator=g)  # a small vocabulary slice: learnable
        out.append((idx[:, :-1].contiguous(), idx[:, 1:].contiguous()))
    return out


def test_run_returns_a_device_loss_and_trains() -> None:
    model = tiny()
    dev = torch.device("cpu")
    step = TrainStep(model, make_optimizer(model, 1e-2, 0.1, (0.9, 0.95), dev), dev, grad_clip=1.0)
    data = batches(2)
    losses = [step.run(data, 1e-2) for _ in range(8)]
    assert all(isinstance(l, torch.Tensor) and l.dim() == 0 for l in losses)
    assert losses[-1].item() < losses[0].item() - 0.5
    assert all(p.grad is None for p in model.parameters())  # zeroed after each step


def test_loss_is_the_mean_over_micro_batches() -> None:
    model = tiny()
    dev = torch.device("cpu")
    step = TrainStep(model, make_optimizer(model, 0.0, 0.0, (0.9, 0.95), dev), dev, grad_clip=1.0)
    data = batches(3)
    with torch.no_grad():
        want = torch.stack([model(x, y)[1] for x, y in data]).mean()
    assert step.run(data, 0.0).item() == pytest.approx(want.item(), rel=1e-5)


def test_grad_norm_is_the_norm_before_clipping() -> None:
    """The step keeps the global gradient norm the clip saw (the trainer logs its window maximum)."""
    data = batches(2)
    reference = tiny()
    loss = sum(reference(x, y)[1] for x, y in data) / len(data)
    loss.backward()
    want = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in reference.parameters() if p.grad is not None))
    model = tiny()
    dev = torch.device("cpu")
    step = TrainStep(model, make_optimizer(model, 1e-2, 0.1, (0.9, 0.95), dev), dev, grad_clip=0.01)
    step.run(data, 1e-2)
    assert step.grad_norm is not None and want.item() > 0.01  # the clip was active: the norm is the unclipped one
    assert step.grad_norm.item() == pytest.approx(want.item(), rel=1e-5)


def test_warm_up_leaves_weights_untouched() -> None:
    model = tiny()
    dev = torch.device("cpu")
    before = [p.detach().clone() for p in model.parameters()]
    step = TrainStep(model, make_optimizer(model, 1e-2, 0.1, (0.9, 0.95), dev), dev, grad_clip=1.0)
    step.warm_up(batches(1), passes=2)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_a_compiled_update_trains_like_the_eager_one() -> None:
    """Compiling the optimizer update in warm-up leaves weights and Adam state as they were: the
    compiled AdamW divides by its step size, so compiling it at lr 0 once wrote NaN into every weight."""
    dev = torch.device("cpu")
    data = batches(2)
    losses = {}
    for compiled in (False, True):
        model = tiny()
        before = [p.detach().clone() for p in model.parameters()]
        step = TrainStep(model, make_optimizer(model, 1e-2, 0.1, (0.9, 0.95), dev), dev, grad_clip=1.0,
                         compile_optimizer=compiled)
        step.warm_up(data, passes=1)
        assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
        losses[compiled] = [step.run(data, 1e-2).item() for _ in range(3)]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_set_lr_fills_tensor_learning_rates_in_place() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    lr = torch.tensor(0.5)
    opt = torch.optim.AdamW([{"params": [p]}], lr=lr)
    set_lr(opt, 0.25)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.25
    opt2 = torch.optim.AdamW([p], lr=0.5)
    set_lr(opt2, 0.125)
    assert opt2.param_groups[0]["lr"] == 0.125


def test_bad_compile_mode_and_optimizer_are_rabench_errors() -> None:
    model = tiny()
    dev = torch.device("cpu")
    with pytest.raises(RabenchError, match="compile mode"):
        TrainStep(model, make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), dev), dev, 1.0, compile_mode="fast")
    with pytest.raises(RabenchError, match="optimizer impl"):
        make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), dev, impl="sgd")
