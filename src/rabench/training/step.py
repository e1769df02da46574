"""One optimizer step (forward, backward over the micro-batches, clipping, AdamW), shared by
the trainer, the suite's step-time calibration and `rabench bench`, so all three time the
same work.

`TrainStep.run` returns the step's loss as a device tensor and never synchronises the host;
whoever times steps decides where to synchronise (the trainer: once per log window).  Nothing
inside reads a value back to the host, so the CPU can queue the next step while the GPU runs
this one.

Compile modes (torch.compile of the model; the attention kernels are visible to it, see
rabench.kernels.op):
  None / "none"                  eager
  "default"                      inductor, no CUDA graphs
  "reduce-overhead"              inductor + CUDA graphs (cudagraph trees): the forward and the
                                 backward each replay as one graph, no per-kernel launch cost
  "max-autotune-no-cudagraphs"   inductor with GEMM autotuning (slow to compile)
`compile_optimizer=True` also compiles gradient clipping + the AdamW update into one inductor
graph; otherwise they run as fused/foreach kernels.  The learning rate lives in a device tensor
(fused AdamW reads it there), so changing it every step neither syncs nor invalidates a graph.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from rabench.errors import RabenchError
from rabench.model import GPT

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune-no-cudagraphs")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work: the edge of every timed window of steps."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_uuid(device: torch.device) -> str | None:
    """The physical card's UUID (provenance: hostnames repeat across rented machines), or None."""
    if device.type != "cuda":
        return None
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    return None if uuid is None else str(uuid)


def gate_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Every attention core's gate parameters (AttentionCore.gate_parameters), in model order."""
    from rabench.attention.base import AttentionCore

    found: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, AttentionCore):
            found |= {id(p): p for p in module.gate_parameters()}
    return list(found.values())


def make_optimizer(model: GPT, lr: float, weight_decay: float, betas: tuple[float, float],
                   device: torch.device, impl: str = "fused", gate_lr_mult: float = 1.0) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only, never on attention gates or biases.

    impl: "fused" (one CUDA kernel set, lr read from a device tensor) or "foreach" (the form
    torch.compile turns into its own fused kernels: use with TrainStep(compile_optimizer=True)).
    On a CPU both fall back to the plain foreach implementation with a float lr.
    gate_lr_mult: the gate parameters (gate_parameters) train at this multiple of the learning
    rate, in a third group (`lr_mult`, which set_lr applies). At 1 they stay in the no-decay
    group, so the optimizer, and the checkpoints of runs made before the multiplier existed,
    are exactly as they were.
    """
    if impl not in ("fused", "foreach"):
        raise RabenchError(f"optimizer impl {impl!r}: choose fused or foreach")
    gates = {id(p) for p in gate_parameters(model)} if gate_lr_mult != 1.0 else set()
    decay, no_decay, gated = [], [], []
    for name, p in model.named_parameters():
        (gated if id(p) in gates else no_decay if p.dim() < 2 or ".core." in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if gated:
        gate_lr = float(lr) * gate_lr_mult
        groups.append({"params": gated, "weight_decay": 0.0, "lr_mult": gate_lr_mult,
                       "lr": torch.tensor(gate_lr, device=device) if device.type == "cuda" else gate_lr})
    if device.type != "cuda":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    lr_t = torch.tensor(float(lr), device=device)
    if impl == "fused":
        return torch.optim.AdamW(groups, lr=lr_t, betas=betas, fused=True)
    return torch.optim.AdamW(groups, lr=lr_t, betas=betas, foreach=True, capturable=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply `lr` (times the group's `lr_mult`, if it has one) to every group: a device fill for
    tensor learning rates (no sync, no new graph constant), a plain assignment for float ones."""
    seen: set[int] = set()
    for group in optimizer.param_groups:
        cur = group["lr"]
        group_lr = lr * group["lr_mult"] if "lr_mult" in group else lr
        if isinstance(cur, Tensor):
            if id(cur) not in seen:  # groups may share one lr tensor (never a group with its own lr_mult)
                cur.fill_(group_lr)
                seen.add(id(cur))
        else:
            group["lr"] = group_lr


def resolve_compile_mode(compile: bool, compile_mode: str | None) -> str:
    """The one reading of (compile, compile_mode): an explicit mode wins, else "default" when compiling."""
    mode = compile_mode if compile_mode is not None else ("default" if compile else "none")
    if mode not in COMPILE_MODES:
        raise RabenchError(f"compile mode {mode!r}: choose from {', '.join(COMPILE_MODES)}")
    return mode


def compiled(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """`model` under torch.compile in `mode` (a COMPILE_MODES name; "none" returns the model itself).
    TrainStep and the data-parallel wrapper both compile through here, so a mode means the same in both."""
    if mode == "none":
        return model
    return torch.compile(model, mode=None if mode == "default" else mode)


class TrainStep:
    """Forward+backward over a step's micro-batches, gradient clipping and the optimizer update."""

    def __init__(self, model: GPT, optimizer: torch.optim.Optimizer, device: torch.device, grad_clip: float,
                 compile: bool = False, ddp_model: torch.nn.Module | None = None,
                 compile_mode: str | None = None, compile_optimizer: bool = False) -> None:
        mode = resolve_compile_mode(compile, compile_mode)
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.grad_clip = grad_clip
        self.compile_mode = mode
        self.cuda_graphs = mode == "reduce-overhead" and device.type == "cuda"
        if ddp_model is not None:
            self.forward_model: torch.nn.Module = ddp_model
        else:
            self.forward_model = compiled(model, mode)
        self.distributed = ddp_model is not None
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.compiles_update = compile_optimizer
        self.update = torch.compile(self._update) if compile_optimizer else self._update
        self.eager_forward_done = False  # warm-up's one eager forward (_eager_forward) has run
        self.grad_norm: Tensor | None = None  # the last step's gradient norm before clipping, on the device
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                         else contextlib.nullcontext())

    def forward_backward(self, batches: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Mean loss over the micro-batches; gradients left in .grad."""
        if self.cuda_graphs:
            # a new iteration for cudagraph trees: last step's graph outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
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

    def _update(self) -> Tensor:
        """Clip the global gradient norm and apply AdamW; returns the norm before clipping, on the
        device (no host read: the trainer folds it into its log window)."""
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.optimizer.step()
        return norm

    def run(self, batches: list[tuple[Tensor, Tensor]], lr: float, step: int | None = None) -> Tensor:
        """One full optimizer step at learning rate `lr`; returns the loss on the device (no sync).
        step: this optimizer step's index, told to the model first (step schedules such as
        ra-amortized's refreshes); None leaves the model's step as it is."""
        if step is not None:
            self.model.set_step(step)
        set_lr(self.optimizer, lr)
        loss = self.forward_backward(batches)
        self.grad_norm = self.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def warm_up(self, batches: list[tuple[Tensor, Tensor]], passes: int, every_path: bool = True) -> None:
        """Untimed forward+backward passes (compilation, autotuning, allocator); weights untouched.

        Under CUDA graphs the first passes record graphs, so callers should pass >= 3.  With
        `every_path`, each of the model's warm-up steps (a step schedule's refresh and reuse
        steps) gets `passes` passes; the caller sets the step again before training.  A
        compiled optimizer update is compiled here too, by one update on zero gradients that
        `_compile_update` then undoes (weights copied back, Adam state zeroed).
        A compiled model first gets one eager forward (`_eager_forward`), on the first warm-up
        only: later ones (the trainer times one) stay compiled passes."""
        if self.forward_model is not self.model and not self.eager_forward_done:
            self._eager_forward(batches[0][0])
            self.eager_forward_done = True
        for step in self.model.warm_up_steps() if every_path else (None,):
            if step is not None:
                self.model.set_step(step)
            for _ in range(passes):
                self.forward_backward(batches)
                self.optimizer.zero_grad(set_to_none=True)
        if self.compiles_update and not self.optimizer.state:  # never on an optimizer with moments
            self._compile_update()

    @torch.no_grad()
    def _eager_forward(self, x: Tensor) -> None:
        """One forward outside the compiler, so that state a module builds on its first training
        forward (ra-amortized's pattern buffer) exists before compilation. Built under the
        compiler it would break the first step's graph, and a graph that ends at a break is
        replayed that way on every later step. Under the same autocast as the compiled forwards,
        so that what it builds has their dtypes."""
        with self.autocast:
            self.model(x)

    def _compile_update(self) -> None:
        """Compile the update by running it once on zero gradients, then undo what it did: the
        weights are copied back and the Adam state (step counts, moments) is zeroed. It runs at
        the optimizer's own nonzero lr: on the CPU (float lr) the compiled AdamW divides by its
        step size, and an update at lr 0 wrote NaN into every weight."""
        lr = self.optimizer.param_groups[0]["lr"]
        lr = float(lr) if isinstance(lr, Tensor) else lr
        saved = [p.detach().clone() for p in self.params]
        for p in self.params:
            p.grad = torch.zeros_like(p)
        set_lr(self.optimizer, lr if lr > 0 else 1e-3)
        self.update()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, before in zip(self.params, saved):
                p.copy_(before)
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, Tensor):
                    value.zero_()
                elif key == "step":
                    state[key] = 0
        set_lr(self.optimizer, lr)
