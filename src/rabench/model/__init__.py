"""GPT-2 with a pluggable attention core, and its presets."""

from rabench.model.config import DEFAULT_BATCH, PRESETS, ModelConfig, preset
from rabench.model.gpt import GPT

__all__ = ["DEFAULT_BATCH", "GPT", "ModelConfig", "PRESETS", "preset"]
