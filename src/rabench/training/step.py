"""One optimizer step (forward, backward over the micro-batches, clipping, AdamW), shared by
the trainer, the suite's step-time calibration and `rabench bench`, so all three time the
same work.

`TrainStep.run` returns the step's loss as a device tensor and never synchronises the host;
whoever times steps decides where to synchronise.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from rabench.model import GPT


def make_optimizer(model: GPT, lr: float, weight_decay: float, betas: tuple[float, float],
                   device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only, never on attention gates or biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or ".core." in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")


class TrainStep:
    """Forward+backward over a step's micro-batches, gradient clipping and the optimizer update."""

    def __init__(self, model: GPT, optimizer: torch.optim.Optimizer, device: torch.device, grad_clip: float,
                 compile: bool = False, ddp_model: torch.nn.Module | None = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.grad_clip = grad_clip
        self.forward_model: torch.nn.Module = ddp_model or (torch.compile(model) if compile else model)
        self.distributed = ddp_model is not None
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                         else contextlib.nullcontext())

    def forward_backward(self, batches: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Mean loss over the micro-batches; gradients left in .grad."""
        total = torch.zeros((), device=self.device)
        n = len(batches)
        for i, (x, y) in enumerate(batches):
            last = i == n - 1
            ctx = self.forward_model.no_sync() if self.distributed and not last else contextlib.nullcontext()
            with ctx, self.autocast:
                _, loss = self.forward_model(x, y)
            (loss / n).backward()
            total += loss.detach() / n
        return total

    def run(self, batches: list[tuple[Tensor, Tensor]], lr: float) -> Tensor:
        """One full optimizer step at learning rate `lr`; returns the loss on the device (no sync)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.forward_backward(batches)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def warm_up(self, batches: list[tuple[Tensor, Tensor]], passes: int) -> None:
        """Untimed forward+backward passes (compilation, autotuning, allocator); weights untouched."""
        for _ in range(passes):
            self.forward_backward(batches)
            self.optimizer.zero_grad(set_to_none=True)
