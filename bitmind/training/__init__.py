"""Training the detector: options (``TrainConfig``) and the loop (``train``)."""
from bitmind.training.config import TrainConfig, build_parser, parse_config
from bitmind.training.trainer import train

__all__ = ["TrainConfig", "build_parser", "parse_config", "train"]
