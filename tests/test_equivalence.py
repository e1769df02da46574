"""ra-triton and ra-open train identically from the same seed: same losses for the first steps.

On the CPU this runs the kernel under Triton's interpreter (float32, tight tolerance); on a
GPU it runs the real kernel in bf16 at the small preset (bf16 noise tolerance).
"""

from __future__ import annotations

import pytest
import torch

from rabench.rundir import RunFolder
from rabench.training import TrainConfig, train


@pytest.fixture(scope="module")
def data_dir(austen_data) -> str:
    return austen_data(150_000)


def losses(data_dir: str, out, attn: str, device: str, preset: str, batch: int, seq: int, iters: int) -> list[float]:
    cfg = TrainConfig(attn=attn, data=data_dir, out=str(out), preset=preset, batch_size=batch, seq_len=seq,
                      max_iters=iters, eval_every=iters, eval_batches=2, log_every=1, warmup_iters=2,
                      progress_bar=False, device=device)
    train(cfg)
    return [r["train_loss"] for r in RunFolder(out).metrics() if r.get("train_loss") is not None]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter test is for machines without a GPU")
def test_ra_triton_matches_ra_open_on_cpu_interpreter(data_dir: str, tmp_path) -> None:
    a = losses(data_dir, tmp_path / "open", "ra-open", "cpu", "tiny", 2, 32, 4)
    b = losses(data_dir, tmp_path / "triton", "ra-triton", "cpu", "tiny", 2, 32, 4)
    assert len(a) == len(b) == 4
    assert b == pytest.approx(a, rel=1e-4)
    assert a[-1] < a[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_ra_triton_matches_ra_open_on_gpu(data_dir: str, tmp_path) -> None:
    a = losses(data_dir, tmp_path / "open", "ra-open", "cuda", "small", 8, 256, 20)
    b = losses(data_dir, tmp_path / "triton", "ra-triton", "cuda", "small", 8, 256, 20)
    assert len(a) == len(b) == 20
    assert b == pytest.approx(a, rel=2e-2)  # bf16 autocast: both paths round differently
    assert a[-1] < a[0] - 0.5
