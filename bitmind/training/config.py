"""Training options: one dataclass, turned into a command line automatically.

Every field is a ``--flag`` of ``base_miner/NPR/train_detector.py``; the resolved
options are written beside the checkpoints (``opt.json``) and into each checkpoint's
metadata, so a model file says how it was made.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from bitmind.image_transforms import AugConfig
from bitmind.common import PLAIN_SHARE, parse_bool

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHECKPOINTS_DIR = REPO_ROOT / "base_miner" / "checkpoints"


@dataclass
class TrainConfig:
    # data
    data: list[str] = field(default_factory=list)  # sources split train/val/test by stem
    train_data: list[str] = field(default_factory=list)  # extra sources used for training only (their train split)
    # roots whose files already ARE validator challenges (sn34-validator): split by stem like
    # the rest; trained on with flips only and validated as they are, never sent through the
    # validator augmentation a second time
    challenge_data: list[str] = field(default_factory=list)
    split_seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    balance: str = "sampler"  # sampler (classes) | family (classes, then source families) | weight | none
    samples_per_epoch: int = 0  # draws per epoch with balance=family (0 = the training set's size)
    pair_aligned: bool = False  # balance=family: put each aligned round trip and its real photo in one batch
    # model
    arch: str = "npr"
    layers: list[int] = field(default_factory=lambda: [3, 4])  # 2 entries, or 3 to add layer3
    width: int = 64
    dropout: float = 0.0
    input: str = "npr"  # npr | hp | npr_hp | rgb (see bitmind/models/npr.py)
    stem_pool: bool = True
    init_from: str = ""  # start from these weights (fine-tuning)
    # optimisation (NPR paper defaults)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "step"  # step (x lr_decay every lr_decay_every epochs) | cosine (to 1% of lr)
    lr_decay: float = 0.9
    lr_decay_every: int = 2  # epochs
    warmup_epochs: int = 0
    early_stop_patience: int = 10  # epochs without val-acc improvement; 0 disables
    label_smoothing: float = 0.0
    # augmentation (applied to both classes alike)
    aug_validator_prob: float = 1.0  # random aug / plain, as validators do
    aug_plain_share: float = PLAIN_SHARE
    aug_jpeg_prob: float = 1.0
    aug_jpeg_quality: list[int] = field(default_factory=lambda: [75, 75])
    aug_blur_prob: float = 0.0
    aug_blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    aug_color_jitter_prob: float = 0.0
    aug_color_jitter: float = 0.2
    val_challenge: bool = True  # validate through the validator pipeline (seeded), as miners are scored
    calibrate: bool = True  # fit a temperature on the validation split and store it in the best checkpoint
    # run
    name: str = "npr_experiment"
    checkpoints_dir: str = str(DEFAULT_CHECKPOINTS_DIR)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on GPU) | bf16 | fp16 | none
    channels_last: bool = True
    cudnn_benchmark: bool = True
    uint8_loading: bool = True  # workers hand over uint8 images, scaled to float on the device
    workers: int = 4
    pin_memory: bool = True
    seed: int = 0
    resume: bool = False
    max_steps_per_epoch: int = 0  # 0 = full epoch (a cap is useful for quick tests)
    log_every: int = 20
    progress: bool = True

    def aug_config(self) -> AugConfig:
        return AugConfig(
            validator_prob=self.aug_validator_prob, plain_share=self.aug_plain_share, jpeg_prob=self.aug_jpeg_prob,
            jpeg_quality=tuple(self.aug_jpeg_quality), blur_prob=self.aug_blur_prob, blur_sigma=tuple(self.aug_blur_sigma),
            color_jitter_prob=self.aug_color_jitter_prob, color_jitter=self.aug_color_jitter,
        )

    @property
    def run_dir(self) -> Path:
        return Path(self.checkpoints_dir) / self.name

    def model_config(self) -> dict:
        return {"layers": list(self.layers), "width": self.width, "dropout": self.dropout,
                "input": self.input, "stem_pool": self.stem_pool}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))


#: List options that name data roots: repeating the flag adds roots instead of replacing them.
_ROOT_LISTS = ("data", "train_data", "challenge_data")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the NPR AI-generated image detector.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        flag = f"--{f.name}"
        if isinstance(default, bool):
            p.add_argument(flag, type=parse_bool, nargs="?", const=True, default=default, help=f"{f.name} (true/false)")
        elif f.name in _ROOT_LISTS:  # --data A B, or --data A --data B: every root counts
            p.add_argument(flag, type=str, nargs="+", action="extend", default=[], help=f.name)
        elif isinstance(default, list):
            typ = float if (default and isinstance(default[0], float)) else (int if default else str)
            p.add_argument(flag, type=typ, nargs="+", default=default, help=f.name)
        else:
            p.add_argument(flag, type=type(default), default=default, help=f.name)
    return p


def parse_config(argv=None) -> TrainConfig:
    args = build_parser().parse_args(argv)
    return TrainConfig(**vars(args))
