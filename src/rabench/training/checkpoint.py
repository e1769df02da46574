"""Checkpoints written atomically, so a crash or kill loses at most the work since the last one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rabench.errors import RabenchError

CHECKPOINT_NAME = "ckpt.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over the old one."""
    path = run_dir / CHECKPOINT_NAME
    tmp = run_dir / (CHECKPOINT_NAME + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise RabenchError(f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it to start the run over") from None
