"""Which physical machine session made a run or a calibration: `machine_id`.

Hostnames do not identify a machine: rented hosts often share one (`vm`), and two leases of
"the same" kind are different cards. A run therefore records a short hash of the
node's GPU UUIDs (all of them, sorted, whatever CUDA_VISIBLE_DEVICES a worker sees, so that
the workers of one suite on one node agree) and the kernel's boot id (a new boot is a new
session, even on the same cards). On a CPU machine the boot id alone. Two runs with the same
machine_id ran on the same cards between the same two reboots; the report pairs within it and
a stored step-time calibration is only reused on it.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import subprocess
import uuid
from pathlib import Path

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
NVIDIA_PROC_GPUS = Path("/proc/driver/nvidia/gpus")


@functools.lru_cache(maxsize=1)
def machine_id() -> str:
    """12 hex digits: sha256 over the node's sorted GPU UUIDs and the boot id."""
    parts = sorted(node_gpu_uuids()) + [boot_id()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def boot_id() -> str:
    """The kernel's boot id (Linux); elsewhere the host name and hardware address, the best there is."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return f"host:{socket.gethostname()}:{uuid.getnode():012x}"


def node_gpu_uuids() -> list[str]:
    """UUIDs of every NVIDIA GPU of the node (not only the visible ones), normalised; [] without any.

    Read from the driver's /proc files, else from nvidia-smi; where neither exists (another
    vendor's GPUs), the cards PyTorch can see."""
    found = _uuids_from_proc() or _uuids_from_nvidia_smi() or _uuids_from_torch()
    return sorted({_normalise(u) for u in found})


def _normalise(text: str) -> str:
    text = text.strip().lower()
    return text[4:] if text.startswith("gpu-") else text


def _uuids_from_proc() -> list[str]:
    uuids = []
    for info in sorted(NVIDIA_PROC_GPUS.glob("*/information")):
        try:
            lines = info.read_text().splitlines()
        except OSError:
            continue
        uuids += [line.split(":", 1)[1] for line in lines if line.startswith("GPU UUID:")]
    return uuids


def _uuids_from_nvidia_smi() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line for line in out.splitlines() if line.strip()]


def _uuids_from_torch() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    uuids = (getattr(torch.cuda.get_device_properties(i), "uuid", None) for i in range(torch.cuda.device_count()))
    return [str(u) for u in uuids if u is not None]
