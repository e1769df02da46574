"""The model's dimensions, as the preset records in `rabench.presets` own them (kept here for the model's imports)."""

from rabench.presets import PRESETS, ModelConfig, preset

__all__ = ["PRESETS", "ModelConfig", "preset"]
