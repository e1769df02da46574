"""Data parallelism under torchrun: one process per GPU (NCCL) or per CPU worker (gloo).

Without torchrun's environment everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def init_distributed(device_type: str) -> DistInfo:
    """Join torchrun's process group if its variables are set."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    info = DistInfo(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=dist.get_world_size())
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def all_mean(value: float, info: DistInfo, device: torch.device) -> float:
    """Average a Python float over ranks."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.item() / info.world_size


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if it is True on any rank, so all ranks stop together."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
