"""TrainConfig: the ONE owner of a run's settings, their defaults and their validation.

The CLI's flags default to None and show the defaults written here; a suite sets fields
on it; the trainer resolves the preset-dependent ones (`resolved()`) and writes the result
to config.json. Resume and suites compare a new config with the stored one through
`curve_changing_differences`, so settings that change the learning curve can never drift
mid-run.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rabench.errors import RabenchError, SettingError
from rabench.fileio import json_form
from rabench.presets import PRESET_RECORDS, preset_record

MAX_SEED = 2**63 - 1
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

# Fields that cannot change the learning curve: they may differ between a run and its resume.
# (grad_accum may differ too when grad_accum x processes stays the same; see below.)
PLATEAU_ONLY = {"plateau_patience", "plateau_min_delta", "cooldown_iters", "cooldown_frac"}  # read only under until_plateau
CURVE_NEUTRAL = {"out", "resume", "progress_bar", "log_every", "labels", "ckpt_every", "verify_data",
                 "ddp_bucket_cap_mb", "ddp_grad_as_bucket_view", "ddp_static_graph"}
# Curve-changing fields added after runs were made: what a config.json without one trained with,
# so that a resume or a suite compares them too (an older run trained its gates at the weights' rate).
ADDED_FIELD_DEFAULTS = {"gate_lr_mult": 1.0}
# DDP gradient-communication hooks: "bf16" all-reduces bfloat16 gradients (rounded: it changes the curve)
DDP_COMM_HOOKS = ("none", "bf16")
# The true/false switches (checked as bools: a plan's `compile = "yes"` would otherwise pass as true)
BOOL_FIELDS = ("ddp_grad_as_bucket_view", "ddp_static_graph", "until_plateau", "compile", "resume", "progress_bar",
               "verify_data")


@dataclass
class TrainConfig:
    attn: str
    data: str
    out: str
    preset: str = "gpt2-124m"
    attn_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    time_budget_s: float | None = None  # train-time budget (seconds); the cosine is keyed to it
    max_iters: int | None = None  # iteration budget; the cosine is keyed to it
    until_plateau: bool = False  # the full test: run to a val_loss plateau, then cool down (training.plateau)
    plateau_patience: int = 5  # evaluations in the plateau window
    plateau_min_delta: float = 0.01  # nats the window must beat the best before it by
    cooldown_iters: int | None = None  # an explicit cooldown length in iterations instead of cooldown_frac
    cooldown_frac: float = 0.1  # cooldown as a share of the iterations done at the plateau
    batch_size: int | None = None  # None: the preset's default
    seq_len: int | None = None  # None: the preset's default
    grad_accum: int = 1
    lr: float | None = None  # None: the preset's (rabench.presets)
    gate_lr_mult: float = 1.0  # the attention gates' learning rate over lr (AttentionCore.gate_parameters)
    min_lr_ratio: float = 0.1
    warmup_frac: float = 0.05  # share of the run's own budget (iterations or train time) spent warming up
    warmup_iters: int | None = None  # an explicit warm-up length in iterations instead of warmup_frac
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_tokens: int | None = None  # None: the preset record's eval_tokens, capped at the val split
    eval_batches: int | None = None  # kept for small tests: that many batches instead of eval_tokens
    log_every: int = 10
    ckpt_every: str = "10m"  # a duration ("5m") or an iteration count ("500it")
    compile: bool = False
    compile_mode: str | None = None  # torch.compile mode for training.step.TrainStep (None: its default)
    # data parallelism under torchrun (a single process ignores these); see notes/distributed.md
    ddp_bucket_cap_mb: float = 25.0  # gradient all-reduce bucket size (PyTorch's default)
    ddp_grad_as_bucket_view: bool = False  # gradients live in the buckets: no copy, less memory
    ddp_static_graph: bool = False  # the same parameters get gradients every step (lets DDP plan once)
    ddp_comm_hook: str = "none"  # DDP_COMM_HOOKS; "bf16" changes the curve, the other ddp_* fields do not
    device: str = "auto"
    resume: bool = False
    progress_bar: bool = True
    labels: dict[str, Any] = field(default_factory=dict)  # set by whoever launches the run; never compared
    verify_data: bool = False  # check meta.json's SHA-256 of every data file before training
    # the attention's identity, filled in by resolved(): the reference as given (== attn; a plug-in's
    # module:Class or file.py:Class) and the sha256 of its module's source (a changed file changes the curve)
    attn_ref: str | None = None
    attn_code_hash: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ---- validation: the one place that says what a valid run is ----------------------
    def validate(self) -> None:
        """One-line RabenchError naming the first bad field."""
        from rabench.training.step import COMPILE_MODES

        if self.preset not in PRESET_RECORDS:
            raise SettingError("preset", f"preset {self.preset!r} is unknown; choose from: {', '.join(PRESET_RECORDS)}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise SettingError("device", f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N")
        _positive_float(self, "time_budget_s", optional=True)
        _positive_float(self, "lr", optional=True)
        for name in ("max_iters", "batch_size", "seq_len", "eval_tokens", "eval_batches", "warmup_iters",
                     "cooldown_iters"):
            _int_at_least(self, name, 0 if name == "warmup_iters" else 1, optional=True)
        for name in ("grad_accum", "eval_every", "log_every", "plateau_patience"):
            _int_at_least(self, name, 1)
        _int_at_least(self, "seed", 0)
        if self.seed > MAX_SEED:  # seeds are stored and compared as signed 64-bit integers
            raise SettingError("seed", f"seed must be at most 2**63 - 1, got {self.seed}")
        _in_range(self, "min_lr_ratio", 0.0, 1.0)
        _in_range(self, "warmup_frac", 0.0, 1.0, hi_open=True)
        _in_range(self, "beta1", 0.0, 1.0, hi_open=True)
        _in_range(self, "beta2", 0.0, 1.0, hi_open=True)
        _in_range(self, "weight_decay", 0.0, math.inf)
        _in_range(self, "plateau_min_delta", 0.0, math.inf)
        _in_range(self, "cooldown_frac", 0.0, 1.0)
        _positive_float(self, "grad_clip")
        _positive_float(self, "ddp_bucket_cap_mb")
        _positive_float(self, "gate_lr_mult")
        for name in BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise RabenchError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            # checked here: TrainStep's own check would come only after a calibration had run
            raise RabenchError(f"compile_mode {self.compile_mode!r}: choose from {', '.join(COMPILE_MODES)}")
        if self.ddp_comm_hook not in DDP_COMM_HOOKS:
            raise RabenchError(f"ddp_comm_hook {self.ddp_comm_hook!r}: choose from {', '.join(DDP_COMM_HOOKS)}")
        parse_ckpt_every(self.ckpt_every)
        if not isinstance(self.attn_options, dict) or not isinstance(self.labels, dict):
            raise RabenchError("attn_options and labels must be tables (dicts)")

    def check_budget(self) -> None:
        if self.time_budget_s is None and self.max_iters is None:
            raise RabenchError("give a budget: --time DURATION (e.g. 10m) or --iters N")

    # ---- resolution: preset-dependent defaults filled in, as config.json records them ---
    def resolved(self) -> TrainConfig:
        """A copy with the preset defaults and the attention's options filled in and checked."""
        from rabench import attention

        self.validate()
        self.check_budget()
        defaults = preset_record(self.preset)
        block = defaults.model.block_size
        core = attention.entry(self.attn)
        out = replace(self, data=str(Path(self.data).expanduser().resolve()),  # a resume may start elsewhere
                      batch_size=self.batch_size or defaults.batch_size, seq_len=self.seq_len or defaults.seq_len,
                      lr=self.lr if self.lr is not None else defaults.lr,
                      eval_tokens=self.eval_tokens or defaults.eval_tokens,
                      attn_options=dict(attention.resolve_options(self.attn, self.attn_options)),
                      attn_ref=self.attn, attn_code_hash=core.code_hash if core.plugin else None,
                      labels={"attn_role": core.attn_role} | self.labels,
                      warmup_iters=self.plateau_warmup_iters())
        if out.seq_len > block:
            raise SettingError("seq_len", f"seq_len {out.seq_len} exceeds preset {self.preset}'s context of {block}")
        return out

    def plateau_warmup_iters(self) -> int | None:
        """warmup_iters as resolved. A run to a plateau has no length of its own (its budget is only
        a cap, which may change on resume), so its warm-up cannot be a share of the budget: it is
        warmup_frac of the iteration design's default N for the preset (400 iterations for GPT-2),
        the same warm-up as that design's baseline run."""
        if self.warmup_iters is not None or not self.until_plateau:
            return self.warmup_iters
        return round(self.warmup_frac * preset_record(self.preset).default_iters)

    def ckpt_interval(self) -> tuple[str, float]:
        """('s', seconds) or ('it', iterations)."""
        return parse_ckpt_every(self.ckpt_every)


def parse_ckpt_every(text: str) -> tuple[str, float]:
    """'500it' -> ('it', 500); '5m' / '90s' / '300' -> ('s', seconds)."""
    from rabench.training.timeparse import parse_duration

    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = f"{text}s"
    s = str(text).strip().lower()
    if s.endswith("it"):
        try:
            n = int(s[:-2])
        except ValueError:
            n = 0
        if n < 1:
            raise SettingError("ckpt_every", f"ckpt_every {text!r}: write an iteration count like 500it or a "
                               "duration like 5m")
        return "it", float(n)
    try:
        return "s", parse_duration(s)
    except RabenchError:
        raise SettingError("ckpt_every", f"ckpt_every {text!r}: write an iteration count like 500it or a duration "
                           "like 5m") from None


def curve_changing_differences(old_config: dict[str, Any], new: TrainConfig, world_size: int = 1) -> list[str]:
    """Fields, as 'name: stored -> new', in which `new` would train a different curve than `old_config`.

    Compares the RESOLVED new config with config.json. Progress bar, log interval, labels,
    checkpoint interval and output path may differ; the data folder is compared as a resolved path
    (relative and absolute spellings of one folder agree); grad_accum may differ when
    grad_accum x processes is unchanged (the same rows per step, see rabench.data.train_batch).
    Under --until-plateau the budgets are only caps, so they may differ too; without it in either
    run the plateau rule and its cooldown never act, so their settings may differ.
    """
    cur = json_form(new.resolved().to_dict())  # tuples -> lists, as stored
    cur["device"] = resolved_device_type(new.device)  # config.json records the device used, not "auto"
    neutral = set(CURVE_NEUTRAL) | {"grad_accum", "ddp_comm_hook"}  # the hook: compared as applied, below
    if new.until_plateau and old_config.get("until_plateau"):
        neutral |= {"max_iters", "time_budget_s"}
    if not new.until_plateau and not old_config.get("until_plateau"):
        neutral |= PLATEAU_ONLY
    diffs = []
    for name in (f.name for f in fields(TrainConfig)):
        if name in neutral or (name not in old_config and name not in ADDED_FIELD_DEFAULTS):
            continue
        stored = old_config.get(name, ADDED_FIELD_DEFAULTS.get(name))
        old_value, new_value = stored, cur[name]
        if name == "data":
            old_value, new_value = (str(Path(v).resolve()) for v in (old_value, new_value))
        if name in ("attn", "attn_ref") and _same_plugin_file(old_value, new_value):
            continue  # one file spelt from two directories: attn_code_hash says whether its code changed
        if _differs(old_value, new_value):
            diffs.append(f"{name}: {stored!r} -> {cur[name]!r}")
    old_product = old_config.get("grad_accum", 1) * old_config.get("world_size", 1)
    if old_product != cur["grad_accum"] * world_size:
        diffs.append(f"grad_accum x processes: {old_config.get('grad_accum', 1)} x {old_config.get('world_size', 1)}"
                     f" -> {cur['grad_accum']} x {world_size}")
    old_hook = applied_comm_hook(old_config.get("ddp_comm_hook", "none"), old_config.get("world_size", 1))
    new_hook = applied_comm_hook(cur["ddp_comm_hook"], world_size)
    if old_hook != new_hook:
        diffs.append(f"gradient communication (ddp_comm_hook as applied): {old_hook} -> {new_hook}")
    return diffs


def _same_plugin_file(old: Any, new: Any) -> bool:
    """Both `path/file.py:Class` references to one class in a file of one name: a run resumed
    from another directory spells its plug-in's path another way (the code hash compares the code)."""
    from rabench.attention.registry import file_reference

    old_ref, new_ref = file_reference(old), file_reference(new)
    return (old_ref is not None and new_ref is not None and old_ref[1] == new_ref[1]
            and Path(old_ref[0]).name == Path(new_ref[0]).name)


def applied_comm_hook(hook: str, world_size: int) -> str:
    """The hook a run's gradients actually went through: one process has no all-reduce, so none."""
    return hook if world_size > 1 else "none"


def resolved_device_type(device: str) -> str:
    """'cuda' or 'cpu': what 'auto' means on this machine (no check that a named GPU is there)."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.split(":")[0]


def resolve_device(name: str):
    """The torch.device a --device value (auto, cpu, cuda, cuda:N) means here: the one resolver of
    the trainer, the suite, the calibration and the tools, so 'auto' and a missing GPU read alike."""
    import torch

    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise RabenchError(f"--device {name!r} is not one of auto, cpu, cuda, cuda:N")
    kind = resolved_device_type(name)
    if kind == "cuda" and not torch.cuda.is_available():
        raise RabenchError("--device cuda asked for, but PyTorch sees no CUDA GPU")
    return torch.device(kind if name == "auto" else name)


def device_memory_bytes(device) -> int:
    """The memory a run on `device` (a torch.device) can have: the GPU's, or the machine's for the CPU."""
    import torch

    from rabench.data.loader import machine_memory_bytes

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return machine_memory_bytes()


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return not math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a != b


def _number(cfg: TrainConfig, name: str) -> float | None:
    value = getattr(cfg, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(name, f"{name} must be a number, got {value!r}")
    return float(value)


def _positive_float(cfg: TrainConfig, name: str, optional: bool = False) -> None:
    v = _number(cfg, name)
    if v is None:
        if not optional:
            raise SettingError(name, f"{name} must be given")
        return
    if not math.isfinite(v) or v <= 0:
        raise SettingError(name, f"{name} must be a positive finite number, got {getattr(cfg, name)!r}")


def _int_at_least(cfg: TrainConfig, name: str, low: int, optional: bool = False) -> None:
    v = getattr(cfg, name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise SettingError(name, f"{name} must be an integer of at least {low}, got {v!r}")


def _in_range(cfg: TrainConfig, name: str, lo: float, hi: float, hi_open: bool = False) -> None:
    v = _number(cfg, name)
    if v is None or not (lo <= v <= hi) or (hi_open and v >= hi) or math.isnan(v):
        bracket = ")" if hi_open else "]"
        raise SettingError(name, f"{name} must lie in [{lo}, {hi}{bracket}, got {getattr(cfg, name)!r}")


def default_of(name: str) -> Any:
    """TrainConfig's default for a field (the CLI shows it in --help)."""
    f = next(f for f in fields(TrainConfig) if f.name == name)
    return f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
