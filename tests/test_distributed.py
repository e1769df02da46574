"""Data-parallel training under torchrun, on the CPU with 2 gloo processes.

The CLI is launched the way users launch it (`torchrun --standalone --nproc_per_node 2
-m rabench train ...`, here as `python -m torch.distributed.run` so no PATH is needed)
and compared with one process that accumulates twice as many micro-batches: both read
the same rows each step, so losses must agree to float32 rounding, and val_loss, whose
batches are split over the ranks (3 batches: 2 on rank 0, 1 on rank 1), must agree
with the single process's mean over the same batches.

Four short runs shared by the tests (module fixture); about 30 s on 2 cores. Further down: how the
trainer builds its DDP model (in-process, a one-process gloo group), and two "nodes" on localhost
joined by torchrun's c10d rendezvous (marked slow: about 45 s).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

ITERS, RESUME_ITERS, EVAL_EVERY = 10, 16, 5
COMMON = ["train", "--attn", "sdpa", "--preset", "tiny", "--device", "cpu", "--batch-size", "4", "--seq-len", "32",
          "--eval-every", str(EVAL_EVERY), "--eval-batches", "3", "--warmup-iters", "2", "--no-progress"]
REL = 1e-4  # float32 rounding of a differently ordered gradient sum, compounded over 16 AdamW steps
TIMEOUT_S = 180


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def rabench(args: list[str], nproc: int = 1, fault: str | None = None) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "rabench", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "rabench", *args]
    env = _env() | ({"RABENCH_FAULT": fault} if fault else {})
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)


def interrupted(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode != 0 and "with --resume continues" in proc.stderr, proc.stderr[-3000:]
    return proc


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
    return proc


def metric_lines(run: Path) -> list[str]:
    return [line for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in metric_lines(run)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from rabench.data import prepare

    root = tmp_path_factory.mktemp("ddp")
    data = root / "data"
    prepare(["austen"], data, max_tokens=100_000, workers=1, progress=False)
    ddp, single = root / "ddp", root / "single"
    out: dict = {"root": root, "data": data, "ddp": ddp, "single": single}

    # SIGTERM reaches every rank at iteration 7; the ranks agree at the next log point (10) and checkpoint there
    out["ddp_first"] = interrupted(rabench([*COMMON, "--data", str(data), "--out", str(ddp), "--iters",
                                            str(RESUME_ITERS)], nproc=2, fault="step@7:TERM"))
    out["ddp_first_lines"] = metric_lines(ddp)
    out["ddp_resumed"] = ok(rabench([*COMMON, "--data", str(data), "--out", str(ddp), "--iters", str(RESUME_ITERS),
                                     "--resume"], nproc=2))

    base = [*COMMON, "--data", str(data), "--out", str(single), "--grad-accum", "2"]
    interrupted(rabench([*base, "--iters", str(RESUME_ITERS)], fault="step@7:TERM"))
    out["single_first"] = metrics(single)
    ok(rabench([*base, "--iters", str(RESUME_ITERS), "--resume"]))
    return out


def test_ddp_run_completes_and_rank0_writes_once(runs):
    ddp: Path = runs["ddp"]
    lines = runs["ddp_first_lines"]
    iters = [json.loads(line)["iter"] for line in lines]
    assert iters == [0, 5, 10], "every log point exactly once, from rank 0 only"
    assert len(set(lines)) == len(lines)
    final_lines = [line for line in runs["ddp_resumed"].stdout.splitlines() if " iters in " in line]
    assert len(final_lines) == 1, runs["ddp_resumed"].stdout  # only rank 0 prints the result
    config = json.loads((ddp / "config.json").read_text())
    assert config["world_size"] == 2
    assert config["tokens_per_iter"] == 4 * 32 * 1 * 2
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["iters"] == RESUME_ITERS
    assert (ddp / "ckpt.pt").exists()


def _close(a: float, b: float, rel: float) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


def test_losses_match_one_process_with_double_accumulation(runs):
    ddp, single = metrics(runs["ddp"]), metrics(runs["single"])
    assert [r["iter"] for r in ddp] == [r["iter"] for r in single]
    assert json.loads((runs["single"] / "config.json").read_text())["tokens_per_iter"] == 4 * 32 * 2
    for d, s in zip(ddp, single):
        assert d["tokens"] == s["tokens"]
        assert (d["train_loss"] is None) == (s["train_loss"] is None)
        if d["train_loss"] is not None:
            assert _close(d["train_loss"], s["train_loss"], REL), (d["iter"], d["train_loss"], s["train_loss"])
        assert ("val_loss" in d) == ("val_loss" in s)
        if "val_loss" in d:
            assert _close(d["val_loss"], s["val_loss"], REL), (d["iter"], d["val_loss"], s["val_loss"])
    # before any step the weights are identical, so the split evaluation (3 batches over 2
    # ranks) must give the single process's mean over the same batches, not a mean of rank means
    assert _close(ddp[0]["val_loss"], single[0]["val_loss"], 1e-12)
    assert ddp[-1]["train_loss"] < ddp[1]["train_loss"]  # it trained


def test_resume_under_torchrun_continues_without_duplicates(runs):
    records = metrics(runs["ddp"])
    iters = [r["iter"] for r in records]
    assert iters == [0, 5, 10, 15, 16]
    assert len(set(metric_lines(runs["ddp"]))) == len(records)
    # the resumed part matches the single process resumed the same way
    single = metrics(runs["single"])
    assert _close(records[-1]["val_loss"], single[-1]["val_loss"], REL)
    assert json.loads((runs["ddp"] / "summary.json").read_text())["iters"] == RESUME_ITERS


def test_error_on_rank0_stops_every_rank(runs):
    """An existing run without --resume: rank 0's error reaches rank 1 instead of leaving it at a barrier."""
    proc = rabench([*COMMON, "--data", str(runs["data"]), "--out", str(runs["ddp"]), "--iters", "2"], nproc=2)
    assert proc.returncode != 0
    assert "already holds a finished run" in proc.stderr
    assert "(rank 1) " in proc.stderr  # rank 1 got the error too, rather than being killed while waiting


# ---- how the trainer builds its DDP model (in-process, no torchrun) ------------------------------
@pytest.fixture
def ddp_trainer(tmp_path: Path, austen_data, monkeypatch: pytest.MonkeyPatch):
    """`ddp_trainer(**fields)`: a Trainer built on its DDP branch, with torch.compile recorded instead of run.

    A one-process gloo group backs it, and DistInfo claims two ranks (the branch's condition); only the
    constructor runs, whose collectives (broadcasts) a one-process group serves."""
    import torch

    from rabench.training import TrainConfig
    from rabench.training import distributed as dd
    from rabench.training.trainer import Trainer

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    monkeypatch.setattr(dd, "init_distributed", lambda device_type: dd.DistInfo(rank=0, local_rank=0, world_size=2))
    compiles: list[dict] = []

    def record_compile(model, **kwargs):
        compiles.append(kwargs)
        return model

    monkeypatch.setattr(torch, "compile", record_compile)
    built: list[Trainer] = []

    def build(**fields) -> tuple[Trainer, list[dict]]:
        cfg = TrainConfig(attn="sdpa", data=austen_data(20_000), out=str(tmp_path / f"run{len(built)}"), preset="tiny",
                          device="cpu", max_iters=2, batch_size=4, seq_len=32, eval_batches=1, progress_bar=False,
                          **fields)
        built.append(Trainer(cfg))
        return built[-1], compiles

    yield build
    for trainer in built:
        trainer.folder.release()
    dist.destroy_process_group()


def test_compile_mode_is_honoured_under_ddp(ddp_trainer):
    """Under torchrun the model used to be compiled in the default mode whatever --compile-mode said."""
    from torch.nn.parallel import DistributedDataParallel

    trainer, compiles = ddp_trainer(compile=True, compile_mode="reduce-overhead")
    assert isinstance(trainer.step_fn.forward_model, DistributedDataParallel)
    assert compiles == [{"mode": "reduce-overhead"}]  # compiled once, in the asked mode (not again by TrainStep)
    assert trainer.step_fn.cuda_graphs is False  # a CPU: no CUDA graphs, whatever the mode


def test_ddp_settings_reach_ddp(ddp_trainer):
    trainer, compiles = ddp_trainer(ddp_bucket_cap_mb=1.5, ddp_grad_as_bucket_view=True, ddp_static_graph=True)
    ddp = trainer.step_fn.forward_model
    assert compiles == []  # not compiled unless asked
    assert ddp.bucket_bytes_cap == int(1.5 * 1024 * 1024)
    assert ddp.gradient_as_bucket_view is True and ddp.static_graph is True
    default, _ = ddp_trainer()
    assert default.step_fn.forward_model.bucket_bytes_cap == 25 * 1024 * 1024  # PyTorch's default kept
    assert default.step_fn.forward_model.static_graph is False


@pytest.mark.parametrize("fields,match", [({"ddp_comm_hook": "bf16"}, "needs the NCCL backend"),
                                          ({"ddp_static_graph": True, "grad_accum": 2}, "--grad-accum 1 only")])
def test_ddp_settings_pytorch_cannot_run_are_refused_in_one_line(ddp_trainer, fields, match):
    from rabench.errors import RabenchError

    with pytest.raises(RabenchError, match=match):
        ddp_trainer(**fields)


def test_only_the_bf16_hook_changes_the_curve_and_only_with_several_processes():
    from rabench.errors import RabenchError
    from rabench.fileio import json_form
    from rabench.training import TrainConfig
    from rabench.training.config import curve_changing_differences

    def cfg(**fields) -> TrainConfig:
        return TrainConfig(attn="sdpa", data="d", out="o", preset="tiny", device="cpu", max_iters=2, **fields)

    def stored(world_size: int, **fields) -> dict:
        return json_form(cfg(**fields).resolved().to_dict()) | {"world_size": world_size, "device": "cpu"}

    layout = {"ddp_bucket_cap_mb": 100.0, "ddp_grad_as_bucket_view": True, "ddp_static_graph": True}
    assert curve_changing_differences(stored(2), cfg(**layout), world_size=2) == []
    hook = curve_changing_differences(stored(2), cfg(ddp_comm_hook="bf16"), world_size=2)
    assert len(hook) == 1 and "none -> bf16" in hook[0]
    # one process has no all-reduce: a bf16 hook it was given never acted
    assert curve_changing_differences(stored(1, ddp_comm_hook="bf16"), cfg(grad_accum=1), world_size=1) == []
    old = {k: v for k, v in stored(2).items() if not k.startswith("ddp_")}  # a run folder from before these fields
    assert curve_changing_differences(old, cfg(), world_size=2) == []
    for bad in ({"ddp_comm_hook": "fp8"}, {"ddp_bucket_cap_mb": 0}, {"ddp_static_graph": "yes"}):
        with pytest.raises(RabenchError):
            cfg(**bad)


# ---- two nodes ----------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(nodes: list[Path], args: list[str], fault: str | None = None) -> list[subprocess.CompletedProcess]:
    """The same command on two "nodes" of one process each, joined by torchrun's c10d rendezvous.

    Each node runs in its own folder with relative --data/--out, as on machines without a shared
    filesystem. torchrun numbers c10d nodes by their address (sorted), not by --node-rank: node 0's
    --local-addr 127.0.0.1 sorts before node 1's localhost, so node 0 holds rank 0 in every launch."""
    port = _free_port()
    procs = []
    for node_rank, (cwd, addr) in enumerate(zip(nodes, ["127.0.0.1", "localhost"])):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--node-rank", str(node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "rabench-test", "--local-addr", addr, "-m", "rabench", *args]
        env = _env() | ({"RABENCH_FAULT": fault} if fault else {})
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=TIMEOUT_S)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.mark.slow
def test_two_nodes_write_one_log_one_checkpoint_and_resume(runs):
    import shutil

    nodes = [runs["root"] / "node0", runs["root"] / "node1"]
    for node in nodes:
        shutil.copytree(runs["data"], node / "data")  # every node prepares (here: copies) the same data
    args = [*COMMON, "--data", "data", "--out", "run", "--iters", str(RESUME_ITERS)]
    # SIGTERM on both nodes at iteration 7: they agree to checkpoint at the next log point (10) and stop
    for proc in two_nodes(nodes, args, fault="step@7:TERM"):
        interrupted(proc)
    main, other = nodes[0] / "run", nodes[1] / "run"
    assert [r["iter"] for r in metrics(main)] == [0, 5, 10]  # one log, each record once
    assert json.loads((main / "config.json").read_text())["world_size"] == 2
    assert (main / "ckpt.pt").exists()
    assert not other.exists()  # rank 1 writes nothing on its node
    resumed = two_nodes(nodes, [*args, "--resume"])
    for proc in resumed:
        ok(proc)
    # node 1 has no checkpoint of its own: rank 0 sent it; both continued from iteration 10
    assert [r["iter"] for r in metrics(main)] == [0, 5, 10, 15, 16]
    assert sum(" iters in " in proc.stdout for proc in resumed) == 1  # one result line, from rank 0
    assert not other.exists()
    # the same rows and steps as one process with --grad-accum 2, interrupted and resumed the same way
    assert _close(metrics(main)[-1]["val_loss"], metrics(runs["single"])[-1]["val_loss"], REL)
