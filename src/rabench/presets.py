"""Presets: one record per preset of everything it sets unless told otherwise (the model's
dimensions, batch, sequence length, lr, eval tokens, default iterations). gpt2-124m is the plan's
model; tiny runs on a CPU in seconds. Free of torch, so the command line reads it at once."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rabench.errors import RabenchError


@dataclass(frozen=True)
class ModelConfig:
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int  # context length the position table covers
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 64 for fast matmuls
    dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    """Everything a preset sets unless told otherwise: the model, the batch, the learning rate, the
    val-set size and the iteration design's baseline length N. One record per preset, so that a new
    preset is one entry here."""

    model: ModelConfig
    batch_size: int
    seq_len: int
    # GPT-2 small practice for the real models, higher for the toy ones; the same for every
    # attention, never tuned per config
    lr: float
    # val tokens per evaluation (capped at the val split when the val set is built): 2 Mi for the
    # real models, 32 Ki for the CPU-sized ones (a few seconds an evaluation on 2 cores)
    eval_tokens: int
    # the baseline's iterations N when a suite's plan gives none: for GPT-2, a few minutes a
    # compiled run on one current GPU; a few CPU minutes for the toy presets
    default_iters: int

    @property
    def plateau_cap_iters(self) -> int:
        """A run to a plateau stops there, not at N: its default cap lies far beyond (N stopped GPT-2
        runs before any plateau), and stops only a curve that never flattens."""
        return PLATEAU_CAP_FACTOR * self.default_iters


PLATEAU_CAP_FACTOR = 10
EVAL_TOKENS_GPT2 = 2_097_152  # 2 Mi tokens: the real models
EVAL_TOKENS_SMALL = 32_768  # 32 Ki tokens: the CPU-sized presets

PRESET_RECORDS: dict[str, Preset] = {
    "gpt2-124m": Preset(ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024), batch_size=8, seq_len=1024,
                        lr=6e-4, eval_tokens=EVAL_TOKENS_GPT2, default_iters=8000),
    "gpt2-350m": Preset(ModelConfig(n_layer=24, n_head=16, n_embd=1024, block_size=1024), batch_size=8, seq_len=1024,
                        lr=3e-4, eval_tokens=EVAL_TOKENS_GPT2, default_iters=8000),
    "small": Preset(ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=256), batch_size=8, seq_len=256,
                    lr=1e-3, eval_tokens=EVAL_TOKENS_SMALL, default_iters=1000),
    "tiny": Preset(ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64), batch_size=8, seq_len=64,
                   lr=3e-3, eval_tokens=EVAL_TOKENS_SMALL, default_iters=300),
    # tiny with a toy vocabulary (rabench.data.toy): on a CPU the 50,304-id output layer was most of
    # tiny's step; at 512 ids a step is about 20x cheaper, so `rabench demo` trains hundreds of steps
    "toy": Preset(ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=512), batch_size=8,
                  seq_len=64, lr=3e-3, eval_tokens=EVAL_TOKENS_SMALL, default_iters=300),
}
# each preset's model alone (what the attention tools and `rabench bench` read)
PRESETS: dict[str, ModelConfig] = {name: p.model for name, p in PRESET_RECORDS.items()}


def preset_record(name: str) -> Preset:
    if name not in PRESET_RECORDS:
        raise RabenchError(f"unknown preset {name!r}; choose from: {', '.join(PRESET_RECORDS)}")
    return PRESET_RECORDS[name]


def preset(name: str) -> ModelConfig:
    return preset_record(name).model
