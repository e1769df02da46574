"""The trainer end to end on the tiny preset: budgets, resume, refusal, NaN stop, schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rabench.data import prepare
from rabench.errors import RabenchError
from rabench.training import TrainConfig, parse_duration, train
from rabench.training.metrics import read_metrics
from rabench.training.schedule import budget_lr, plateau_lr


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("data") / "austen"
    prepare(["austen"], out, max_tokens=120_000, progress=False)
    return str(out)


def config(data_dir: str, out: Path, **kw) -> TrainConfig:
    base = dict(attn="sdpa", data=data_dir, out=str(out), preset="tiny", batch_size=4, seq_len=32,
                eval_every=5, eval_batches=2, warmup_iters=2, log_every=2, progress_bar=False, device="cpu")
    return TrainConfig(**(base | kw))


def test_iteration_budget_writes_config_metrics_summary(data_dir: str, tmp_path: Path) -> None:
    summary = train(config(data_dir, tmp_path / "run", attn="ra-open", max_iters=12))
    assert summary["status"] == "done" and summary["iters"] == 12 and summary["stop_reason"] == "max iters"
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["attn"] == "ra-open" and cfg["n_layer"] == 2 and cfg["tokens_per_iter"] == 4 * 32
    assert "excludes evaluation" in cfg["time_axis"]
    records = read_metrics(tmp_path / "run")
    assert [r["iter"] for r in records if "val_loss" in r] == [0, 5, 10, 12]
    for key in ("iter", "tokens", "train_time_s", "wall_time_s", "train_loss", "lr", "ms_per_iter", "tokens_per_s", "peak_mem_gb"):
        assert key in records[-1]
    assert len(records[-1]["gates"]["w_rec"]) == 2  # per-layer gate means for RA
    assert records[-1]["val_loss"] < records[0]["val_loss"]  # it learns
    times = [r["train_time_s"] for r in records]
    assert times == sorted(times) and records[-1]["wall_time_s"] >= records[-1]["train_time_s"]


def test_time_budget_stops_on_training_time(data_dir: str, tmp_path: Path) -> None:
    summary = train(config(data_dir, tmp_path / "run", time_budget_s=2.0))
    assert summary["stop_reason"] == "time budget"
    assert 2.0 <= summary["train_time_s"] < 2.0 + 5 * summary["ms_per_iter"] / 1000 + 0.5
    lrs = [r["lr"] for r in read_metrics(tmp_path / "run")]
    assert lrs[-1] == pytest.approx(3e-4, rel=0.05)  # annealed to min_lr by the end of the budget


def test_reusing_a_run_folder_is_refused_and_resume_extends_the_run(data_dir: str, tmp_path: Path) -> None:
    train(config(data_dir, tmp_path / "straight", max_iters=10))
    train(config(data_dir, tmp_path / "split", max_iters=6))
    with pytest.raises(RabenchError, match="already holds a run; pass --resume"):
        train(config(data_dir, tmp_path / "split", max_iters=10))
    resumed = train(config(data_dir, tmp_path / "split", max_iters=10, resume=True))
    assert resumed["iters"] == 10
    straight = [r["iter"] for r in read_metrics(tmp_path / "straight")]
    split = [r["iter"] for r in read_metrics(tmp_path / "split")]
    assert len(set(split)) == len(split)  # no duplicated log points
    assert set(split) >= set(straight) - {6} and split[-1] == 10  # the 6-iteration plan also logged its end
    with pytest.raises(RabenchError, match="seed is 1 but the run"):
        train(config(data_dir, tmp_path / "split", max_iters=12, resume=True, seed=1))


def test_interrupted_run_resumes_to_the_same_losses(data_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C at iter 5 checkpoints; --resume then gives exactly the uninterrupted run's curve."""
    from rabench.training.trainer import Trainer

    train(config(data_dir, tmp_path / "full", max_iters=8, eval_every=4))
    real_step = Trainer.train_step

    def interrupt_at_5(self, it):
        if it == 5:
            raise KeyboardInterrupt
        return real_step(self, it)

    monkeypatch.setattr(Trainer, "train_step", interrupt_at_5)
    with pytest.raises(RabenchError, match="interrupted at iter 5; `--resume`"):
        train(config(data_dir, tmp_path / "cut", max_iters=8, eval_every=4))
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(Trainer, "train_step", real_step)
    train(config(data_dir, tmp_path / "cut", max_iters=8, eval_every=4, resume=True))
    full = read_metrics(tmp_path / "full")
    cut = read_metrics(tmp_path / "cut")
    assert [r["iter"] for r in cut] == [r["iter"] for r in full]
    def column(records: list[dict], key: str) -> list[float]:
        return [r[key] for r in records if r.get(key) is not None]

    assert column(cut, "val_loss") == pytest.approx(column(full, "val_loss"), rel=1e-6)
    # the log window cut by the interrupt (iter 5) averages fewer steps; later windows match
    assert cut[-1]["train_loss"] == pytest.approx(full[-1]["train_loss"], rel=1e-6)
    assert len(column(cut, "val_loss")) == 3


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(data_dir: str, tmp_path: Path) -> None:
    with pytest.raises(RabenchError, match="loss became nan|loss became inf"):
        train(config(data_dir, tmp_path / "run", max_iters=30, lr=1e6, grad_clip=1e9, ckpt_every_s=0.0))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "stopped_nan"


def test_missing_budget_and_bad_data_are_one_line_errors(data_dir: str, tmp_path: Path) -> None:
    with pytest.raises(RabenchError, match="give a budget"):
        train(config(data_dir, tmp_path / "a"))
    with pytest.raises(RabenchError, match="not a prepared data folder"):
        train(config(str(tmp_path), tmp_path / "b", max_iters=1))
    with pytest.raises(RabenchError, match="exceeds preset tiny"):
        train(config(data_dir, tmp_path / "c", max_iters=1, seq_len=4096))


def test_schedule_warms_up_then_anneals_with_progress() -> None:
    assert budget_lr(0, 0.0, 1.0, 0.1, 10) == pytest.approx(0.1)
    assert budget_lr(50, 0.0, 1.0, 0.1, 10) == pytest.approx(1.0)
    assert budget_lr(50, 0.5, 1.0, 0.1, 10) == pytest.approx(0.55)
    assert budget_lr(50, 1.0, 1.0, 0.1, 10) == pytest.approx(0.1)
    assert plateau_lr(50, 1.0, 0.1, 10, None, 20) == 1.0
    assert plateau_lr(60, 1.0, 0.1, 10, 50, 20) == pytest.approx(0.505)
    assert plateau_lr(69, 1.0, 0.1, 10, 50, 20) == pytest.approx(0.1)
    assert plateau_lr(90, 1.0, 0.1, 10, 50, 20) == pytest.approx(0.1)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("2.5m", 150), ("45", 45)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5", "0s", "1h 2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(RabenchError):
        parse_duration(text)
