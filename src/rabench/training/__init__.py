"""Training: config, time-budgeted loop, schedule, checkpoints, metrics, data parallelism."""

from rabench.training.config import TrainConfig
from rabench.training.timeparse import parse_duration

__all__ = ["TrainConfig", "parse_duration", "train"]


def train(cfg: TrainConfig) -> dict:
    from rabench.training.trainer import train as _train

    return _train(cfg)
