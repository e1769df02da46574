"""The training loop: equal data, hyperparameters and time accounting for every attention.

Time accounting. `train_time_s` is the sum of device-synchronised step times: each step
starts after a synchronize and ends with one, so it holds forward, backward and the
optimizer step and nothing else. Evaluation, checkpointing and compilation/warm-up
(untimed forward+backward passes before the first step, weights untouched) are
excluded; `wall_time_s` counts everything. The budget is checked against train time.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

import rabench
from rabench.analysis.plateau import PlateauRule
from rabench.data import TokenSplit, check_split_fits, train_batch, val_batches
from rabench.errors import RabenchError
from rabench.model import DEFAULT_BATCH, GPT, preset
from rabench.training import distributed as dd
from rabench.training.checkpoint import load_checkpoint, save_checkpoint
from rabench.training.config import PRESET_LR, TrainConfig
from rabench.training.metrics import MetricsLog, read_metrics
from rabench.training.schedule import budget_lr, plateau_lr
from rabench.training.timeparse import format_duration

SUMMARY_NAME = "summary.json"
CONFIG_NAME = "config.json"
COMPILE_WARMUP_PASSES = 2  # untimed forward+backward passes so compilation/autotuning stays off the clock


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
    val_history: list | None = None  # every val_loss so far, replayed into the plateau rule on resume


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RabenchError("--device cuda asked for, but PyTorch sees no CUDA GPU")
    return torch.device(name)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill preset defaults and check the request before anything heavy happens."""
    model_cfg = preset(cfg.preset)
    batch, seq = DEFAULT_BATCH[cfg.preset]
    cfg.batch_size = cfg.batch_size or batch
    cfg.seq_len = cfg.seq_len or seq
    cfg.lr = cfg.lr if cfg.lr is not None else PRESET_LR[cfg.preset]
    if cfg.seq_len > model_cfg.block_size:
        raise RabenchError(f"--seq-len {cfg.seq_len} exceeds preset {cfg.preset}'s context of {model_cfg.block_size}")
    if cfg.time_budget_s is None and cfg.max_iters is None:
        raise RabenchError("give a budget: --time DURATION (e.g. 10m) or --iters N")
    for name in ("batch_size", "seq_len", "grad_accum", "eval_every", "eval_batches", "log_every"):
        if getattr(cfg, name) < 1:
            raise RabenchError(f"--{name.replace('_', '-')} must be at least 1")
    return cfg


def prepare_run_dir(cfg: TrainConfig, world_size: int = 1) -> Path:
    run_dir = Path(cfg.out)
    existing = run_dir / CONFIG_NAME
    if existing.exists() and not cfg.resume:
        raise RabenchError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if existing.exists() and cfg.resume:
        old = json.loads(existing.read_text())
        for key in ("attn", "preset", "seed", "batch_size", "seq_len", "attn_options", "data"):
            if key in old and old[key] != getattr(cfg, key):
                raise RabenchError(f"--resume: {key} is {getattr(cfg, key)!r} but the run in {run_dir} used {old[key]!r}")
        # N processes x accumulation A read the same rows as one process x N*A, so only the product must match
        if "grad_accum" in old:
            old_ws = old.get("world_size", 1)
            if old["grad_accum"] * old_ws != cfg.grad_accum * world_size:
                raise RabenchError(
                    f"--resume: grad_accum x processes is {cfg.grad_accum} x {world_size} but the run in {run_dir} "
                    f"used {old['grad_accum']} x {old_ws}; keep the product the same")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def environment_info(device: torch.device, info: dd.DistInfo) -> dict[str, Any]:
    return {
        "device": device.type,
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "world_size": info.world_size,
        "torch_version": torch.__version__,
        "rabench_version": rabench.__version__,
        "time_axis": "train_time_s: device-synchronised training steps only; excludes evaluation, checkpoints and compilation/warm-up",
    }


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only, never on attention gates or biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or ".core." in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux: process peak


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = resolve(cfg)
        self.device = pick_device(cfg.device)
        self.dist = dd.init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        # rank 0 checks and creates the run folder; its error, if any, stops every rank
        self.run_dir = Path(cfg.out)
        dd.on_main(lambda: prepare_run_dir(cfg, self.dist.world_size), self.dist)
        self.train_split = TokenSplit(cfg.data, "train")
        self.val_split = TokenSplit(cfg.data, "val")
        check_split_fits(self.train_split, cfg.batch_size, cfg.seq_len)
        check_split_fits(self.val_split, cfg.batch_size, cfg.seq_len)
        n_val = cfg.eval_batches * cfg.batch_size * (cfg.seq_len + 1)
        self.val = val_batches(self.val_split, cfg.batch_size, cfg.seq_len, n_val)
        torch.manual_seed(cfg.seed)
        self.model = GPT(preset(cfg.preset), cfg.attn, cfg.attn_options).to(self.device)
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()
        )
        self.forward_model: torch.nn.Module = torch.compile(self.model) if cfg.compile else self.model
        if self.dist.enabled:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(self.forward_model, device_ids=ids)
        self.state = RunState()
        self.plateau = PlateauRule(cfg.plateau_patience, cfg.plateau_min_delta)
        self.tokens_per_iter = cfg.batch_size * cfg.seq_len * cfg.grad_accum * self.dist.world_size

    # ---- one step -------------------------------------------------------------------
    def batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        x, y = train_batch(self.train_split, c.seed, step, c.batch_size, c.seq_len, micro=micro, accum=c.grad_accum,
                           rank=self.dist.rank, world_size=self.dist.world_size)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def forward_backward(self, step: int) -> torch.Tensor:
        """Accumulated loss of one optimizer step's micro-batches; grads left in .grad."""
        total = torch.zeros((), device=self.device)
        for micro in range(self.cfg.grad_accum):
            x, y = self.batch(step, micro)
            last = micro == self.cfg.grad_accum - 1
            ctx = self.forward_model.no_sync() if self.dist.enabled and not last else contextlib.nullcontext()
            with ctx, self.autocast:
                _, loss = self.forward_model(x, y)
            (loss / self.cfg.grad_accum).backward()
            total += loss.detach() / self.cfg.grad_accum
        return total

    def lr_for(self, it: int) -> float:
        c, s = self.cfg, self.state
        min_lr = c.lr * c.min_lr_ratio
        if c.until_plateau:
            return plateau_lr(it, c.lr, min_lr, c.warmup_iters, s.cooldown_start, c.cooldown_iters)
        return budget_lr(it, self.progress(), c.lr, min_lr, c.warmup_iters)

    def progress(self) -> float:
        """Fraction of the budget spent: train time over the time budget, or iterations over max iters."""
        c, s = self.cfg, self.state
        fracs = []
        if c.time_budget_s:
            fracs.append(s.train_time_s / c.time_budget_s)
        if c.max_iters and not c.until_plateau:
            fracs.append(s.iter / c.max_iters)
        return min(1.0, max(fracs)) if fracs else 0.0

    def train_step(self, it: int) -> tuple[float, float]:
        """One timed optimizer step; returns (loss, seconds)."""
        self.model.set_progress(self.progress())
        lr = self.lr_for(it)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sync(self.device)
        t0 = time.perf_counter()
        loss = self.forward_backward(it)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()  # synchronises
        sync(self.device)
        seconds = time.perf_counter() - t0
        # outside the timed region: every rank takes the rank-mean loss and the slowest rank's time
        return dd.step_stats(loss_value, seconds, self.dist, self.device)

    # ---- evaluation -----------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed val batches; under DDP each rank evaluates every world_size-th batch.

        The per-batch losses are gathered and summed in batch order on every rank, so the
        result equals a single process's for any number of batches and ranks.
        """
        self.model.eval()
        mine: dict[int, float] = {}
        for i, (x, y) in enumerate(self.val):
            if i % self.dist.world_size != self.dist.rank:
                continue
            with self.autocast:
                _, loss = self.model(x.to(self.device), y.to(self.device))
            mine[i] = loss.item()
        self.model.train()
        losses = dd.gather_indexed(mine, len(self.val), self.dist, self.device)
        return sum(losses) / max(1, len(losses))

    def warm_up(self) -> None:
        """Untimed forward+backward passes (compile, autotune, allocator); weights untouched."""
        passes = COMPILE_WARMUP_PASSES if self.cfg.compile else 1
        for _ in range(passes):
            self.forward_backward(self.state.iter)
            self.optimizer.zero_grad(set_to_none=True)
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    # ---- checkpoints ----------------------------------------------------------------
    def checkpoint(self) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint(self.run_dir, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": vars(self.state).copy(),
        })

    def restore(self) -> bool:
        """Every rank loads the checkpoint rank 0 wrote, so all replicas start equal."""
        ckpt = load_checkpoint(Path(self.cfg.out), map_location=self.device)
        if ckpt is None:
            return False
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = RunState(**ckpt["state"])
        for value in self.state.val_history or []:
            self.plateau.update(value)
        return True

    # ---- the run --------------------------------------------------------------------
    def write_config(self) -> None:
        if not self.dist.is_main:
            return
        record = self.cfg.to_dict() | self.model.cfg.to_dict() | environment_info(self.device, self.dist)
        record |= {"n_params": self.model.num_params(), "eval_tokens": len(self.val) * self.cfg.batch_size * self.cfg.seq_len,
                   "tokens_per_iter": self.tokens_per_iter,
                   "attn_options": self.model.blocks[0].attn.core.spec.options}
        (self.run_dir / CONFIG_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n")

    def finished(self) -> str | None:
        c, s = self.cfg, self.state
        if c.time_budget_s is not None and s.train_time_s >= c.time_budget_s:
            return "time budget"
        if c.until_plateau:
            if s.cooldown_start is not None and s.iter >= s.cooldown_start + c.cooldown_iters:
                return "plateau"
            if c.max_iters is not None and s.iter >= c.max_iters:
                return "max iters"
            return None
        if c.max_iters is not None and s.iter >= c.max_iters:
            return "max iters"
        return None

    def run(self) -> dict[str, Any]:
        resumed = self.cfg.resume and self.restore()
        # keep the attention options as resolved, so a resume compares like with like
        self.cfg.attn_options = dict(self.model.blocks[0].attn.core.spec.options)
        self.write_config()
        log = MetricsLog(self.run_dir, keep_through_iter=self.state.iter if resumed else None) if self.dist.is_main else None
        wall_start = time.perf_counter() - self.state.wall_time_s
        self.warm_up()
        if not resumed:
            self.record_eval(log, train_loss=None, window=[])
        bar = self.progress_bar()
        window: list[tuple[float, float]] = []  # (loss, seconds) since the last log point
        step_times: list[float] = []
        last_ckpt = time.perf_counter()
        stop = self.finished()
        try:
            while stop is None:
                it = self.state.iter
                loss, seconds = self.train_step(it)
                self.state.iter += 1
                self.state.train_time_s += seconds
                window.append((loss, seconds))
                step_times.append(seconds)
                if not math.isfinite(loss):
                    self.state.wall_time_s = time.perf_counter() - wall_start
                    self.log_point(log, window, None)
                    return self.stop_on_nonfinite(loss, log)
                # train_time_s is the same on every rank (see train_step), so all ranks stop together
                stop = self.finished()
                if stop is not None:
                    break  # the final evaluation below logs this window
                if self.state.iter % self.cfg.eval_every == 0 or self.state.iter % self.cfg.log_every == 0:
                    self.state.wall_time_s = time.perf_counter() - wall_start
                    if self.state.iter % self.cfg.eval_every == 0:
                        self.record_eval(log, train_loss=None, window=window)
                    else:
                        self.log_point(log, window, None)
                    window = []
                self.update_bar(bar, loss)
                if time.perf_counter() - last_ckpt >= self.cfg.ckpt_every_s:
                    self.state.wall_time_s = time.perf_counter() - wall_start
                    self.checkpoint()
                    last_ckpt = time.perf_counter()
        except KeyboardInterrupt:
            self.state.wall_time_s = time.perf_counter() - wall_start
            self.checkpoint()
            self.write_summary("interrupted", "interrupted by the user", step_times)
            raise RabenchError(f"interrupted at iter {self.state.iter}; `--resume` continues from the checkpoint in {self.run_dir}") from None
        finally:
            if bar is not None:
                bar.close()
        self.state.wall_time_s = time.perf_counter() - wall_start
        if window or self.state.last_eval_iter != self.state.iter:
            self.record_eval(log, train_loss=None, window=window)
        self.checkpoint()
        summary = self.write_summary("done", stop, step_times)
        if log is not None:
            log.close()
        dd.barrier(self.dist)
        return summary

    def stop_on_nonfinite(self, loss: float, log: MetricsLog | None) -> dict[str, Any]:
        # the loss is the rank mean, so every rank gets here at the same iteration
        self.write_summary("stopped_nan", f"loss became {loss} at iter {self.state.iter}", [])
        if log is not None:
            log.close()
        dd.barrier(self.dist)  # rank 0's summary is on disk before any rank exits (torchrun then stops the rest)
        raise RabenchError(
            f"loss became {loss} at iter {self.state.iter}; stopped. The last good checkpoint in {self.run_dir} is kept"
            " (try a lower --lr)"
        )

    # ---- logging --------------------------------------------------------------------
    def record_eval(self, log: MetricsLog | None, train_loss: float | None, window: list) -> None:
        val = self.evaluate()
        self.state.last_val = val
        self.state.best_val = min(self.state.best_val, val)
        self.state.val_history = (self.state.val_history or []) + [val]
        self.state.last_eval_iter = self.state.iter
        if self.cfg.until_plateau and self.state.cooldown_start is None and self.plateau.update(val):
            self.state.cooldown_start = self.state.iter
        self.log_point(log, window, val)

    def log_point(self, log: MetricsLog | None, window: list, val_loss: float | None) -> None:
        if log is None:
            return
        s = self.state
        losses = [l for l, _ in window]
        secs = [t for _, t in window]
        ms = 1000 * sum(secs) / len(secs) if secs else None
        record: dict[str, Any] = {
            "iter": s.iter,
            "tokens": s.iter * self.tokens_per_iter,
            "train_time_s": round(s.train_time_s, 4),
            "wall_time_s": round(s.wall_time_s, 3),
            "train_loss": sum(losses) / len(losses) if losses else None,  # step losses are already rank means
            "lr": self.lr_for(max(0, s.iter - 1)),
            "ms_per_iter": round(ms, 3) if ms else None,
            "tokens_per_s": round(self.tokens_per_iter / (ms / 1000)) if ms else None,
            "peak_mem_gb": round(peak_memory_gb(self.device), 3),
        }
        if val_loss is not None:
            record["val_loss"] = val_loss
        gates = self.model.gate_log()
        if gates is not None:
            record["gates"] = gates
        log.write(record)

    def write_summary(self, status: str, reason: str | None, step_times: list[float]) -> dict[str, Any]:
        """Written by rank 0; every rank returns the same figures (val losses and step times are rank-synchronised)."""
        if self.dist.is_main:
            vals = [r["val_loss"] for r in read_metrics(self.run_dir) if r.get("val_loss") is not None]
        else:
            vals = list(self.state.val_history or [])
        ms = 1000 * statistics.median(step_times) if step_times else None
        summary = {
            "status": status,
            "stop_reason": reason,
            "iters": self.state.iter,
            "tokens": self.state.iter * self.tokens_per_iter,
            "train_time_s": round(self.state.train_time_s, 3),
            "wall_time_s": round(self.state.wall_time_s, 3),
            "final_val_loss": vals[-1] if vals else None,
            "best_val_loss": min(vals) if vals else None,
            "ms_per_iter": round(ms, 3) if ms else None,
            "tokens_per_s": round(self.tokens_per_iter / (ms / 1000)) if ms else None,
            "peak_mem_gb": round(peak_memory_gb(self.device), 3),
        }
        if self.dist.is_main:
            (self.run_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def progress_bar(self):
        if not (self.cfg.progress_bar and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        c = self.cfg
        if c.time_budget_s:
            total, unit = c.time_budget_s, "s"
        else:
            total, unit = c.max_iters, "it"
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {postfix}"
        bar = tqdm(total=total, unit=unit, desc=f"{c.attn} s{c.seed}", dynamic_ncols=True, leave=True, bar_format=fmt)
        bar.update(self.state.train_time_s if c.time_budget_s else self.state.iter)
        return bar

    def update_bar(self, bar, loss: float) -> None:
        if bar is None:
            return
        c, s = self.cfg, self.state
        if c.time_budget_s:
            bar.n = min(s.train_time_s, c.time_budget_s)
            spent = f"{format_duration(s.train_time_s)}/{format_duration(c.time_budget_s)}"
        else:
            bar.n = s.iter
            spent = format_duration(s.train_time_s)
        val = f"{s.last_val:.3f}" if s.last_val is not None else "-"
        bar.set_postfix_str(f"it {s.iter} loss {loss:.3f} val {val} train {spent}", refresh=False)
        bar.refresh() if s.iter % 5 == 0 else None


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) one training run and return its summary.

    Under torchrun every rank calls this and gets the same summary; only rank 0 writes
    files. The process group stays open for further runs (a suite) and closes at exit.
    """
    return Trainer(cfg).run()
