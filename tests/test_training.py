"""The trainer end to end on the tiny preset: budgets, config.json, resume rules, signals, NaN, failures."""

from __future__ import annotations

import math
import re
import signal
from pathlib import Path

import pytest
import torch

import rabench
from rabench.errors import RabenchError, RunInterrupted
from rabench.machine import machine_id
from rabench.rundir import RunFolder
from rabench.training import TrainConfig, parse_duration, train

TIMING = {"train_time_s", "wall_time_s", "ms_per_iter", "tokens_per_s", "peak_mem_gb",
          "run_id"}  # and the run's identity: two runs differ in it


@pytest.fixture(scope="module")
def data_dir(austen_data) -> str:
    return austen_data(120_000)


def config(data_dir: str, out: Path, **kw) -> TrainConfig:
    base = dict(attn="sdpa", data=data_dir, out=str(out), preset="tiny", batch_size=4, seq_len=32,
                eval_every=5, eval_batches=2, warmup_iters=2, log_every=2, progress_bar=False, device="cpu")
    return TrainConfig(**(base | kw))


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_iteration_budget_writes_config_metrics_summary(data_dir: str, tmp_path: Path) -> None:
    summary = train(config(data_dir, tmp_path / "run", attn="ra-open", max_iters=12, labels={"role": "baseline"}))
    assert summary["status"] == "finished" and summary["iters"] == 12 and summary["stop_reason"] == "max iters"
    folder = RunFolder(tmp_path / "run")
    assert folder.state() == "finished"
    cfg = folder.config()
    assert cfg["attn"] == "ra-open" and cfg["n_layer"] == 2 and cfg["tokens_per_iter"] == 4 * 32
    assert cfg["labels"] == {"role": "baseline", "attn_role": "ra"} and cfg["device"] == "cpu" and cfg["gpu_name"] is None
    assert cfg["attn_ref"] == "ra-open" and cfg["attn_code_hash"] is None  # built-ins: the package's source_hash
    assert cfg["gpu_uuid"] is None
    assert cfg["host"] and cfg["lr"] == 3e-3 and cfg["eval_tokens"] == 32_768  # preset defaults resolved
    assert "excludes evaluation" in cfg["time_axis"]
    assert cfg["source_hash"] == rabench.source_hash() and re.fullmatch(r"[0-9a-f]{12}", cfg["source_hash"])
    assert cfg["machine_id"] == machine_id() and re.fullmatch(r"[0-9a-f]{12}", cfg["machine_id"])
    regime = cfg["data_regime"]  # what it trained on, for the report's epochs and repeated-token share
    assert regime["sources"] == ["austen"] and regime["train_tokens"] > 0 and regime["val_tokens"] > 0
    records = folder.metrics()
    assert [r["iter"] for r in records if "val_loss" in r] == [0, 5, 10, 12]
    assert records[0]["iter"] == 0 and records[0]["train_loss"] is None
    for key in ("iter", "tokens", "train_time_s", "wall_time_s", "train_loss", "lr", "grad_norm_max", "ms_per_iter",
                "tokens_per_s", "peak_mem_gb"):
        assert key in records[-1]
    assert records[0]["grad_norm_max"] is None and all(r["grad_norm_max"] > 0 for r in records[1:])
    assert len(records[-1]["gates"]["w_rec"]) == 2  # per-layer gate means for RA
    assert records[-1]["val_loss"] < records[0]["val_loss"]  # it learns
    times = [r["train_time_s"] for r in records]
    assert times == sorted(times) and records[-1]["wall_time_s"] >= records[-1]["train_time_s"]
    # the logged lr is the one applied at the window's last step: the cosine reaches min_lr at the last step
    assert records[-1]["lr"] == pytest.approx(3e-4)
    assert records[1]["lr"] == pytest.approx(3e-3)  # iter 2 = end of the 2-iteration warm-up


def test_the_model_is_told_each_step_and_warm_up_visits_every_path(data_dir: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """ra-amortized refreshes on optimizer steps 0, every, 2 every ...: the trainer tells the model
    each step's index; warm-up first runs a refresh step and a reuse step (both compiled off the clock)."""
    from rabench.model import GPT

    told: list[int] = []
    set_step = GPT.set_step
    monkeypatch.setattr(GPT, "set_step", lambda self, step: told.append(step) or set_step(self, step))
    train(config(data_dir, tmp_path / "run", attn="ra-amortized", attn_options={"every": 3}, max_iters=5, grad_accum=2))
    assert told == [0, 1] + [0, 1, 2, 3, 4]


def test_time_budget_stops_on_training_time_and_anneals(data_dir: str, tmp_path: Path) -> None:
    summary = train(config(data_dir, tmp_path / "run", time_budget_s=1.5, warmup_iters=None, warmup_frac=0.1))
    assert summary["stop_reason"] == "time budget"
    assert 1.5 <= summary["train_time_s"] < 1.5 + 3 * summary["ms_per_iter"] / 1000 + 0.5
    lrs = [r["lr"] for r in RunFolder(tmp_path / "run").metrics() if r["lr"] is not None]
    # Annealed to min_lr (3e-4) by the end of the budget. A step's rate is set before the step from
    # where it is predicted to end, so the last rate may lag by up to two steps of the schedule:
    # close to min_lr at normal speed, looser on a loaded machine (seen: 0.84 s steps, 2 in all).
    from rabench.training.schedule import cosine
    warmup = 0.1 * 1.5
    lag = 2 * summary["ms_per_iter"] / 1000 / (1.5 - warmup)
    assert 3e-4 <= lrs[-1] <= cosine(1.0 - lag, 3e-3, 3e-4) + 1e-9
    assert lrs[-1] < 3e-3  # below the peak: the cosine ran


def test_resume_refuses_curve_changing_settings_and_names_them(data_dir: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        _interrupt_at(config(data_dir, run, max_iters=10), 4)
    with pytest.raises(RabenchError, match="already holds a run with a checkpoint; pass --resume"):
        train(config(data_dir, run, max_iters=10))
    with pytest.raises(RabenchError, match=r"lr: 0\.003 -> 0\.03.*seed: 0 -> 1|seed: 0 -> 1.*lr"):
        train(config(data_dir, run, max_iters=10, resume=True, lr=0.03, seed=1))
    with pytest.raises(RabenchError, match="eval_every: 5 -> 4"):
        train(config(data_dir, run, max_iters=10, resume=True, eval_every=4))
    with pytest.raises(RabenchError, match="max_iters: 10 -> 20"):
        train(config(data_dir, run, max_iters=20, resume=True))
    # curve-neutral settings may differ
    done = train(config(data_dir, run, max_iters=10, resume=True, log_every=5, labels={"x": 1}, ckpt_every="1m"))
    assert done["status"] == "finished" and done["iters"] == 10
    again = train(config(data_dir, run, max_iters=10, resume=True))  # a finished run: its summary, untouched
    assert again == done and again["ms_per_iter"] is not None


def _interrupt_at(cfg: TrainConfig, it: int, sig: str = "TERM"):
    import os

    os.environ["RABENCH_FAULT"] = f"step@{it}:{sig}"
    try:
        return train(cfg)
    finally:
        del os.environ["RABENCH_FAULT"]


@pytest.fixture(scope="module")
def uninterrupted(data_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    full = tmp_path_factory.mktemp("full") / "run"
    train(config(data_dir, full, max_iters=8, eval_every=4, log_every=2))
    return full


@pytest.mark.parametrize("point,sig", [("step@5", "TERM"), ("eval@4", "INT"), ("ckpt@3", "TERM")])
def test_signal_checkpoints_and_resume_gives_the_same_records(data_dir: str, tmp_path: Path, point: str, sig: str,
                                                               uninterrupted: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM/SIGINT mid-window, inside an evaluation or inside a checkpoint write (every 3 iterations):
    the resumed records equal an uninterrupted run's, timing fields apart."""
    full = uninterrupted
    cut = tmp_path / "cut"
    monkeypatch.setenv("RABENCH_FAULT", f"{point}:{sig}")
    with pytest.raises(RunInterrupted, match="with --resume continues") as exc:
        train(config(data_dir, cut, max_iters=8, eval_every=4, log_every=2, ckpt_every="3it"))
    assert exc.value.exit_code == 128 + (signal.SIGTERM if sig == "TERM" else signal.SIGINT)
    assert RunFolder(cut).summary()["status"] == "interrupted" and RunFolder(cut).state() == "checkpointed"
    monkeypatch.delenv("RABENCH_FAULT")
    train(config(data_dir, cut, max_iters=8, eval_every=4, log_every=2, resume=True))
    assert untimed(RunFolder(cut).metrics()) == untimed(RunFolder(full).metrics())
    assert RunFolder(cut).summary()["ms_per_iter"] is not None


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(data_dir: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from rabench.training.trainer import Trainer

    real_checkpoint = Trainer.checkpoint
    calls = []

    def impatient(self) -> None:  # the user presses Ctrl-C again while the first one's checkpoint is written
        calls.append(self.state.iter)
        if self.signal is not None:
            os.kill(os.getpid(), signal.SIGINT)
        real_checkpoint(self)

    monkeypatch.setattr(Trainer, "checkpoint", impatient)
    monkeypatch.setenv("RABENCH_FAULT", "step@5:INT")
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted, match="stopped by a second signal at iter 5; the same command with --resume continues") as exc:
        train(config(data_dir, run, max_iters=8, ckpt_every="2it"))
    assert exc.value.exit_code == 130 and calls == [2, 4, 5]
    assert RunFolder(run).summary()["status"] == "interrupted"
    monkeypatch.delenv("RABENCH_FAULT")
    monkeypatch.setattr(Trainer, "checkpoint", real_checkpoint)
    assert train(config(data_dir, run, max_iters=8, ckpt_every="2it", resume=True))["iters"] == 8


def test_nan_loss_says_no_checkpoint_was_written(data_dir: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The training loss turns NaN from the third step on. Injected, not provoked with a huge lr:
    lr = 1e6 overflowed within 30 steps here but the test failed on an H100 host (reason not
    recorded), and whether it overflows may depend on the CPU's kernels."""
    import torch.nn.functional as F

    real_cross_entropy, calls = F.cross_entropy, []

    def diverging(*args, **kwargs):
        loss = real_cross_entropy(*args, **kwargs)
        if kwargs.get("reduction", "mean") == "mean":  # the training loss; evaluation asks for "none"
            calls.append(1)
            return loss * math.nan if len(calls) >= 3 else loss
        return loss

    monkeypatch.setattr(F, "cross_entropy", diverging)
    with pytest.raises(RabenchError, match=r"loss became (nan|inf).*no checkpoint was written"):
        train(config(data_dir, tmp_path / "run", max_iters=30))
    monkeypatch.undo()
    folder = RunFolder(tmp_path / "run")
    assert folder.summary()["status"] == "failed" and folder.state() == "failed"
    # the same folder, corrected: no "already holds a run"
    assert train(config(data_dir, tmp_path / "run", max_iters=2))["status"] == "finished"


def test_failed_start_does_not_poison_the_folder(data_dir: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RabenchError, match="has no option"):
        train(config(data_dir, run, attn="ra-open", attn_options={"nope": 1}, max_iters=2))
    assert train(config(data_dir, run, attn="ra-open", max_iters=2))["status"] == "finished"


def test_missing_budget_and_bad_data_are_one_line_errors(data_dir: str, tmp_path: Path) -> None:
    with pytest.raises(RabenchError, match="give a budget"):
        train(config(data_dir, tmp_path / "a"))
    with pytest.raises(RabenchError, match="not a prepared data folder"):
        train(config(str(tmp_path), tmp_path / "b", max_iters=1))
    with pytest.raises(RabenchError, match="exceeds preset tiny"):
        train(config(data_dir, tmp_path / "c", max_iters=1, seq_len=4096))


@pytest.mark.parametrize("field,value,match", [
    ("lr", -1.0, "lr must be a positive finite"), ("lr", math.nan, "lr must be a positive finite"),
    ("time_budget_s", math.inf, "time_budget_s"), ("time_budget_s", 0.0, "time_budget_s"),
    ("batch_size", 0, "batch_size must be an integer of at least 1"), ("device", "tpu", "device 'tpu'"),
    ("warmup_frac", 1.5, "warmup_frac must lie"), ("ckpt_every", "soon", "ckpt_every 'soon'"),
    ("preset", "huge", "preset 'huge' is unknown"), ("grad_accum", 0, "grad_accum"),
])
def test_config_validates_once_where_built(data_dir: str, tmp_path: Path, field: str, value, match: str) -> None:
    with pytest.raises(RabenchError, match=match):
        config(data_dir, tmp_path / "x", max_iters=1, **{field: value})


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("2.5m", 150), ("45", 45)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5", "0s", "1h 2", "nan", "inf"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(RabenchError):
        parse_duration(text)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_run_records_its_physical_card(data_dir: str, tmp_path: Path) -> None:
    summary = train(config(data_dir, tmp_path / "run", device="cuda", max_iters=4))
    cfg = RunFolder(tmp_path / "run").config()
    assert cfg["gpu_uuid"] == str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
    assert cfg["gpu_name"] == torch.cuda.get_device_name() and summary["peak_mem_gb"] > 0


def test_source_hash_changes_with_any_source_file_and_its_path(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    first = rabench.hash_sources(tmp_path / "pkg")
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    (tmp_path / "pkg" / "notes.txt").write_text("changed, still not code")
    assert rabench.hash_sources(tmp_path / "pkg") == first
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 3\n")
    edited = rabench.hash_sources(tmp_path / "pkg")
    assert edited != first
    (tmp_path / "pkg" / "sub" / "b.py").rename(tmp_path / "pkg" / "b.py")
    assert rabench.hash_sources(tmp_path / "pkg") not in (first, edited)


def test_machine_id_hashes_every_node_gpu_and_the_boot_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's GPU UUIDs (sorted, with or without the GPU- prefix) and the boot id: not the hostname,
    and the same for every worker of a node whatever GPU it is shown."""
    from rabench import machine

    boot = tmp_path / "boot_id"
    boot.write_text("boot-a\n")
    gpus = tmp_path / "gpus"
    for bus, uuid in (("0000:1b:00.0", "GPU-bbb"), ("0000:0a:00.0", "GPU-AAA")):
        (gpus / bus).mkdir(parents=True)
        (gpus / bus / "information").write_text(f"Model: \t H100\nGPU UUID: \t {uuid}\nBus Type: PCIe\n")
    monkeypatch.setattr(machine, "BOOT_ID_FILE", boot)
    monkeypatch.setattr(machine, "NVIDIA_PROC_GPUS", gpus)
    assert machine.node_gpu_uuids() == ["aaa", "bbb"]
    machine.machine_id.cache_clear()
    first = machine.machine_id()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # a worker shown one card: the same machine
    machine.machine_id.cache_clear()
    assert machine.machine_id() == first and re.fullmatch(r"[0-9a-f]{12}", first)
    boot.write_text("boot-b\n")  # a reboot is a new machine session
    machine.machine_id.cache_clear()
    rebooted = machine.machine_id()
    (gpus / "0000:0a:00.0" / "information").write_text("GPU UUID: GPU-ccc\n")  # another card
    machine.machine_id.cache_clear()
    assert len({first, rebooted, machine.machine_id()}) == 3
    machine.machine_id.cache_clear()


# ---- the gates' learning rate -----------------------------------------------------------------
def _one_step_deltas(attn: str, gate_lr_mult: float, optimizer=None) -> dict[str, torch.Tensor]:
    """Each parameter's change over one optimizer step of the tiny model on a fixed batch."""
    from rabench.model import build_model
    from rabench.training.step import TrainStep, make_optimizer

    dev = torch.device("cpu")
    model = build_model("tiny", attn, None, 0)
    opt = (optimizer(model) if optimizer else
           make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), dev, gate_lr_mult=gate_lr_mult))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(1))
    step = TrainStep(model, opt, dev, grad_clip=1.0)
    for i in range(3):
        step.run([(x, x)], 1e-3, step=i)
        if i == 0:
            first = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    return first | {f"after3:{n}": p.detach().clone() for n, p in model.named_parameters()}


def test_gate_lr_mult_1_is_todays_optimizer_exactly() -> None:
    """At 1 the gates stay in the no-decay group: the same groups and the same weights, bit for bit, as
    the optimizer before the multiplier existed (so older checkpoints load and resume unchanged)."""
    def old_optimizer(model):
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and ".core." not in n]
        no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and ".core." not in n)]
        return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                 lr=1e-3, betas=(0.9, 0.95))

    new, old = _one_step_deltas("ra-open", 1.0), _one_step_deltas("ra-open", 1.0, optimizer=old_optimizer)
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)


@pytest.mark.parametrize("attn,gates", [("ra-open", {"gates.logits", "gates.u"}), ("std-gated", {"gate_logits"})])
def test_gate_lr_mult_scales_exactly_the_gates_step(attn: str, gates: set[str]) -> None:
    """Adam's first step is linear in the learning rate: the gate parameters move k times as far,
    every other parameter exactly as far as at 1."""
    from rabench.model import build_model
    from rabench.training.step import gate_parameters, make_optimizer, set_lr

    base, scaled = _one_step_deltas(attn, 1.0), _one_step_deltas(attn, 4.0)
    gate_names = {n for n in base if not n.startswith("after3:") and n.split(".core.")[-1] in gates}
    assert len(gate_names) == 2 * len(gates)  # two layers
    for name in (n for n in base if not n.startswith("after3:")):
        if name in gate_names:
            # float32 weights near 2: the difference of two of them is exact to about 2e-7
            assert torch.allclose(scaled[name], 4.0 * base[name], rtol=1e-3, atol=2e-6)
            assert base[name].abs().max() > 0
        else:
            assert torch.equal(scaled[name], base[name])
    model = build_model("tiny", attn, None, 0)
    opt = make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), torch.device("cpu"), gate_lr_mult=4.0)
    assert {id(p) for p in opt.param_groups[2]["params"]} == {id(p) for p in gate_parameters(model)}
    fresh = make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), torch.device("cpu"), gate_lr_mult=4.0)
    fresh.load_state_dict(opt.state_dict())  # a resumed run keeps the multiplier
    set_lr(fresh, 2e-4)
    assert [g["lr"] for g in fresh.param_groups] == [2e-4, 2e-4, pytest.approx(8e-4)]
    sdpa = build_model("tiny", "sdpa", None, 0)  # nothing to scale: no third group
    assert len(make_optimizer(sdpa, 1e-3, 0.1, (0.9, 0.95), torch.device("cpu"), gate_lr_mult=4.0).param_groups) == 2


def test_gate_lr_mult_changes_the_curve_and_older_runs_had_1(data_dir: str, tmp_path: Path) -> None:
    from rabench.training.config import curve_changing_differences

    train(config(data_dir, tmp_path / "run", attn="ra-open", max_iters=2, gate_lr_mult=10.0))
    stored = RunFolder(tmp_path / "run").config()
    assert stored["gate_lr_mult"] == 10.0
    with pytest.raises(RabenchError, match=r"gate_lr_mult: 10.0 -> 1.0"):
        train(config(data_dir, tmp_path / "run", attn="ra-open", max_iters=2, resume=True))
    older = {k: v for k, v in stored.items() if k != "gate_lr_mult"}  # a run made before the multiplier
    assert curve_changing_differences(older, config(data_dir, tmp_path / "run", attn="ra-open", max_iters=2)) == []
    assert curve_changing_differences(older, config(data_dir, tmp_path / "x", attn="ra-open", max_iters=2,
                                                    gate_lr_mult=2.0)) == ["gate_lr_mult: 1.0 -> 2.0"]
    for bad in (0.0, -1.0, math.nan, math.inf, True, "10"):
        with pytest.raises(RabenchError, match="gate_lr_mult must be"):
            config(data_dir, tmp_path / "y", max_iters=2, gate_lr_mult=bad)


def test_a_run_stopped_inside_a_suite_says_to_run_the_suite_again_not_to_pass_resume(data_dir: str, tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """The suite has no --resume flag: it resumes its runs by itself (its runs carry labels.suite)."""
    monkeypatch.setenv("RABENCH_FAULT", "step@2:TERM")
    with pytest.raises(RunInterrupted, match="checkpointed; run the same command again: the suite continues the run "
                                             "in ") as exc:
        train(config(data_dir, tmp_path / "run", max_iters=6, labels={"suite": "s", "role": "base"}))
    assert "--resume" not in str(exc.value)
    # a run started with resume on (the demo, which has no --resume flag, or `train --resume`)
    with pytest.raises(RunInterrupted, match="checkpointed; run the same command again: it continues the run in ") as exc:
        train(config(data_dir, tmp_path / "demo-run", max_iters=6, resume=True))
    assert "--resume" not in str(exc.value)
