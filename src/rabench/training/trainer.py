"""The training loop: equal data, hyperparameters and time accounting for every attention.

Time accounting. Steps are queued without a host sync (`TrainStep.run` returns the loss on
the device, summed there); the device is synchronised once per log window, at its start
and end, so `train_time_s` is the sum of device-synchronised window times: forward,
backward and the optimizer step of every step in the window, and nothing else.
Evaluation, checkpoints and compilation/warm-up (untimed forward+backward passes before
the first step, weights untouched) fall between windows and are excluded; `wall_time_s`
counts everything. `ms_per_iter` of a record is its window's time over its steps. A --time
budget is checked against train time (at window ends; a single process also ends a window
early when the host clock says the budget is reached).

Interruptions. SIGINT and SIGTERM checkpoint at the next step boundary (or abandon an
evaluation in progress, which the resumed run redoes) and exit with 128 + the signal.
A checkpoint holds the open log window's sums, so a resumed run writes the same
metrics records as an uninterrupted one, timing fields apart.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import signal
import socket
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import torch

import rabench
from rabench.data import TokenSplit, check_split_fits, check_token_range, load_meta, step_batches, verify_checksums
from rabench.data.loader import check_step_fits_memory
from rabench.data.regime import data_regime
from rabench.data.tokenizer import VOCAB_SIZE
from rabench.data.toy import check_vocabulary
from rabench.errors import RabenchError, RunInterrupted
from rabench.flops import step_flops_per_token
from rabench.machine import machine_id
from rabench.model import build_model
from rabench.rundir import FAILED, FINISHED, INTERRUPTED, RunFolder, machine_segment
from rabench.training import distributed as dd
from rabench.training import evaluation
from rabench.training.config import TrainConfig, curve_changing_differences, device_memory_bytes, resolve_device
from rabench.training.plateau import PlateauRule, cooldown_length
from rabench.training.schedule import make_schedule
from rabench.training.step import TrainStep, gpu_uuid, make_optimizer, sync
from rabench.training.timeparse import format_duration

# untimed forward+backward passes before the first step, so compilation, autotuning and CUDA-graph
# recording (the first passes under mode reduce-overhead) stay off the clock
COMPILE_WARMUP_PASSES = 3
SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


def fault(point: str, it: int) -> None:
    """Test hook for the fault tests: RABENCH_FAULT="eval@10" (or "ckpt@6", "step@7", with ":TERM" / ":INT" for a
    catchable signal instead of SIGKILL; several comma-separated, e.g. "step@2:INT,ckpt@2:INT" for a second
    Ctrl-C inside the save the first one asked for) makes this process signal itself at that moment."""
    for spec in filter(None, os.environ.get("RABENCH_FAULT", "").split(",")):
        where, _, sig = spec.partition(":")
        name, _, at = where.partition("@")
        if name == point and at.isdigit() and int(at) == it:
            os.kill(os.getpid(), {"TERM": signal.SIGTERM, "INT": signal.SIGINT}.get(sig, signal.SIGKILL))




class _EvalInterrupted(BaseException):
    """Raised by the signal handler inside an evaluation: the evaluation is abandoned and redone on resume."""


@dataclass
class RunState:
    """What a checkpoint restores besides weights and optimizer moments."""

    iter: int = 0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    best_val: float = math.inf
    last_val: float | None = None
    cooldown_start: int | None = None
    last_eval_iter: int = -1
    logged_through: int = -1  # the last iteration whose metrics record is written
    val_history: list = field(default_factory=list)  # replayed into the plateau rule on resume
    window_loss_sum: float = 0.0  # the open log window: sums over its steps so far
    window_grad_max: float = 0.0  # ... and the largest gradient norm (before clipping) in it
    window_steps: int = 0
    window_time_s: float = 0.0
    window_ms: list = field(default_factory=list)  # ms_per_iter of every closed window (summary median)
    step_estimate_s: float = 0.0  # mean step time of the last window (positions a --time run's schedule)
    last_lr: float | None = None
    last_ckpt_iter: int = 0
    machines: list = field(default_factory=list)  # each segment's machine (rundir.machine_segment), for summary.json


def environment_info(device: torch.device, info: dd.DistInfo) -> dict[str, Any]:
    return {
        "device": device.type,
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        # the physical card: a hostname does not identify one (rented machines often share a hostname)
        "gpu_uuid": gpu_uuid(device),
        "host": socket.gethostname(),
        "machine_id": machine_id(),  # the node's GPU UUIDs and boot id: which machine session, for pairing
        "cpu": platform.processor() or platform.machine(),
        "world_size": info.world_size,
        "torch_version": torch.__version__,
        "rabench_version": rabench.__version__,
        "source_hash": rabench.source_hash(),  # which code trained it (several code versions share one version number)
        "time_axis": "train_time_s: device-synchronised training steps only; excludes evaluation, checkpoints and "
                     "compilation/warm-up",
    }


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux: process peak



def check_model_fits(c: TrainConfig, device: torch.device) -> None:
    """Refuse a model whose weights, gradients and two AdamW moments alone exceed the device's memory
    (an attention option asking for hundreds of GB), counted on the meta device: nothing is allocated."""
    try:
        with torch.device("meta"):
            n_params = build_model(c.preset, c.attn, c.attn_options, c.seed).num_params()
    except Exception:  # noqa: BLE001 - a module that cannot be built on meta: the real build will say what is wrong
        return
    need, memory = 16 * n_params, device_memory_bytes(device)
    if need > memory:
        options = ", ".join(f"{k}={v}" for k, v in c.attn_options.items())
        raise RabenchError(f"{c.attn} ({c.preset}{'; ' + options if options else ''}) has {n_params:,} parameters: "
                           f"with gradients and AdamW moments {need / 2**30:,.0f} GiB, more than this {device.type}'s "
                           f"{memory / 2**30:,.0f} GiB; choose smaller attention options or preset")


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg.resolved()
        c = self.cfg
        self.device = resolve_device(c.device)
        self.dist = dd.init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.folder = RunFolder(c.out)
        # before any work: a second trainer on this folder is refused at once, the first one started wins
        dd.on_main(self.folder.lock, self.dist)
        try:
            self.set_up()
        except BaseException:
            self.folder.release(tidy=True)  # a refused run leaves no folder behind
            raise

    def set_up(self) -> None:
        """Data, model, optimizer and schedule, then what the run folder holds (open_folder)."""
        c = self.cfg
        self.train_split = TokenSplit(c.data, "train")
        self.val_split = TokenSplit(c.data, "val")
        check_split_fits(self.train_split, c.batch_size, c.seq_len)
        check_split_fits(self.val_split, c.batch_size, c.seq_len)
        check_step_fits_memory(c.batch_size, c.seq_len, c.grad_accum, self.dist.world_size)
        check_model_fits(c, self.device)
        self.model = build_model(c.preset, c.attn, c.attn_options, c.seed).to(self.device)
        if c.verify_data:
            verify_checksums(c.data)  # meta.json's SHA-256 of every file: a full read, so only when asked
        check_vocabulary(c.data, self.model.cfg.vocab_size, c.preset)  # GPT-2 ids into a toy vocabulary: refused
        for split in (self.train_split, self.val_split):  # then each shard against it: a max over each memory map
            check_token_range(split, min(VOCAB_SIZE, self.model.cfg.vocab_size))
        eval_tokens = c.eval_batches * c.batch_size * c.seq_len if c.eval_batches else c.eval_tokens
        self.val = evaluation.build_val_set(self.val_split, c.batch_size, c.seq_len, eval_tokens)
        self.optimizer = make_optimizer(self.model, c.lr, c.weight_decay, (c.beta1, c.beta2), self.device,
                                        gate_lr_mult=c.gate_lr_mult)
        ddp = dd.wrap_ddp(self.model, self.device, self.dist, c) if self.dist.enabled else None
        mode = {"compile_mode": c.compile_mode} if c.compile_mode else {}
        self.step_fn = TrainStep(self.model, self.optimizer, self.device, c.grad_clip, compile=c.compile, ddp_model=ddp,
                                 **mode)
        self.state = RunState()
        self.plateau = PlateauRule(c.plateau_patience, c.plateau_min_delta)
        self.tokens_per_iter = c.batch_size * c.seq_len * c.grad_accum * self.dist.world_size
        self.schedule = make_schedule(c.lr, c.min_lr_ratio, c.max_iters, c.time_budget_s, c.warmup_frac, c.warmup_iters,
                                      c.until_plateau, c.cooldown_iters, c.cooldown_frac)
        self.ckpt_unit, self.ckpt_every = c.ckpt_interval()
        self.signal: int | None = None
        self.in_eval = False
        self.window_t0: float | None = None  # host time the open window's timing started (after a sync)
        self.window_loss: torch.Tensor | None = None  # the open window's loss sum, on the device
        self.window_grad: torch.Tensor | None = None  # its largest gradient norm so far, on the device
        # rank 0 decides what the folder holds; every rank learns the decision (and its run_id)
        decision = dd.on_main(self.open_folder, self.dist)
        self.mode, self.run_id = dd.broadcast_object(decision, self.dist)

    # ---- the run folder ------------------------------------------------------------
    def open_folder(self) -> tuple[str, str]:
        """('fresh' | 'resume' | 'finished', run_id); refuses what cannot be continued honestly."""
        c, folder = self.cfg, self.folder
        folder.lock()
        folder.check_identity()
        state, old = folder.state(), folder.config() or {}
        where = c.out
        if state == "finished" or (state != "absent" and folder.has_checkpoint()):
            if not c.resume:
                what, resume = (("a finished run", "read its summary") if state == "finished"
                                else ("a run with a checkpoint", "continue it"))
                raise RabenchError(f"{where} already holds {what}; pass --resume to {resume}, or choose another "
                                   f"--out (or delete {where}) to start over")
            diffs = curve_changing_differences(old, c, self.dist.world_size)
            if diffs:
                raise RabenchError(f"--resume: {where} was trained with other settings that change the curve "
                                   f"({'; '.join(diffs)}); resume with the stored settings (see {where}/config.json), "
                                   f"or start over with another --out (or delete {where})")
            return ("finished" if state == "finished" else "resume"), str(old.get("run_id"))
        if state != "absent":  # its files are replaced as the new attempt writes its own (never deleted up front)
            print(f"rabench: {where} stopped before its first checkpoint ({state}); starting it over", file=sys.stderr)
        return "fresh", uuid.uuid4().hex

    def machines_so_far(self) -> list[dict[str, Any]]:
        """The run's machine segments with this one appended: config.json keeps only the first machine."""
        earlier = list(self.state.machines) if self.mode == "resume" else []
        if self.mode == "resume" and not earlier:  # a checkpoint from before segments were recorded
            earlier = self.folder.machines()
        return earlier + [machine_segment(machine_id(), gpu_uuid(self.device), self.state.iter)]

    def write_config(self) -> None:
        record = self.cfg.to_dict() | self.model.cfg.to_dict() | environment_info(self.device, self.dist)
        record |= {"n_params": self.model.num_params(), "eval_tokens_used": self.val.n_tokens,
                   "tokens_per_iter": self.tokens_per_iter, "run_id": self.run_id,
                   "data_regime": data_regime(load_meta(self.cfg.data)),
                   # the attention's declared FLOPs, so a report can give a plug-in's cost floor without importing it
                   "step_flops_per_token": step_flops_per_token(self.cfg.attn, self.model.cfg, self.cfg.seq_len,
                                                                self.cfg.attn_options)}
        self.folder.write_config(record)

    # ---- schedule and budget -------------------------------------------------------
    def position(self, it: int) -> float:
        """Where step `it` ends along the run's own length: it + 1, or estimated train seconds."""
        if self.schedule.unit == "it":
            return it + 1
        return self.state.train_time_s + (self.state.window_steps + 1) * self.state.step_estimate_s

    def progress(self) -> float:
        """Share of the run's own length done (ra-anneal reads it). A plateau run has no length: its
        budget is only a cap, which may change on resume, so its progress stays 0."""
        c, s = self.cfg, self.state
        if c.until_plateau:
            return 0.0
        fracs = []
        if c.time_budget_s:
            fracs.append(s.train_time_s / c.time_budget_s)
        if c.max_iters:
            fracs.append(s.iter / c.max_iters)
        return min(1.0, max(fracs)) if fracs else 0.0

    def finished(self) -> str | None:
        c, s = self.cfg, self.state
        if c.time_budget_s is not None:
            if self.window_t0 is not None and not self.dist.enabled:
                if s.train_time_s + time.perf_counter() - self.window_t0 >= c.time_budget_s:
                    self.close_window()  # the host clock says the budget is spent: measure exactly
            if s.train_time_s >= c.time_budget_s:
                return "time budget"
        if c.until_plateau and s.cooldown_start is not None and s.iter >= s.cooldown_start + self.cooldown_iters():
            return "plateau"
        if c.max_iters is not None and s.iter >= c.max_iters:
            return "max iters"
        return None

    def cooldown_iters(self) -> int:
        """Length of the cooldown that started at state.cooldown_start (training.plateau)."""
        c = self.cfg
        return cooldown_length(self.state.cooldown_start or 0, c.cooldown_iters, c.cooldown_frac)

    # ---- steps and windows ---------------------------------------------------------
    def batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        c = self.cfg
        return step_batches(self.train_split, c.seed, step, c.batch_size, c.seq_len, c.grad_accum, self.device,
                            rank=self.dist.rank, world_size=self.dist.world_size)

    def step(self) -> None:
        """One optimizer step, queued without a host sync; its loss is added to the window on the device."""
        s = self.state
        if self.window_t0 is None:
            sync(self.device)
            self.window_t0 = time.perf_counter()
        if self.window_loss is None:
            start = 0.0 if self.dist.enabled else s.window_loss_sum  # one running sum: resume-exact
            self.window_loss = torch.tensor(start, dtype=torch.float64, device=self.device)
        self.model.set_progress(self.progress())
        lr = self.schedule.at(s.iter, self.position(s.iter), s.cooldown_start)
        loss = self.step_fn.run(self.batches(s.iter), lr, step=s.iter)
        self.window_loss = self.window_loss + loss.detach().double()
        norm = self.step_fn.grad_norm  # float32 is enough for a maximum: no conversion kernel per step
        self.window_grad = norm if self.window_grad is None else torch.maximum(self.window_grad, norm)
        s.last_lr = lr
        s.iter += 1
        s.window_steps += 1
        fault("step", s.iter)

    def close_window(self) -> None:
        """Synchronise once: fold the window's device time and loss into the state; stop on a non-finite loss."""
        s = self.state
        if self.window_t0 is None:
            return
        sync(self.device)
        seconds = time.perf_counter() - self.window_t0
        self.window_t0 = None
        if self.dist.enabled:  # this rank's sum since the last close -> the rank mean; the slowest rank's time
            mine = self.window_loss.item() if self.window_loss is not None else 0.0
            delta, seconds = dd.step_stats(mine, seconds, self.dist, self.device)
            total = s.window_loss_sum + delta
        else:  # the device sum started from the state's, so the total is one running sum
            total = self.window_loss.item() if self.window_loss is not None else s.window_loss_sum
        self.window_loss = None
        s.window_loss_sum = total
        if self.window_grad is not None:  # every rank clips the same all-reduced gradients: no reduce
            norm = self.window_grad.item()  # a NaN norm is kept (Python's max would drop it): it says where
            s.window_grad_max = norm if math.isnan(norm) or norm > s.window_grad_max else s.window_grad_max
            self.window_grad = None
        s.train_time_s += seconds
        s.window_time_s += seconds
        if s.window_steps:
            s.step_estimate_s = s.window_time_s / s.window_steps
        if not math.isfinite(total):
            self.stop_on_nonfinite(total)

    # ---- evaluation ----------------------------------------------------------------
    def evaluate(self) -> evaluation.EvalResult:
        """The fixed val set (training.evaluation); an interrupt abandons it and the resumed run redoes it."""
        if self.signal is not None and not self.dist.enabled:
            raise _EvalInterrupted
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                    else torch.autocast("cpu", enabled=False))
        self.in_eval = True
        try:
            fault("eval", self.state.iter)
            return evaluation.evaluate(self.model, self.val, self.device, autocast, self.dist)
        finally:
            self.in_eval = False
            self.model.train()

    # ---- log points ----------------------------------------------------------------
    def is_log_point(self, it: int) -> bool:
        return it == 0 or it % self.cfg.eval_every == 0 or it % self.cfg.log_every == 0

    def log_point(self, final: bool) -> None:
        """Close the window, evaluate if due, write the record of this iteration."""
        s = self.state
        self.close_window()
        result = None
        if final or s.iter % self.cfg.eval_every == 0:
            result = self.evaluate()
            s.last_val = result.loss
            s.best_val = min(s.best_val, result.loss)
            s.val_history.append(result.loss)
            s.last_eval_iter = s.iter
            if self.cfg.until_plateau and s.cooldown_start is None and self.plateau.update(result.loss):
                s.cooldown_start = s.iter
        if self.dist.is_main:
            self.folder.append_metrics(self.record(result))
        if s.window_steps:
            s.window_ms.append(1000 * s.window_time_s / s.window_steps)
        s.window_loss_sum, s.window_grad_max, s.window_steps, s.window_time_s = 0.0, 0.0, 0, 0.0
        s.logged_through = s.iter

    def record(self, result: evaluation.EvalResult | None) -> dict[str, Any]:
        s = self.state
        ms = 1000 * s.window_time_s / s.window_steps if s.window_steps else None
        rec: dict[str, Any] = {
            "iter": s.iter,
            "tokens": s.iter * self.tokens_per_iter,
            "train_time_s": round(s.train_time_s, 4),
            "wall_time_s": round(s.wall_time_s + time.perf_counter() - self.wall_start, 3),
            "train_loss": s.window_loss_sum / s.window_steps if s.window_steps else None,
            "lr": s.last_lr if s.window_steps else None,  # the rate applied at the window's last step
            "grad_norm_max": round(s.window_grad_max, 4) if s.window_steps else None,  # before clipping
            "ms_per_iter": round(ms, 3) if ms else None,
            "tokens_per_s": round(self.tokens_per_iter / (ms / 1000)) if ms else None,
            "peak_mem_gb": round(peak_memory_gb(self.device), 3),
            "run_id": self.run_id,  # readers skip records of another run (a file copied in, a merged resume)
        }
        if result is not None:
            rec["val_loss"] = result.loss
            if result.se is not None:
                rec["val_se"] = result.se
            if result.by_source:
                rec["val_by_source"] = dict(result.by_source)
        gates = self.model.gate_log()
        if gates is not None:
            rec["gates"] = gates
        return rec

    # ---- checkpoints ---------------------------------------------------------------
    def checkpoint(self) -> None:
        """Close the window (its sums go into the state) and save atomically; rank 0 writes."""
        self.close_window()
        self.state.wall_time_s += time.perf_counter() - self.wall_start
        self.wall_start = time.perf_counter()
        self.state.last_ckpt_iter = self.state.iter
        if self.dist.is_main:
            self.folder.save_checkpoint({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                         "state": vars(self.state).copy()}, self.run_id,
                                        during_write=lambda: fault("ckpt", self.state.iter))
        self.last_ckpt_time = time.perf_counter()
        dd.barrier(self.dist)

    def checkpoint_due(self) -> bool:
        if self.ckpt_unit == "it":
            return self.state.iter - self.state.last_ckpt_iter >= self.ckpt_every
        return time.perf_counter() - self.last_ckpt_time >= self.ckpt_every

    def restore(self) -> None:
        """Every rank restores the checkpoint rank 0 wrote, so all replicas start equal. Rank 0 reads it
        and sends it to the others: nodes need not share a filesystem (only rank 0's --out holds files)."""
        ckpt = dd.broadcast_object(dd.on_main(self.read_checkpoint, self.dist), self.dist)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        saved = dict(ckpt["state"])
        saved.setdefault("logged_through", saved.get("iter", 0))  # checkpoints from before the window state
        self.state = RunState(**saved)
        for value in self.state.val_history:
            self.plateau.update(value)

    def read_checkpoint(self) -> dict[str, Any]:
        # under torchrun to host memory: the other ranks unpickle it, and a CUDA tensor would land on rank 0's GPU
        ckpt = self.folder.load_checkpoint(self.run_id, map_location="cpu" if self.dist.enabled else self.device)
        if ckpt is None:
            raise RabenchError(f"--resume: {self.cfg.out} has no checkpoint; delete it to start over")
        return ckpt

    # ---- signals -------------------------------------------------------------------
    def on_signal(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now, the last checkpoint stands (saves are atomic)
            raise KeyboardInterrupt
        self.signal = signum
        if self.in_eval and not self.dist.enabled:
            raise _EvalInterrupted

    def due(self, at_log_point: bool) -> tuple[bool, bool]:
        """(interrupt, checkpoint) now? Under torchrun all ranks agree, at log points only (one collective)."""
        flags = [self.signal is not None, self.checkpoint_due()]
        if not self.dist.enabled:
            return flags[0], flags[1]
        if not at_log_point:
            return False, False
        agreed = dd.any_rank(flags, self.dist, self.device)
        return agreed[0], agreed[1]

    def interrupt(self) -> None:
        signum = self.signal or signal.SIGINT
        self.checkpoint()
        self.write_summary(INTERRUPTED, f"{SIGNAL_NAMES.get(signum, signum)} at iter {self.state.iter}")
        raise RunInterrupted(f"{SIGNAL_NAMES.get(signum, 'signal')} at iter {self.state.iter}: checkpointed; "
                             f"{self.how_to_continue('the run')} in {self.cfg.out}", signum)

    def how_to_continue(self, what: str) -> str:
        """The advice after a stop: a suite (its runs carry labels.suite) resumes its runs by itself and
        has no --resume flag; a run already started with resume on (`train --resume`, the demo) continues
        when its command runs again; a lone `rabench train` needs --resume."""
        if self.cfg.labels.get("suite"):
            return f"run the same command again: the suite continues {what}"
        if self.cfg.resume:
            return f"run the same command again: it continues {what}"
        return f"the same command with --resume continues {what}"

    # ---- the run -------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        if self.mode == "finished":
            summary = self.folder.summary() if self.dist.is_main else None
            self.folder.release()
            return dd.broadcast_object(summary, self.dist)
        handlers = {sig: signal.signal(sig, self.on_signal) for sig in SIGNAL_NAMES}
        try:
            return self._run()
        except RunInterrupted:
            raise
        except KeyboardInterrupt:
            with contextlib.suppress(RabenchError, OSError):
                self.write_summary(INTERRUPTED, "a second signal, before the checkpoint was written")
            ckpt = self.how_to_continue("from the last checkpoint") if self.folder.has_checkpoint() else "no checkpoint"
            raise RunInterrupted(f"stopped by a second signal at iter {self.state.iter}; {ckpt} in {self.cfg.out}",
                                 self.signal or signal.SIGINT) from None
        except BaseException as exc:
            self.fail(exc)
            raise
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.folder.release()

    def _run(self) -> dict[str, Any]:
        self.wall_start = time.perf_counter()
        # warm up before restoring: whatever the warm-up does to a fresh optimizer, the checkpoint then overwrites
        self.warm_up()
        if self.mode == "resume":
            self.restore()
        elif self.dist.is_main:
            self.write_config()
        s = self.state
        s.machines = dd.broadcast_object(dd.on_main(self.machines_so_far, self.dist), self.dist)
        if self.dist.is_main:
            self.folder.clear_summary()
            self.folder.open_metrics(keep_through_iter=s.logged_through if self.mode == "resume" else None)
        self.last_ckpt_time = time.perf_counter()
        bar = self.progress_bar()
        try:
            while True:
                stop = self.finished()
                at_log = s.iter > s.logged_through and (stop is not None or self.is_log_point(s.iter))
                if at_log:
                    try:
                        self.log_point(final=stop is not None)
                    except _EvalInterrupted:
                        self.interrupt()
                    self.update_bar(bar)
                if stop is not None:
                    break
                interrupt, ckpt = self.due(at_log)
                if interrupt:
                    self.interrupt()
                if ckpt:
                    self.checkpoint()
                self.step()
                if bar is not None and s.iter % 5 == 0:
                    self.update_bar(bar)
        finally:
            if bar is not None:
                bar.close()
        self.checkpoint()
        summary = self.write_summary(FINISHED, stop)
        dd.barrier(self.dist)
        return summary

    def warm_up(self) -> None:
        """Untimed forward+backward passes (compile, autotune, allocator); weights untouched.
        A last, timed pass (after compilation) seeds a --time run's step estimate."""
        batches = self.batches(0)
        self.step_fn.warm_up(batches, COMPILE_WARMUP_PASSES if self.cfg.compile else 1)
        sync(self.device)
        t0 = time.perf_counter()  # one more pass, compiled and warm: what a step costs, not what compiling cost
        self.step_fn.warm_up(batches, 1, every_path=False)
        sync(self.device)
        _, seconds = dd.step_stats(0.0, time.perf_counter() - t0, self.dist, self.device)
        self.state.step_estimate_s = seconds  # a resumed run's checkpoint brings its own
        # No reset of the peak-memory counter here: under CUDA graphs the step's activations live in
        # a pool allocated while capturing (during warm-up), so a peak taken after warm-up would
        # miss them and report the same peak whatever the attention's activations cost.

    def stop_on_nonfinite(self, total: float) -> None:
        s = self.state
        where = f"in the log window ending at iter {s.iter}"
        if self.folder.has_checkpoint():
            kept = (f"the checkpoint at iter {self.state.last_ckpt_iter} is kept, but resuming would repeat the "
                    f"same steps; delete {self.cfg.out} and")
        else:
            kept = "no checkpoint was written;"
        raise RabenchError(f"loss became {total} {where}; stopped ({kept} start over with a lower --lr)")

    def fail(self, exc: BaseException) -> None:
        """Best effort: mark the folder failed so the same command can start it over (or --resume a checkpoint)."""
        if not self.dist.is_main:
            return
        reason = str(exc) if isinstance(exc, RabenchError) else f"{type(exc).__name__}: {exc}"
        try:
            self.write_summary(FAILED, reason)
        except (RabenchError, OSError):
            pass

    def write_summary(self, status: str, reason: str | None) -> dict[str, Any]:
        """Written by rank 0; every rank returns the same figures (val losses and window times are rank-synchronised)."""
        s = self.state
        vals = list(s.val_history)
        ms = statistics.median(s.window_ms) if s.window_ms else None
        wall = s.wall_time_s + time.perf_counter() - getattr(self, "wall_start", time.perf_counter())
        summary = {
            "status": status,
            "stop_reason": reason,
            "iters": s.iter,
            "tokens": s.iter * self.tokens_per_iter,
            "train_time_s": round(s.train_time_s, 3),
            "wall_time_s": round(wall, 3),
            "final_val_loss": vals[-1] if vals else None,
            "best_val_loss": min(vals) if vals else None,
            "ms_per_iter": round(ms, 3) if ms else None,
            "tokens_per_s": round(self.tokens_per_iter / (ms / 1000)) if ms else None,
            "peak_mem_gb": round(peak_memory_gb(self.device), 3),
            "machines": s.machines,
        }
        if self.cfg.until_plateau:  # the iteration at whose evaluation the plateau rule fired (None: never)
            summary |= {"plateau_iter": s.cooldown_start,
                        "cooldown_iters": self.cooldown_iters() if s.cooldown_start is not None else None}
        if self.dist.is_main:
            self.folder.write_summary(summary)
        return summary

    # ---- progress bar --------------------------------------------------------------
    def progress_bar(self):
        if not (self.cfg.progress_bar and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        c = self.cfg
        total = c.time_budget_s if c.time_budget_s else c.max_iters
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]"
        bar = tqdm(total=total, desc=f"{c.attn} s{c.seed}", dynamic_ncols=True, leave=True, bar_format=fmt)
        bar.update(min(self.state.train_time_s, total) if c.time_budget_s else self.state.iter)
        return bar

    def update_bar(self, bar) -> None:
        if bar is None:
            return
        c, s = self.cfg, self.state
        if c.time_budget_s:
            bar.n = min(s.train_time_s, c.time_budget_s)
            spent = f"{format_duration(s.train_time_s)}/{format_duration(c.time_budget_s)}"
        else:
            bar.n = min(s.iter, c.max_iters or s.iter)
            spent = format_duration(s.train_time_s)
        val = f"{s.last_val:.3f}@{s.last_eval_iter}" if s.last_val is not None else "-"
        bar.set_postfix_str(f"it {s.iter} val {val} train {spent}", refresh=False)
        bar.refresh()


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) one training run and return its summary.

    Under torchrun every rank calls this and gets the same summary; only rank 0 writes
    files. The process group stays open for further runs (a suite) and closes at exit.
    """
    return Trainer(cfg).run()
