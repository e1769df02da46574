"""One owner per setting: the device resolver, the exit codes, the batch iterator, the preset record."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from rabench.cli import main
from rabench.errors import DeadlineReached, RabenchError, RunInterrupted, exit_status
from rabench.suite.parallel import worker_main
from rabench.training.config import resolve_device

NO_GPU = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def data_dir(austen_data) -> str:
    return austen_data(120_000)


def test_resolve_device_reads_auto_and_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cpu" if NO_GPU else "cuda")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", ""])
def test_resolve_device_refuses_unknown_names(name: str) -> None:
    with pytest.raises(RabenchError, match="is not one of auto, cpu, cuda, cuda:N"):
        resolve_device(name)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_resolve_device_refuses_a_missing_gpu(name: str) -> None:
    with pytest.raises(RabenchError, match="PyTorch sees no CUDA GPU"):
        resolve_device(name)


def test_check_command_reads_device_through_the_resolver(capsys) -> None:
    assert main(["check", "sdpa", "--device", "cuda:x"]) == 2
    err = capsys.readouterr().err
    assert "is not one of auto, cpu, cuda, cuda:N" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("exc, code, line", [
    (RabenchError("bad"), 2, "rabench: error: bad"),
    (FileNotFoundError(2, "No such file or directory", "/x"), 2, "rabench: error: cannot use /x: No such file"),
    (KeyboardInterrupt(), 130, "rabench: interrupted"),
    (RunInterrupted("stopped at iter 3", signal.SIGTERM), 128 + signal.SIGTERM, "rabench: stopped at iter 3"),
    (DeadlineReached("deadline"), 124, "rabench: deadline"),
])
def test_exit_status_maps_each_stop_to_its_documented_code(exc, code, line, capsys) -> None:
    assert exit_status(exc) == code
    assert capsys.readouterr().err.startswith(line)


def test_exit_status_leaves_a_bug_alone() -> None:
    with pytest.raises(TypeError):
        exit_status(ValueError("a bug"))


def test_suite_worker_says_bad_input_as_the_cli_does(tmp_path: Path, capsys) -> None:
    cfg = {"attn": "sdpa", "preset": "tiny", "data": str(tmp_path / "nodata"), "out": str(tmp_path / "run"), "device": "gpu"}
    assert worker_main([json.dumps(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rabench: error: ") and "device" in err[0]


def test_step_batches_is_the_step_of_train_batch_and_the_calibrations(data_dir: str) -> None:
    """One step's micro-batches, as train_batch draws them; the calibration times steps on exactly these."""
    from types import SimpleNamespace

    from rabench.data import TokenSplit, step_batches, train_batch
    from rabench.suite.calibrate import data_batches

    split, cpu = TokenSplit(data_dir, "train"), torch.device("cpu")
    req = SimpleNamespace(data=data_dir, seed=3, batch_size=2, seq_len=16, grad_accum=2)
    for step in (0, 5):
        ours = step_batches(split, 3, step, 2, 16, 2, cpu, rank=1, world_size=2)
        drawn = [train_batch(split, 3, step, 2, 16, micro=m, accum=2, rank=1, world_size=2) for m in range(2)]
        calibrated = data_batches(req, cpu)(step)
        assert len(ours) == len(calibrated) == 2
        assert all(torch.equal(a, b) for pair in zip(ours, drawn) for a, b in zip(*pair))
        single = step_batches(split, 3, step, 2, 16, 2, cpu)
        assert all(torch.equal(a, b) for pair in zip(single, calibrated) for a, b in zip(*pair))


def test_a_run_takes_its_defaults_from_the_preset_record(tmp_path: Path) -> None:
    from rabench.presets import PRESET_RECORDS
    from rabench.training.config import TrainConfig

    for name, record in PRESET_RECORDS.items():
        cfg = TrainConfig(attn="sdpa", data="d", out=str(tmp_path / name), preset=name, max_iters=10).resolved()
        assert (cfg.batch_size, cfg.seq_len, cfg.lr, cfg.eval_tokens) == (
            record.batch_size, record.seq_len, record.lr, record.eval_tokens)
        plateau = TrainConfig(attn="sdpa", data="d", out="o", preset=name, until_plateau=True, max_iters=10)
        assert plateau.plateau_warmup_iters() == round(plateau.warmup_frac * record.default_iters)


def test_the_command_line_reads_presets_without_torch() -> None:
    """`rabench --help` stays quick: building the parser (help texts quote preset defaults) loads no torch."""
    import subprocess
    import sys

    code = "import sys, rabench.cli; rabench.cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_a_suite_under_torchrun_resumes_its_stored_multi_process_runs(tmp_path: Path, monkeypatch) -> None:
    """A run trained by 2 processes is the same run when the suite is started again under 2 processes."""
    from rabench.suite.jobs import decide_jobs, plan_runs, train_config
    from rabench.suite.plan import SuitePlan, resolve_plan

    plan = resolve_plan(SuitePlan(attns=["sdpa"], seeds=[0], preset="tiny", max_iters=10))
    runs = plan_runs(plan, {"sdpa": 1.0})
    cfgs = [train_config(plan, r, tmp_path, "data", "suite", False) for r in runs]
    # the stored run trained by 2 processes on the device "auto" gives this machine (cuda on a GPU host)
    device = resolve_device("auto").type
    stored = json.loads(json.dumps(cfgs[0].resolved().to_dict())) | {"device": device, "world_size": 2}
    (tmp_path / runs[0].name).mkdir()
    (tmp_path / runs[0].name / "config.json").write_text(json.dumps(stored))
    (tmp_path / runs[0].name / "ckpt.pt").write_bytes(b"x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert [j.action for j in decide_jobs(runs, cfgs, tmp_path)] == ["resume"]
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process would train other rows per step: refused
    with pytest.raises(RabenchError, match=r"grad_accum x processes: 1 x 2 -> 1 x 1"):
        decide_jobs(runs, cfgs, tmp_path)


def test_the_report_finds_the_suite_folder_by_the_names_the_suite_writes(tmp_path: Path) -> None:
    """suite/folder.py names the suite's files and runs; the analysis reads the same names (an older
    iso-time run without labels is known by its folder name alone)."""
    from rabench.analysis.runs import load_batches
    from rabench.suite.folder import CALIBRATION_FILE, ISO_TIME, SUITE_FILE, run_name

    suite = tmp_path / "suite"
    run = suite / run_name("ra-open", 3, ISO_TIME)
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"attn": "ra-open", "seed": 3, "max_iters": 10}))
    (suite / SUITE_FILE).write_text('{"design": "iso"}')
    (suite / CALIBRATION_FILE).write_text('{"configs": {"ra-open": {"ratio": 1.5}}}')
    [batch] = load_batches(suite)
    assert batch.plan == {"design": "iso"} and batch.calibration["configs"]["ra-open"]["ratio"] == 1.5
    assert [r.role for r in batch.runs] == [ISO_TIME]


@pytest.mark.parametrize("preset, cap", [("gpt2-124m", 80_000), ("tiny", 3_000)])
def test_plateau_runs_get_their_own_default_cap(preset: str, cap: int) -> None:
    """N (8,000 for GPT-2) stops a plateau run before any plateau: without --iters the cap is 10x N."""
    from rabench.presets import PRESET_RECORDS
    from rabench.suite.jobs import plan_runs
    from rabench.suite.plan import SuitePlan, resolve_plan

    plateau = resolve_plan(SuitePlan(attns=["sdpa", "std-gated"], seeds=[0], preset=preset, until_plateau=True))
    assert plateau.max_iters == cap == 10 * PRESET_RECORDS[preset].default_iters
    assert {r.max_iters for r in plan_runs(plateau, {"sdpa": 1.0, "std-gated": 1.2})} == {cap}
    iso = resolve_plan(SuitePlan(attns=["sdpa", "std-gated"], seeds=[0], preset=preset))
    assert iso.max_iters == PRESET_RECORDS[preset].default_iters
    given = resolve_plan(SuitePlan(attns=["sdpa", "std-gated"], seeds=[0], preset=preset, until_plateau=True, max_iters=50))
    assert given.max_iters == 50


def test_a_run_resumed_on_another_machine_records_both(data_dir: str, tmp_path: Path, monkeypatch) -> None:
    """config.json keeps the first machine (pairing reads it); summary.json lists every segment's."""
    from rabench.machine import machine_id
    from rabench.rundir import RunFolder
    from rabench.training.config import TrainConfig
    from rabench.training.trainer import train

    def config(**kw) -> TrainConfig:
        return TrainConfig(attn="sdpa", data=data_dir, out=str(tmp_path / "run"), preset="tiny", batch_size=4,
                           seq_len=32, eval_every=4, eval_batches=1, warmup_iters=2, log_every=2, progress_bar=False,
                           device="cpu", max_iters=8, ckpt_every="3it", **kw)

    monkeypatch.setenv("RABENCH_FAULT", "step@5:TERM")
    with pytest.raises(RunInterrupted):
        train(config())
    folder = RunFolder(tmp_path / "run")
    first = [{"machine_id": machine_id(), "gpu_uuid": None, "from_iter": 0}]
    assert folder.summary()["machines"] == folder.machines() == first
    monkeypatch.delenv("RABENCH_FAULT")
    monkeypatch.setattr("rabench.training.trainer.machine_id", lambda: "elsewhere")
    summary = train(config(resume=True))
    assert summary["iters"] == 8 and folder.config()["machine_id"] == machine_id()
    resumed_at = summary["machines"][1]["from_iter"]
    assert 0 < resumed_at <= 5
    assert folder.machines() == first + [{"machine_id": "elsewhere", "gpu_uuid": None, "from_iter": resumed_at}]


def test_a_folder_from_before_segments_names_its_one_machine(tmp_path: Path) -> None:
    from rabench.rundir import RunFolder

    (tmp_path / "config.json").write_text(json.dumps({"run_id": "r", "machine_id": "m1", "gpu_uuid": "GPU-1"}))
    (tmp_path / "summary.json").write_text(json.dumps({"status": "finished"}))
    assert RunFolder(tmp_path).machines() == [{"machine_id": "m1", "gpu_uuid": "GPU-1", "from_iter": 0}]
    assert RunFolder(tmp_path / "absent").machines() == []


def test_the_demo_reads_its_attentions_and_baseline_from_the_experiment(monkeypatch) -> None:
    """The demo's gaps are to the experiment's baseline, whatever it is named."""
    from rabench import experiment
    from rabench.commands import demo

    assert demo.DEMO_ATTNS is experiment.DEMO_ATTNS and demo.DEMO_ATTNS[0] == experiment.BASELINE
    monkeypatch.setattr(demo, "BASELINE", "base")
    curves = {"base": {0: {10: 3.0, 20: 2.0}, 1: {10: 3.1, 20: 2.1}},
              "cand": {0: {10: 3.0, 20: 1.9}, 1: {10: 3.1, 20: 2.0}}}
    text = demo.gaps_text(curves)
    assert "Gap to base at iteration 20" in text and "cand" in text and "sdpa" not in text
