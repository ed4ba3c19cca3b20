"""Training options: one dataclass, turned into a command line automatically.

Every field is a ``--flag`` of ``base_miner/NPR/train_detector.py``; the resolved
options are written beside the checkpoints (``opt.json``) and into each checkpoint's
metadata, so a model file says how it was made.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from bitmind.calibration import MIN_PER_CLASS
from bitmind.common import PLAIN_SHARE, has_cxx_compiler, parse_bool
from bitmind.image_transforms import TARGET_SIZE, AugConfig

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHECKPOINTS_DIR = REPO_ROOT / "base_miner" / "checkpoints"
#: The largest training seed: torch's generators take 64 bits, and a learner seeds its streams with seed + 1 and + 2.
MAX_SEED = 2**62


def opt(default, help: str):
    """A ``TrainConfig`` field with its ``--help`` text (lists get a fresh copy per instance)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


class ConfigError(ValueError):
    """An option value no run can use (``TrainConfig.check``): the user's to mend, so a command
    line ends with its one line (a usage error, exit status 2). Any other ValueError is a bug
    and keeps its traceback. A ValueError, so the callers that catch those still do."""


@contextlib.contextmanager
def as_config_error(prefix: str = ""):
    """The ValueError of a validator ``check`` asks (a patch size, a pool, a device, the family
    shares) raised as the ``ConfigError`` it is, its message after ``prefix`` (the sweep's
    ``variant 'x': ``): those helpers judge an option's value."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"{prefix}{e}") from e


@dataclass
class TrainConfig:
    # data
    data: list[str] = opt([], "data roots (DIR/{real,fake}/SOURCE/*.jpg or hf:NAME[:role]) split train/val/test by picture stem")
    train_data: list[str] = opt([], "extra roots used for training only (their train split)")
    challenge_data: list[str] = opt([], "roots whose files already ARE validator challenges (sn34-validator): split by stem, "
                                        "trained on with flips only and validated as they are")
    split_seed: int = opt(0, "seed of the split by picture stem")
    val_fraction: float = opt(0.1, "share of each root's stems in the validation split")
    test_fraction: float = opt(0.1, "share of each root's stems in the test split")
    balance: str = opt("sampler", "sampler (classes) | family (classes, then source families) | weight (loss) | none")
    samples_per_epoch: int = opt(0, "draws per epoch with balance=family (0 = the training set's size)")
    family_share: list[str] = opt([], "balance=family: FAMILY=WEIGHT pairs, a sampling family's share of its class "
                                      "relative to the others (1 each when not named), e.g. minigan=0.25 for a quarter "
                                      "of a family's share; families as bitmind.data.families.sampling_family names "
                                      "them (sd1-2, sdxl, flux1, sd3.5, midjourney, gans, aligned, synthetic, minigan, "
                                      "real/<kind>, an unknown fake folder by its name); the log shows the shares")
    pair_aligned: bool = opt(False, "balance=family: put each aligned round trip and its real photo in one batch")
    pair_patches: bool = opt(False, "pair_aligned: crop a round trip and its real photo at the same place (--patch_size) "
                                    "and shuffle their tiles alike (--tile_shuffle), so the decoder stays their only "
                                    "difference (off: each its own patch, as base.pth was trained)")
    # model
    arch: str = opt("npr", "architecture (bitmind.models registry)")
    layers: list[int] = opt([3, 4], "residual blocks per stage: 2 entries, or 3 to add layer3")
    width: int = opt(64, "channels of the first stage")
    dropout: float = opt(0.0, "dropout before the classifier")
    input: str = opt("npr", "npr | hp | npr_hp | rgb | rgb_npr_hp | npr_hp_norm | npr_hp_periodic "
                                "(see bitmind/models/npr.py)")
    stem_pool: bool = opt(True, "max-pool after the stem")
    pool: str = opt("mean", "image logit from the location logits: mean | topNN (mean of the NN %% highest; "
                            "trained and served alike, bitmind/models/npr.py)")
    init_from: str = opt("", "start from these weights (fine-tuning); the architecture options and patch_size "
                             "not given on the command line are read from the checkpoint")
    # optimisation (NPR paper defaults)
    epochs: int = opt(30, "training epochs")
    batch_size: int = opt(64, "images per training batch")
    lr: float = opt(2e-4, "Adam learning rate")
    beta1: float = opt(0.9, "Adam beta1")
    weight_decay: float = opt(0.0, "Adam weight decay")
    lr_schedule: str = opt("step", "step (x lr_decay every lr_decay_every epochs) | cosine (to 1%% of lr)")
    lr_decay: float = opt(0.9, "step schedule: factor per lr_decay_every epochs")
    lr_decay_every: int = opt(2, "step schedule: epochs between decays")
    warmup_epochs: int = opt(0, "linear warm-up epochs")
    early_stop_patience: int = opt(10, "epochs without val-acc improvement before stopping; 0 disables")
    label_smoothing: float = opt(0.0, "binary label smoothing (targets move towards 0.5)")
    aux_weight: float = opt(0.0, "weight of an auxiliary cross-entropy head that tells real photos and each fake "
                                 "family of the training set apart (or finer: --aux_by; "
                                 "bitmind.data.families.aux_classes; 0: off). "
                                 "It adds outputs after the detector's logit, which alone is served, scored and "
                                 "calibrated; the checkpoint names the classes (train_options.aux_classes)")
    aux_by: str = opt("family", "how finely the auxiliary head splits generated pictures: family (SD 1/2, SDXL, "
                                "FLUX.1, SD 3.5, Midjourney, GANs, round trips), generator (the GAN family split into "
                                "its four generator designs, each up-sampling with its own layers) or source (every "
                                "generator folder its own class; it may learn what each folder shows) or shuffled (the family "
                                "classes, each generated picture given one at random: a probe with no generator "
                                "information). Fixed on --resume; "
                                "bitmind.data.families.aux_class_of")
    aux_fakes_only: bool = opt(False, "the auxiliary head's cross-entropy over generated pictures only (real photos, "
                                      "half of every batch, are never its targets): it names which generator made a "
                                      "picture, the detector alone says whether one did (Learner.aux_term)")
    real_compact_weight: float = opt(0.0, "weight of a one-class term: the squared distance of each real training "
                                          "photo's pooled features from the real photos' running mean, over the "
                                          "batch's spread (0: off; Learner.compact_term). Real photos learn one compact "
                                          "cluster and whatever lies outside it reads as generated, a generator never "
                                          "seen included (npr, mean pool; with --aug_cutmix_prob p it reads the real "
                                          "photos left unmixed, about 1 - p of them)")
    adv_weight: float = opt(0.0, "strength of a content adversary: a linear head on the pooled features that names "
                                 "each real training photo's kind (its source folder: faces, coco, imagenet, ...; "
                                 "bitmind.data.families.content_classes), its gradient reversed into the network and "
                                 "scaled by this weight (ramped up from 0 over training, as in domain-adversarial "
                                 "training), so the features carry less of what the picture shows (0: off; needs two "
                                 "real kinds or more; Learner.adversary_term). Training only: the head is not part of "
                                 "the checkpoint's network. Fixed on --resume")
    history_weight: float = opt(0.0, "weight of a processing-history head: outputs after the detector's (and the "
                                     "auxiliary head's) that regress what the training augmentation did to each "
                                     "picture, log2 of its resize factor and its JPEG quality (Huber loss; "
                                     "bitmind.image_transforms.HISTORY_OUTPUTS; 0: off). Only how the pixels were made "
                                     "answers it, for real and generated pictures alike; no JPEG round trip counts as quality 100; "
                                     "validator challenges (--challenge_data, and round trips paired with them), whose "
                                     "history is unknown, are left out of it. Fixed on --resume. The checkpoint "
                                     "names the outputs (train_options.history_outputs); the miner serves the detector alone")
    patch_size: int = opt(0, "train on one random square of this side per image (0: the whole image); the model is "
                             "served on the whole picture, its global pool averaging the patches (shipped recipe: 96)")
    tile_shuffle: int = opt(0, "cut each training image (after --patch_size) into tiles of this side and put them back in a "
                               "random order (0: off; even, dividing the patch): the model keeps the local traces and "
                               "loses the layout of what the picture shows. Training only")
    # augmentation (applied to both classes alike)
    aug_validator_prob: float = opt(1.0, "probability of the validator's random augmentation / plain draw")
    aug_plain_share: float = opt(PLAIN_SHARE, "share of validator draws without random augmentation")
    aug_jpeg_prob: float = opt(1.0, "probability of JPEG re-encoding")
    aug_jpeg_quality: list[int] = opt([75, 75], "JPEG quality range (min max)")
    aug_blur_prob: float = opt(0.0, "probability of Gaussian blur")
    aug_blur_sigma: list[float] = opt([0.1, 2.0], "blur sigma range (min max)")
    aug_color_jitter_prob: float = opt(0.0, "probability of colour jitter")
    aug_color_jitter: float = opt(0.2, "colour jitter strength (brightness/contrast/saturation; hue a quarter)")
    aug_noise_prob: float = opt(0.0, "probability of camera-like sensor noise (shot + read, luma + chroma)")
    aug_noise_sigma: list[float] = opt([1.0, 6.0], "sensor noise strength range in 8-bit levels at mid grey (min max)")
    aug_freq_mask_prob: float = opt(0.0, "probability of zeroing a random share (--aug_freq_mask_ratio) of a training "
                                         "patch's Fourier coefficients, on the device after the patch is cut "
                                         "(frequency masking: traces spread over the spectrum, not one band; 0: off)")
    aug_freq_mask_ratio: float = opt(0.15, "share of the Fourier coefficients --aug_freq_mask_prob zeroes")
    aug_freq_mask_max_freq: float = opt(0.0, "mask only coefficients within this radius, a share of the Nyquist "
                                             "frequency along an axis (0: the whole spectrum, whose corners lie at "
                                             "1.41; 0.5 spares the high frequencies)")
    aug_cutmix_prob: float = opt(0.0, "probability that a training patch gets a rectangle of a patch of the other "
                                      "class pasted at the same place, its label (and auxiliary class) the "
                                      "area-weighted mix: the evidence for 'generated' is local, not what the "
                                      "picture shows (CutMix across classes, on the device after the patch is cut; 0: off)")
    aug_cutmix_area: list[float] = opt([0.25, 0.75], "area share of the pasted rectangle (min max, within (0, 1); met to "
                                                     "the rounding of its sides to even pixels, never the whole patch)")
    val_challenge: bool = opt(True, "validate through the validator pipeline (seeded), as miners are scored")
    calibrate: bool = opt(True, "fit Platt scaling on the validation logits and store it in the best checkpoint")
    calibration_real_target: float = opt(0.0, "then put the boundary where this share of the validation real photos "
                                              "pass (0: the Platt boundary; the shipped model uses 0.85, docs/Generalisation.md)")
    calibration_min_per_class: int = opt(MIN_PER_CLASS, "fewest validation pictures of each class to fit the calibration on; with "
                                             "fewer the best checkpoint keeps its raw logits (fit it later with "
                                             "python -m bitmind.calibrate on more data). The trainer's: sweeps, "
                                             "research runs on the pools, calibrate on what they validate on")
    # run
    name: str = opt("npr_experiment", "run name: the output folder under checkpoints_dir")
    checkpoints_dir: str = opt(str(DEFAULT_CHECKPOINTS_DIR), "where run folders go")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    amp: str = opt("auto", "auto (bf16 on GPU) | bf16 | fp16 (with a gradient scaler) | none")
    channels_last: bool = opt(True, "channels-last tensors on CUDA")
    cudnn_benchmark: bool = opt(True, "cudnn autotuning on CUDA")
    share_multiple: int = opt(1, "sweeps: a variant trained on part of each shared batch (a fold) takes a multiple of "
                                 "this many of its rows (the last few dropped), so cudnn autotuning meets a few batch "
                                 "sizes, not a new one almost every step; 1 = all its rows")
    compile: bool = opt(False, "torch.compile the training step's network (TorchInductor; needs a C++ compiler on a "
                               "CPU): fewer, fused kernels per step after a compile at the first batches; "
                               "validation and checkpoints use the plain model")
    fused_adam: bool = opt(False, "Adam as one fused kernel per step on CUDA (torch's fused=True; ignored on a CPU): "
                                  "fewer launches where they limit a step (many small models, benchmarks/step_speed.py)")
    uint8_loading: bool = opt(True, "workers hand over uint8 images, scaled to float on the device")
    workers: int = opt(4, "data loader worker processes (at most one per core the run may use)")
    pin_memory: bool = opt(True, "pinned host memory for CUDA transfers")
    loader_parts: int = opt(4, "workers build each training batch in this many parts (the largest count up to it "
                               "that divides batch_size), joined on the device: the same batches, but an epoch's "
                               "first one waits for a part per worker instead of a whole batch (~1.1 s a sweep "
                               "epoch on the H200 with 256)")
    seed: int = opt(0, "seed of weights, sampling and augmentation")
    resume: bool = opt(False, "resume from <run_dir>/state_last.pt, with the options in its opt.json where the "
                              "command line leaves them out (network options may not change)")
    overwrite: bool = opt(False, "start a new run in a run folder that already holds one, its files set aside in "
                                 ".previous_run (put back if the new run ends before it saves an epoch, removed once "
                                 "it has; without it, or --resume, such a folder is refused)")
    max_steps_per_epoch: int = opt(0, "cap on batches per epoch; 0 = full epoch (a cap is useful for quick tests)")
    log_every: int = opt(20, "steps between TensorBoard loss points")
    progress: bool = opt(True, "tqdm progress bars")

    def aug_config(self) -> AugConfig:
        return AugConfig(
            validator_prob=self.aug_validator_prob, plain_share=self.aug_plain_share, jpeg_prob=self.aug_jpeg_prob,
            jpeg_quality=tuple(self.aug_jpeg_quality), blur_prob=self.aug_blur_prob, blur_sigma=tuple(self.aug_blur_sigma),
            color_jitter_prob=self.aug_color_jitter_prob, color_jitter=self.aug_color_jitter,
            noise_prob=self.aug_noise_prob, noise_sigma=tuple(self.aug_noise_sigma),
        )

    def check(self) -> "TrainConfig":
        """This config if every option value is usable, else a ``ConfigError`` (a ValueError) naming the option.
        Why: a typo in ``--balance`` or an odd ``--tile_shuffle`` should stop the run before
        the data is read and the workers start, not minutes later in a worker's traceback.
        What needs the data or a checkpoint (the roots, ``--init_from``) is checked where it is read."""
        from bitmind.data.families import AUX_GROUPINGS
        from bitmind.models import available_models
        from bitmind.models.npr import INPUT_MODES, top_fraction
        from bitmind.training.loop import check_cutmix, check_freq_mask, check_patch_size, check_tile_shuffle

        def one_of(name, allowed):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name} {getattr(self, name)!r}: one of {', '.join(allowed)}")

        one_of("balance", ("sampler", "family", "weight", "none"))
        one_of("lr_schedule", ("step", "cosine"))
        one_of("aux_by", AUX_GROUPINGS)
        one_of("amp", ("auto", "bf16", "fp16", "none"))
        one_of("arch", tuple(available_models()))
        if self.arch == "npr":
            one_of("input", INPUT_MODES)
            with as_config_error():
                top_fraction(self.pool)
            if len(self.layers) not in (2, 3) or min(self.layers) < 1:
                raise ConfigError(f"--layers {self.layers}: 2 or 3 stages of at least one block")
        for name in ("epochs", "batch_size", "width", "loader_parts", "share_multiple", "lr_decay_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("workers", "warmup_epochs", "early_stop_patience", "max_steps_per_epoch", "samples_per_epoch"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be 0 or more, got {getattr(self, name)}")
        if not 0 <= self.seed <= MAX_SEED:  # torch's generators take 64 bits, and seed + 2 is drawn from too
            raise ConfigError(f"--seed must be in 0-{MAX_SEED}, got {self.seed}")
        for name in ("lr", "lr_decay"):  # inf passes "> 0" and turns every weight into NaN at the first step
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"--{name} must be positive (and finite), got {getattr(self, name)}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"--weight_decay must be 0 or more, got {self.weight_decay}")
        if not 0.0 <= self.beta1 < 1.0:
            raise ConfigError(f"--beta1 must be in [0, 1), got {self.beta1}")
        if self.val_fraction <= 0:
            raise ConfigError("--val_fraction must be above 0: the validation split picks the best epoch and fits "
                              "the calibration (a small share such as 0.05 will do)")
        for name in ("aug_validator_prob", "aug_plain_share", "aug_jpeg_prob", "aug_blur_prob", "aug_color_jitter_prob",
                     "aug_noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"--{name} is a probability in [0, 1], got {getattr(self, name)}")
        # above 1, factors 1 - s below 0 (a black picture); above 2, a hue shift a worker fails on; -s is s
        if not 0.0 <= self.aug_color_jitter <= 1.0:
            raise ConfigError(f"--aug_color_jitter is a strength in [0, 1], got {self.aug_color_jitter}")
        # the weights of terms that read the mean pool's features or add outputs beside the detector's
        for name, why in (("aux_weight", "a top-k pool ranks the locations by the detector's logit alone"),
                          ("real_compact_weight", "it reads the pooled features the mean pool's classifier sees"),
                          ("history_weight", "its outputs sit beside the detector's on the pooled features"),
                          ("adv_weight", "the content adversary reads the pooled features the mean pool's classifier sees")):
            weight = getattr(self, name)
            if not (math.isfinite(weight) and weight >= 0):
                raise ConfigError(f"--{name} must be 0 (off) or positive, got {weight}")
            if weight and (self.arch != "npr" or self.pool != "mean"):
                raise ConfigError(f"--{name} needs the npr architecture with the mean pool ({why})")
        if self.real_compact_weight and self.aug_cutmix_prob >= 1.0:
            raise ConfigError("--real_compact_weight with --aug_cutmix_prob 1: the one-class term reads the real photos "
                              "left unmixed (about 1 - p of them), so with every patch mixed it would never apply")
        if self.aug_cutmix_prob and self.pair_patches:
            raise ConfigError("--aug_cutmix_prob with --pair_patches: each patch gets its own pasted rectangle and "
                              "partner, so a round trip and its real photo would differ by more than the decoder")
        if self.history_weight and self.aug_cutmix_prob:
            raise ConfigError("--history_weight with --aug_cutmix_prob: a patch with a rectangle of another picture "
                              "has two processing histories, and the head is told one")
        if self.history_weight and self.init_from:
            raise ConfigError("--history_weight with --init_from: a checkpoint's head has no processing-history "
                              "outputs to start from; train the head from scratch")
        if self.adv_weight and self.aug_cutmix_prob:
            raise ConfigError("--adv_weight with --aug_cutmix_prob: a patch with a rectangle of another picture shows "
                              "two contents, and the adversary is told one")
        if self.aux_by != "family" and not self.aux_weight:
            raise ConfigError(f"--aux_by {self.aux_by} needs --aux_weight: it groups the auxiliary head's classes, "
                              "and without the head it would change nothing")
        if self.aux_fakes_only and not self.aux_weight:
            raise ConfigError("--aux_fakes_only needs --aux_weight: it says which pictures the auxiliary head learns from")
        if self.aux_fakes_only and self.aug_cutmix_prob:
            raise ConfigError("--aux_fakes_only with --aug_cutmix_prob: a mixed patch is part real photo, part "
                              "generated, and its auxiliary target a mixture of both")
        if self.aux_weight and self.init_from:
            raise ConfigError("--aux_weight with --init_from: a checkpoint's head has no auxiliary classes to "
                              "start from; train the auxiliary head from scratch")
        if self.resume and self.overwrite:  # a resume was tried first, and said only "no state_last.pt"
            raise ConfigError("--resume continues the run in the folder, --overwrite replaces it: pass one of them")
        if self.calibration_min_per_class < 0:
            raise ConfigError(f"--calibration_min_per_class is a count, 0 or more, got {self.calibration_min_per_class}")
        for name in ("dropout", "label_smoothing", "calibration_real_target", "val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("--val_fraction and --test_fraction leave nothing to train on")
        for name in ("aug_jpeg_quality", "aug_blur_sigma", "aug_noise_sigma"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1] or lo_hi[0] < 0:
                raise ConfigError(f"--{name} takes two values, min max, got {lo_hi}")
        if not 1 <= self.aug_jpeg_quality[0] <= self.aug_jpeg_quality[1] <= 100:
            raise ConfigError(f"--aug_jpeg_quality is a range within 1-100, got {self.aug_jpeg_quality}")
        self.check_pairing()
        name = Path(self.name)  # the run folder under checkpoints_dir: an absolute or '..' name wrote somewhere else
        if not name.parts or name.is_absolute() or ".." in name.parts:
            raise ConfigError(f"--name {self.name!r}: the run folder's name under --checkpoints_dir (not empty, not an "
                              "absolute path, no '..'); to write elsewhere, set --checkpoints_dir")
        for folder in (Path(self.checkpoints_dir), *Path(self.checkpoints_dir).parents):  # a file on the way: a
            if folder.exists():  # NotADirectoryError traceback once the data was read
                if not folder.is_dir():
                    raise ConfigError(f"--checkpoints_dir {self.checkpoints_dir}: {folder} is a file, not a folder")
                break
        if not isinstance(self.family_share, (list, tuple)) or not all(isinstance(x, str) for x in self.family_share):
            raise ConfigError(f"--family_share takes FAMILY=WEIGHT strings (in a spec a list: [\"minigan=0.25\"]), "
                              f"got {self.family_share!r}")
        if self.family_share:
            from bitmind.data.families import parse_family_share

            with as_config_error():
                parse_family_share(self.family_share)
            if self.balance != "family":
                raise ConfigError("--family_share needs --balance family")
        # against the side every training picture has (TARGET_SIZE), as the sweep checks its variants:
        # a larger --patch_size was the whole picture, without a word
        with as_config_error():
            check_tile_shuffle(self.tile_shuffle, check_patch_size(self.patch_size, TARGET_SIZE) or TARGET_SIZE)
            check_freq_mask(self.aug_freq_mask_prob, self.aug_freq_mask_ratio, self.aug_freq_mask_max_freq)
            check_cutmix(self.aug_cutmix_prob, self.aug_cutmix_area)
        device_type = self._device_type()  # also a --device this machine lacks (cuda without a GPU), before the data
        if self.compile and not has_cxx_compiler() and device_type == "cpu":
            raise ConfigError("--compile on a CPU needs a C++ compiler (g++ or clang++) for TorchInductor; "
                              "install one or leave --compile off")
        return self

    def loader_batch(self) -> tuple[int, int]:
        """(images per loader batch, loader batches per training batch): ``loader_parts`` or
        the largest count below it that divides ``batch_size``; whole batches without workers
        (no worker waits to shorten)."""
        parts = 1 if self.workers < 1 else next(p for p in range(min(max(self.loader_parts, 1), self.batch_size), 0, -1)
                                                 if self.batch_size % p == 0)
        return self.batch_size // parts, parts

    def _device_type(self) -> str:
        """``cpu`` or ``cuda``, as the trainer will resolve ``device`` (``auto`` without a GPU: the CPU)."""
        from bitmind.common import check_device

        with as_config_error():
            device = check_device(self.device)  # a device this machine lacks is a usage error, before the data
        if device.type not in ("cpu", "cuda"):
            raise ConfigError(f"--device {self.device!r}: auto, cpu, cuda or cuda:N")
        return device.type

    def check_pairing(self) -> None:
        """A ``ConfigError`` unless the aligned-pair options fit together (``check`` and the
        training sampler, which pairs the round trips, both ask)."""
        if self.pair_aligned and self.balance != "family":
            raise ConfigError("--pair_aligned needs --balance family")
        if self.pair_patches and not self.pair_aligned:
            raise ConfigError("--pair_patches needs --pair_aligned")
        if self.pair_aligned and self.batch_size % 2:
            raise ConfigError(f"--pair_aligned needs an even --batch_size, got {self.batch_size} "
                              "(with an even batch_size no pair straddles two batches)")

    @property
    def run_dir(self) -> Path:
        return Path(self.checkpoints_dir) / self.name

    def model_config(self) -> dict:
        return {"layers": list(self.layers), "width": self.width, "dropout": self.dropout,
                "input": self.input, "stem_pool": self.stem_pool, **({"pool": self.pool} if self.pool != "mean" else {})}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: List options that name data roots: repeating the flag adds roots instead of replacing them.
_ROOT_LISTS = ("data", "train_data", "challenge_data")
#: List options whose repeated flags add up too (``--family_share a=1 --family_share b=2``).
_EXTEND_LISTS = (*_ROOT_LISTS, "family_share")


#: A command-line word that is a negative number, in the forms ``float`` reads: ``-2``, ``-.5``,
#: ``-1e-3``, ``-inf`` (Python 3.11's argparse pattern, ``^-\d+$|^-\d*\.\d+$``, misses the last
#: two; later argparse uses ``-\.?\d``, the first half of this one).
NEGATIVE_NUMBER = re.compile(r"-\.?\d|-(inf|infinity|nan)$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reads a negative number after an option as its value.
    Why: Python 3.11's argparse takes ``--lr -1e-3`` for ``--lr`` with its value missing
    (``expected one argument``), though ``-1e-3`` is a number and no option looks like one;
    read as a value, the option's own check says what is wrong with it (a learning rate must
    be positive), and a list option reads it as one of its values (``--aug_blur_sigma -1e-3 2``
    parses; its check then refuses it). One place for every command built here: ``parse_config``
    and ``explicit_options`` both read ``build_parser``'s parser. No option of ours looks like a
    negative number, so none is mistaken for one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description="Train the NPR AI-generated image detector.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        flag = f"--{f.name}"
        help = f.metadata.get("help", f.name)
        if isinstance(default, bool):
            p.add_argument(flag, type=parse_bool, nargs="?", const=True, default=default, help=help + " (true/false)")
        elif f.name in _EXTEND_LISTS:  # --data A B, or --data A --data B: every root counts
            p.add_argument(flag, type=str, nargs="+", action="extend", default=[], help=help)
        elif isinstance(default, list):
            typ = float if (default and isinstance(default[0], float)) else (int if default else str)
            p.add_argument(flag, type=typ, nargs="+", default=default, help=help)
        else:
            p.add_argument(flag, type=type(default), default=default, help=help)
    return p


def explicit_options(argv=None) -> set[str]:
    """The names of the options the command line ``argv`` sets (defaults left out)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv)))


def parse_config(argv=None) -> TrainConfig:
    """The options of a command line; with ``--init_from``, the network options and the
    patch size it leaves out come from that checkpoint (``bitmind.training.init_from``).
    A value no run can use (``TrainConfig.check``) or a checkpoint that contradicts the
    options is reported as a usage error, before any data is read. Only the typed errors are:
    ``ConfigError`` (an option, or an ``--init_from`` file that contradicts them),
    ``RunFolderError`` (``--resume``), ``OSError`` (a missing file) and ``CheckpointError`` (an
    unreadable one); any other exception, a plain ValueError included, is a bug and keeps its
    traceback."""
    from bitmind.checkpoint import CheckpointError
    from bitmind.training.run_folder import RunFolderError

    parser = build_parser()
    cfg = TrainConfig(**vars(parser.parse_args(argv)))
    try:
        if cfg.resume:  # the run's own options, where the command line leaves them out
            from bitmind.training.run_folder import resumed_options

            cfg = resumed_options(cfg, explicit_options(argv))
        if cfg.init_from and not cfg.resume:  # a resumed run's weights come from its state, its options from opt.json
            from bitmind.training.init_from import adopt_checkpoint_options, check_init_weights, read_init_from

            checkpoint = read_init_from(cfg.init_from)  # read once for the options and the weights' check
            cfg = adopt_checkpoint_options(cfg, explicit_options(argv), checkpoint[1])
            cfg = check_init_weights(cfg.check(), checkpoint)
        cfg = cfg.check()
    except (ConfigError, RunFolderError, OSError, CheckpointError) as e:  # a bad option or file: a usage error (exit 2)
        usage_error(parser, str(e))
    # A warning, not a ConfigError, and here, not in check: a sweep's variants share a base ratio
    # with some of them masking nothing (aug_freq_mask_prob 0), as they may.
    for name, prob, what in (("aug_freq_mask_ratio", "aug_freq_mask_prob", "masked"),
                             ("aug_freq_mask_max_freq", "aug_freq_mask_prob", "masked"),
                             ("aug_cutmix_area", "aug_cutmix_prob", "mixed")):
        if name in explicit_options(argv) and not getattr(cfg, prob):
            logger.warning("--%s %s has no effect: --%s is 0, so nothing is %s (set --%s too)",
                           name, getattr(cfg, name), prob, what, prob)
    return cfg


def usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """Exit with status 2 and the one line ``PROG: error: MESSAGE``, as ``parser.error`` does but
    without the usage block before it: the command line parsed, a value in it (or a file it
    names) is wrong, and the forty-odd lines of usage would push the one line that says which
    off the screen."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")
