"""Model presets. gpt2-124m is the plan's model; tiny runs on a CPU in seconds."""

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


PRESETS: dict[str, ModelConfig] = {
    "gpt2-124m": ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024),
    "gpt2-350m": ModelConfig(n_layer=24, n_head=16, n_embd=1024, block_size=1024),
    "small": ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=256),
    "tiny": ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64),
    # tiny with a toy vocabulary (rabench.data.toy): on a CPU the 50,304-id output layer was most of
    # tiny's step; at 512 ids a step is about 20x cheaper, so `rabench demo` trains hundreds of steps
    "toy": ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=512),
}

# Batch size and sequence length each preset trains with unless told otherwise.
DEFAULT_BATCH = {"gpt2-124m": (8, 1024), "gpt2-350m": (8, 1024), "small": (8, 256), "tiny": (8, 64),
                 "toy": (8, 64)}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise RabenchError(f"unknown preset {name!r}; choose from: {', '.join(PRESETS)}")
    return PRESETS[name]
