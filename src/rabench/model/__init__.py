"""GPT-2 with a pluggable attention core, and its presets."""

from rabench.model.config import PRESETS, ModelConfig, preset
from rabench.model.gpt import GPT

__all__ = ["GPT", "ModelConfig", "PRESETS", "build_model", "preset"]


def build_model(preset_name: str, attn: str, attn_options: dict | None, seed: int) -> GPT:
    """The model a run with `seed` starts from (on the CPU; move it after).

    Paired starts: every parameter two attentions share is identical for the same seed,
    and the result does not depend on the global RNG (see `GPT.reset_parameters`).
    """
    return GPT(preset(preset_name), attn, attn_options, seed=seed)
