"""Data parallelism under torchrun: one process per GPU (NCCL) or per CPU worker (gloo).

Without torchrun's environment everything here is a no-op for a single process.

Rules every helper here relies on: a collective is called by every rank, in the same
order, with tensors of the same size. Only rank 0 writes files and prints; the other
ranks' stdout goes to /dev/null (stderr is kept, so a crash on any rank is visible).
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from rabench.errors import RabenchError
from rabench.training.config import TrainConfig
from rabench.training.step import compiled, resolve_compile_mode

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_main_process() -> bool:
    """Rank 0 under torchrun (read from its environment, so it works before the group exists)."""
    return int(os.environ.get("RANK", "0")) == 0


def launched_world_size() -> int:
    """How many processes torchrun started (1 without it), read before the group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_by_torchrun() -> bool:
    return launched_world_size() > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join torchrun's process group if its variables are set.

    The group is created once per process and kept until the process exits, so a
    suite can train several runs one after another in the same group.
    """
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_available():
        raise RabenchError("WORLD_SIZE > 1 (torchrun) but this PyTorch build has no torch.distributed")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        atexit.register(shutdown_process_group)
    info = DistInfo(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=dist.get_world_size())
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not info.is_main:
        _silence_stdout()
    return info


def wrap_ddp(model: torch.nn.Module, device: torch.device, info: DistInfo, cfg: TrainConfig) -> DistributedDataParallel:
    """The model as every rank trains it: compiled in the run's --compile-mode, inside DDP with the
    run's ddp_* settings (TrainConfig), the bf16 communication hook registered when asked.

    DDP wraps the compiled module; TorchDynamo sees the active DDP module when it compiles and
    splits the graph at DDP's bucket boundaries (its DDPOptimizer), so each bucket's all-reduce
    can start while the rest of the backward runs."""
    check_ddp_settings(cfg)
    mode = resolve_compile_mode(cfg.compile, cfg.compile_mode)
    ids = [info.local_rank] if device.type == "cuda" else None
    ddp = DistributedDataParallel(compiled(model, mode), device_ids=ids, bucket_cap_mb=cfg.ddp_bucket_cap_mb,
                                  gradient_as_bucket_view=cfg.ddp_grad_as_bucket_view,
                                  static_graph=cfg.ddp_static_graph)
    if cfg.ddp_comm_hook == "bf16":
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook

        ddp.register_comm_hook(None, bf16_compress_hook)  # None: the default process group
    return ddp


def check_ddp_settings(cfg: TrainConfig) -> None:
    """Refuse, in one line, the ddp_* combinations PyTorch cannot run (it would fail inside the first step)."""
    if cfg.ddp_comm_hook == "bf16" and dist.get_backend() != "nccl":
        raise RabenchError(f"--ddp-comm-hook bf16 needs the NCCL backend (GPUs); this run uses {dist.get_backend()}")
    if cfg.ddp_static_graph and cfg.grad_accum > 1:
        # DDP's static graph records its plan in the first backward, which must not run under no_sync()
        raise RabenchError("--ddp-static-graph works with --grad-accum 1 only (DDP fails when the first backward "
                           "accumulates under no_sync)")


def _silence_stdout() -> None:
    """Rank 0 alone prints results (the CLI's final line, suite progress); others write nothing to stdout."""
    if getattr(sys.stdout, "_rabench_silenced", False):
        return
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    devnull._rabench_silenced = True  # type: ignore[attr-defined]
    sys.stdout = devnull


def _reduce(values: Sequence[float], op, device: torch.device) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def step_stats(loss: float, seconds: float, info: DistInfo, device: torch.device) -> tuple[float, float]:
    """One collective per optimizer step: (loss averaged over ranks, the slowest rank's step time).

    Every rank then holds the same loss and the same time, so the time budget, the
    learning-rate schedule and the stop decision are identical everywhere.
    """
    if not info.enabled:
        return loss, seconds
    t = torch.tensor([loss, seconds], dtype=torch.float64, device=device)
    parts = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(parts, t)
    rows = torch.stack(parts).cpu()
    return float(rows[:, 0].mean()), float(rows[:, 1].max())


def gather_indexed(values: dict[int, float], n: int, info: DistInfo, device: torch.device) -> list[float]:
    """Every rank contributes values at its own indices in [0, n); returns the full list on every rank.

    Each index is owned by exactly one rank and the others contribute 0.0, so the sum
    over ranks reproduces each value bit for bit; the caller can then reduce them in
    the same order a single process would.
    """
    if not info.enabled:
        return [values[i] for i in range(n)]
    full = [0.0] * n
    for i, v in values.items():
        full[i] = v
    return _reduce(full, dist.ReduceOp.SUM, device) if n else []


def on_main(fn: Callable[[], T], info: DistInfo) -> T | None:
    """Run fn on rank 0 only; a RabenchError it raises is raised on every rank, so no rank is left waiting.

    Returns fn's value on rank 0 and None elsewhere. The other ranks wait for rank 0's
    broadcast, so whatever fn wrote is on disk before any rank goes on.
    """
    if not info.enabled:
        return fn()
    result, error = None, None
    if info.is_main:
        try:
            result = fn()
        except RabenchError as exc:
            error = str(exc)
    box = [error]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise RabenchError(box[0] if info.is_main else f"(rank {info.rank}) {box[0]}")
    return result


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: T, info: DistInfo) -> T:
    """Rank 0's `obj` on every rank (a no-op for one process)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flags: Sequence[bool], info: DistInfo, device: torch.device) -> list[bool]:
    """Each flag true on every rank when it is true on any rank, so all ranks take the same branch."""
    if not info.enabled:
        return list(flags)
    return [v > 0 for v in _reduce([float(f) for f in flags], dist.ReduceOp.MAX, device)]
