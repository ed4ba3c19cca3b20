"""The training loop's building blocks, shared by a single run (``trainer.train``) and a
many-variant sweep (``sweep.run_sweep``), in the spirit of torchvision's references:

- ``Learner``: a model with its optimiser, loss, gradient scaler (fp16 AMP) and running
  loss; ``step`` is one optimisation step on a prepared batch; ``crop`` the patch
  training of ``--patch_size`` (``random_patches``), ``--tile_shuffle`` (``shuffle_tiles``)
  and ``--aug_freq_mask_prob`` (``mask_frequencies``).
- ``train_one_epoch``: one pass over a loader, each batch prepared once (device, uint8
  to float, channels-last) and given to every learner.
- ``validate``: logits, labels and keys of a model over validation batches (the one
  forward, ``bitmind.inference.forward_logits``).
- ``epoch_record`` and ``save_if_best``: the per-epoch history line and the best-epoch
  checkpoint with its validation logits.
- ``lr_at``, ``make_writer``, ``plot_curves``, ``log_epoch``: schedule and reporting.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bitmind.calibration import apply_calibration
from bitmind.checkpoint import model_meta, save_checkpoint
from bitmind.image_transforms import HISTORY_OUTPUTS
from bitmind.inference import forward_logits, forward_outputs, to_model_input
from bitmind.metrics import compute_metrics
from bitmind.training.adversary import ContentAdversary, average_gradients, ramp
from bitmind.training.config import TrainConfig

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- schedule and reporting
def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch``: linear warm-up, then step decay or cosine (to 1% of lr).

    ``warmup_epochs`` W means W epochs below the full lr, rising linearly: epoch e < W runs
    at ``lr * (e + 1) / (W + 1)`` and the full lr comes at epoch W, where the decay starts.
    Why not ``(e + 1) / W``: with the recipes' ``warmup_epochs: 1`` that put epoch 0 at the
    full lr already, so there was no warm-up at all. Both decays count their epochs from the
    end of the warm-up (a step decay counted from epoch 0 would cut the lr before it had
    ever reached full where ``warmup_epochs >= lr_decay_every``)."""
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / (cfg.warmup_epochs + 1)
    if cfg.lr_schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1)
        t = min(max(epoch - cfg.warmup_epochs, 0) / span, 1.0)
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t)))
    if cfg.lr_schedule != "step":
        raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r} (step | cosine)")
    return cfg.lr * (cfg.lr_decay ** (max(epoch - cfg.warmup_epochs, 0) // max(cfg.lr_decay_every, 1)))


def make_writer(run_dir: Path):
    """A TensorBoard writer for ``run_dir`` (tensorboardX, else torch's)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # pragma: no cover - the GPU image ships torch's writer only
        from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(logdir=str(run_dir)) if "tensorboardX" in SummaryWriter.__module__ else SummaryWriter(log_dir=str(run_dir))


def plot_curves(history: list[dict], path: Path) -> None:
    """curves.png beside the checkpoints (pyplot-free: never touches a notebook's backend)."""
    try:
        from bitmind.plots import plot_training_curves
    except ImportError:  # pragma: no cover - matplotlib missing
        return
    plot_training_curves(history).savefig(path, dpi=100)


def log_epoch(writer, rec: dict) -> None:
    """One epoch record as TensorBoard scalars at the epoch's index: ``val_*`` under ``val/``,
    the rest under ``epoch/``. Why not ``train/``: the trainer writes ``train/loss`` and
    ``train/lr`` per batch at the global step, and the epoch's ``lr`` written at the epoch
    index under the same tag made one zig-zag chart of two x-axes (steps 2, 4, 0, 6, ...)."""
    for k, v in rec.items():
        if k != "epoch" and v is not None and not isinstance(v, bool):
            writer.add_scalar(("val/" if k.startswith("val_") else "epoch/") + k.removeprefix("val_"), v, rec["epoch"])


def smooth_labels(y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Binary label smoothing: targets move towards 0.5 by ``label_smoothing``."""
    return y * (1 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else y


def _groups(loader, parts: int, complete_only: bool):
    """Consecutive loader batches, ``parts`` at a time (a shorter last group unless ``complete_only``)."""
    group = []
    for batch in loader:
        group.append(batch)
        if len(group) == parts:
            yield group
            group = []
    if group and not complete_only:
        yield group


def batches_per_epoch(loader: DataLoader, cfg: TrainConfig) -> int:
    """Training batches an epoch of ``loader`` gives (``epoch_batches``): its loader batches
    in groups of ``cfg.loader_batch`` parts (a short last group kept unless ``drop_last``),
    capped at ``cfg.max_steps_per_epoch``."""
    parts = cfg.loader_batch()[1]
    n = len(loader) // parts if loader.drop_last else -(-len(loader) // parts)
    return min(n, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else n


def epoch_batches(loader: DataLoader, cfg: TrainConfig, epoch: int, show: bool = True, unreadable: list | None = None):
    """The training batches of one epoch, each as the list of loader batches that make it
    (``cfg.loader_batch``: several parts built by different workers, or one; all-unreadable
    parts, None, left out; ``join_batches`` makes one batch of them): a tqdm bar when
    ``cfg.progress`` (and ``show``), capped at ``cfg.max_steps_per_epoch``. With the loader's
    ``drop_last`` a last group short of parts is dropped too, as a short last batch would be.

    ``unreadable[0]`` (if given) grows by the pictures of each part left out, a part's size
    each (a short last part, of a loader that keeps one, counts as whole: an epoch's last
    part on data smaller than a batch). A kept part carries its own count of unreadable
    pictures, but a part of nothing but unreadable pictures is None (``collate_skip_none``),
    so the epoch's "skipped N unreadable training images" missed those (4 said where 10 were
    skipped: operator audit)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    n_batches = batches_per_epoch(loader, cfg)
    part_size, parts = cfg.loader_batch()
    groups = _groups(loader, parts, complete_only=bool(loader.drop_last))
    it = tqdm(groups, total=n_batches, desc=f"epoch {epoch}", disable=not (show and cfg.progress), leave=False) if tqdm else groups
    for bi, group in enumerate(it):
        if cfg.max_steps_per_epoch and bi >= cfg.max_steps_per_epoch:
            break
        kept = [b for b in group if b is not None]
        if unreadable is not None:
            unreadable[0] += (len(group) - len(kept)) * part_size
        if kept:
            yield kept


def join_batches(group: list, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """One training batch from its loader parts (``epoch_batches``): images and labels on
    ``device`` (``prepare_batch``, each part copied from its pinned memory, joined there),
    item keys and the count of unreadable items. One part is passed through as it is."""
    prepared = [prepare_batch(g[0], g[1], device, channels_last) for g in group]
    keys, bad = [g[2] for g in group], sum(int(g[3]) for g in group)
    if len(group) == 1:
        return prepared[0][0], prepared[0][1], keys[0], bad
    x = torch.cat([p[0] for p in prepared])
    if channels_last and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.cat([p[1] for p in prepared]), torch.cat(keys), bad


#: Where a batch's processing-history targets ride in the context every learner of
#: ``train_one_epoch`` is given (beside distillation teachers' logits, keyed by their path).
HISTORY_KEY = "<processing history>"


def join_history(group: list) -> torch.Tensor | None:
    """The processing-history targets of a training batch's loader parts (``collate_skip_none``'s
    fifth item; CPU, in the order ``join_batches`` joins the images), or None when they carry none."""
    if any(len(g) < 5 for g in group):
        return None
    return group[0][4] if len(group) == 1 else torch.cat([g[4] for g in group])


# ---------------------------------------------------------------------------- training
class PooledFeatures:
    """A forward hook that keeps the output of the module it is on (the global pool) while that
    module trains, for ``Learner.compact_term``; nothing in evaluation. A holder of its own, not
    a method of the learner: a copy of the model (weight averaging's ``AveragedModel`` deep-copies
    it) copies its hooks, and a bound method dragged the whole learner (optimiser, TensorBoard
    writer, loader queues) into the copy, which failed; a copy of this one starts empty."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def __call__(self, module: nn.Module, _inputs, output: torch.Tensor) -> None:
        self.value = output if module.training else None

    def __deepcopy__(self, memo) -> "PooledFeatures":
        return PooledFeatures()


class Learner:
    """A model being trained: optimiser (Adam per ``cfg``), loss, gradient scaler (enabled
    for fp16 autocast, which underflows without one) and the running loss of the epoch.

    ``net`` is what runs forward (a DDP wrapper of ``model``, or ``model`` itself), compiled
    with ``cfg.compile``: it shares ``model``'s parameters, so the optimiser, validation,
    weight averages and checkpoints keep working on the plain ``model`` (no compiled-module
    key prefixes in saved files, no recompiling for validation's picture size)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, amp_dtype: torch.dtype | None,
                 criterion: nn.Module | None = None, net: nn.Module | None = None):
        net = net if net is not None else model
        if cfg.compile:
            net = torch.compile(net)
        self.model, self.net, self.cfg, self.amp_dtype = model, net, cfg, amp_dtype
        params = list(self.net.parameters())
        fused = bool(cfg.fused_adam) and bool(params) and all(p.is_cuda for p in params)
        self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, 0.999), weight_decay=cfg.weight_decay,
                                    **({"fused": True} if fused else {}))
        self.criterion = criterion if criterion is not None else nn.BCEWithLogitsLoss()
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.loss_sum: torch.Tensor | float = 0.0  # summed on the device: no host sync per step
        self.loss_n = 0
        self.aux_loss_sum: torch.Tensor | float = 0.0  # the auxiliary head's cross-entropy, apart (``aux_weight``)
        self.last_loss: torch.Tensor | None = None
        self.patch_size = check_patch_size(cfg.patch_size)
        self.tile = check_tile_shuffle(cfg.tile_shuffle, self.patch_size or None)
        self.patch_gen = torch.Generator().manual_seed(cfg.seed)  # patch offsets: their own stream
        self.tile_gen = torch.Generator().manual_seed(cfg.seed + 1)  # tile orders: another (patches stay as without)
        self.freq_prob, self.freq_ratio, self.freq_max = check_freq_mask(
            cfg.aug_freq_mask_prob, cfg.aug_freq_mask_ratio, cfg.aug_freq_mask_max_freq)
        self.freq_gen = torch.Generator().manual_seed(cfg.seed + 2)  # frequency masks: a third
        self.mix_prob, self.mix_area = check_cutmix(cfg.aug_cutmix_prob, cfg.aug_cutmix_area)
        self.mix_gen = torch.Generator().manual_seed(cfg.seed + 3)  # cross-class CutMix: a fourth
        self.compact_weight = float(cfg.real_compact_weight)
        self.real_centre: torch.Tensor | None = None  # real_compact_weight: the real photos' running mean features
        self.compact_loss_sum: torch.Tensor | float = 0.0
        self.pooled = PooledFeatures()
        self.adv_weight = float(cfg.adv_weight)
        if self.compact_weight or self.adv_weight:  # the pooled features the mean pool's classifier reads, caught on the way
            model.avgpool.register_forward_hook(self.pooled)
        self.adversary: ContentAdversary | None = None  # adv_weight: the content adversary (``set_content``)
        self.content_names: list[str] = []
        self.content_labels: torch.Tensor | None = None
        self.adv_scale = 0.0  # the reversal's strength this epoch (``begin_epoch``: adv_weight times the ramp)
        self.adv_loss_sum: torch.Tensor | float = 0.0  # the adversary's cross-entropy, apart, summed over its targets
        self.adv_n: torch.Tensor | float = 0.0  # how many real photos it was summed over
        self.partner: dict[int, int] | None = None  # pair_patches: round trip -> its real photo (``align_pairs``)
        self.aux_names: list[str] = []  # aux_weight: the head's classes and each training item's class (``set_aux``)
        self.aux_labels: torch.Tensor | None = None
        self.history_weight = float(cfg.history_weight)
        self.history_names: list[str] = list(HISTORY_OUTPUTS) if self.history_weight else []
        self.history_loss_sum: torch.Tensor | float = 0.0  # the processing-history head's loss, apart

    @property
    def mean_loss(self) -> float:
        """The epoch's mean detector loss: with an auxiliary head, without its term, so that
        arms with and without one compare on one curve."""
        return float(self.loss_sum) / max(self.loss_n, 1)

    @property
    def mean_aux_loss(self) -> float | None:
        """The epoch's mean auxiliary cross-entropy (unweighted), or None without the head."""
        return float(self.aux_loss_sum) / max(self.loss_n, 1) if self.aux_names else None

    @property
    def aux_record(self) -> dict:
        """What the training's extra terms add to an epoch's record: the auxiliary head's loss and
        the processing-history head's (``history_weight``) and the one-class term's
        (``real_compact_weight``), each apart and unweighted (nothing without them)."""
        rec = {"train_aux_loss": self.mean_aux_loss} if self.aux_names else {}
        if self.history_names:
            rec["train_history_loss"] = float(self.history_loss_sum) / max(self.loss_n, 1)
        if self.compact_weight:
            rec["train_compact_loss"] = float(self.compact_loss_sum) / max(self.loss_n, 1)
        if self.adversary is not None:  # per real photo; near log(kinds) when the features no longer tell them apart
            rec["train_adv_loss"] = float(self.adv_loss_sum) / max(float(self.adv_n), 1.0)
            rec["adv_scale"] = self.adv_scale
        return rec

    def compact_term(self, real: torch.Tensor) -> torch.Tensor:
        """The one-class term of the batch just run forward (``real_compact_weight``): the mean
        squared distance of each real photo's pooled features (rows where ``real`` is 1) from the
        real photos' running mean (momentum 0.9, detached), over the batch's whole spread (the
        mean squared distance of every row from the batch mean), so it reads as the share of
        the batch's variance the real photos take. The spread is not detached: then shrinking
        every feature alike changes nothing and only setting the real photos apart from the
        rest lowers the term. (Detached, its pull grew as the features shrank, and on the
        pools' faint traces it held all seven models of its LOGO arm at a detector loss of
        0.693 for 52 epochs: thirty-seventh session.) Why: a detector trained to tell
        known generators from photos learns where those generators lie; one whose real photos
        form one tight cluster calls whatever falls outside it generated, which is how one-class
        losses carried detectors to attacks they had never seen (OC-Softmax, Zhang et al., IEEE
        SPL 2021). Distances, not cosines: the pooled features follow a ReLU, so every pair of
        them is already close in angle. Weights instead of a boolean index: no host sync; a
        batch without real photos adds nothing and keeps the centre (before the first real photo
        the centre is unset, NaN, and the first batch with real photos sets it)."""
        f = self.pooled.value.flatten(1).float()[: len(real)]  # flip_mean: the unflipped views
        self.pooled.value = None
        w = real.float()
        n = w.sum()
        batch_mean = (f.detach() * w[:, None]).sum(0) / n.clamp(min=1.0)
        if self.real_centre is None:
            self.real_centre = torch.full_like(batch_mean, float("nan"))
        moved = torch.where(torch.isnan(self.real_centre), batch_mean, 0.9 * self.real_centre + 0.1 * batch_mean)
        self.real_centre = torch.where(n > 0, moved, self.real_centre)
        spread = ((f - f.mean(0)) ** 2).sum(1).mean().clamp(min=1e-8)
        centre = torch.nan_to_num(self.real_centre)  # still unset only where no row counts (w all 0)
        return (((f - centre) ** 2).sum(1) * w).sum() / n.clamp(min=1.0) / spread

    @property
    def aux_meta(self) -> dict:
        """What the heads add to a checkpoint's training options: the auxiliary head's classes and the
        processing-history head's outputs, in the order they follow the detector's logit (nothing
        without a head)."""
        meta = {"aux_classes": list(self.aux_names)} if self.aux_names else {}
        if self.history_names:
            meta["history_outputs"] = list(self.history_names)
        if self.adversary is not None:  # a record of what it was trained against; not outputs of the network
            meta["adv_classes"] = list(self.content_names)
        return meta

    def begin_epoch(self, epoch: int) -> float:
        """Set the epoch's learning rate, switch to training mode, reset the running loss."""
        lr = lr_at(self.cfg, epoch)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.net.train()
        self.loss_sum, self.loss_n, self.aux_loss_sum, self.compact_loss_sum = 0.0, 0, 0.0, 0.0
        self.history_loss_sum, self.adv_loss_sum, self.adv_n = 0.0, 0.0, 0.0
        if self.adversary is not None:  # a run of one epoch (a short fine-tune) gets it at full strength
            self.adversary.train()
            self.adv_scale = self.adv_weight * ramp(epoch / (self.cfg.epochs - 1) if self.cfg.epochs > 1 else 1.0)
        return lr

    def aux_term(self, logits: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's cross-entropy: over every picture, or with ``aux_fakes_only``
        over the generated ones alone (class 0, ``real``, is never a target: which generator made
        a picture is the head's question, whether one did the detector's). A batch without a
        generated picture then adds 0, not the NaN of a mean over nothing. Why: with real photos
        half of every batch, a head at weight 0.1 answers "real" for most generated pictures it
        knows (docs/Generalisation_record.md, "A finer auxiliary head"). ``train_aux_loss``
        weighs each batch's term by the batch's size, as without the option (batches are
        balanced by class, so about half of each is generated)."""
        if not self.cfg.aux_fakes_only:
            return F.cross_entropy(logits, aux)
        fake = (aux != 0).to(logits.dtype)
        per = F.cross_entropy(logits, aux, reduction="none")
        return (per * fake).sum() / fake.sum().clamp(min=1.0)

    def step(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None,
             aux: torch.Tensor | None = None, history: torch.Tensor | None = None,
             content: torch.Tensor | None = None) -> torch.Tensor:
        """One optimisation step on a prepared batch (``x`` on the device, float, laid out as
        it should run); ``target`` replaces the smoothed labels as the loss target if given;
        ``aux`` (each image's auxiliary class, on the device) adds ``cfg.aux_weight`` times the
        cross-entropy of the model's other outputs. With ``aug_cutmix_prob`` the batch is mixed
        across classes first (``mix_classes``: images, targets and auxiliary classes alike); with
        ``real_compact_weight`` the one-class term (``compact_term``) of the unmixed real photos
        is added; ``history`` (each image's processing-history targets, NaN where unknown, on the
        device) adds ``cfg.history_weight`` times the history head's loss (``history_term``);
        ``content`` (each image's real kind, -1 for a generated one) adds the content adversary's
        cross-entropy, its gradient reversed into the network (``adversary_term``)."""
        if target is None:
            target = smooth_labels(y, self.cfg.label_smoothing)
        mixed = None
        if self.mix_prob:
            x, target, aux, mixed = mix_classes(x, y, target, aux, self.aux_classes, self.mix_prob, self.mix_area,
                                                self.mix_gen)
        if history is not None and not self.history_names:
            history = None  # no head to tell it to
        if aux is None and history is None:
            logits = forward_logits(self.net, x, x.device, self.amp_dtype, channels_last=False)
            loss = detector_loss = self.criterion(logits, target)
        else:
            out = forward_outputs(self.net, x, x.device, self.amp_dtype, channels_last=False)
            loss = detector_loss = self.criterion(out[:, 0], target)
            if aux is not None:
                aux_loss = self.aux_term(out[:, 1:1 + self.aux_classes], aux)
                loss = loss + self.cfg.aux_weight * aux_loss
                self.aux_loss_sum = self.aux_loss_sum + aux_loss.detach() * len(y)
            if history is not None:
                first = 1 + self.aux_classes
                history_loss = history_term(out[:, first:first + len(self.history_names)], history)
                loss = loss + self.history_weight * history_loss
                self.history_loss_sum = self.history_loss_sum + history_loss.detach() * len(y)
        if self.adversary is not None and content is not None and self.pooled.value is not None:
            adv_loss = self.adversary_term(content)
            loss = loss + adv_loss
            known = (content >= 0).sum()
            self.adv_loss_sum = self.adv_loss_sum + adv_loss.detach() * known
            self.adv_n = self.adv_n + known
        if self.compact_weight and self.pooled.value is not None:
            real = (y < 0.5) if mixed is None else (y < 0.5) & ~mixed
            compact = self.compact_term(real)
            loss = loss + self.compact_weight * compact
            self.compact_loss_sum = self.compact_loss_sum + compact.detach() * len(y)
        self.pooled.value = None  # read by the terms above, if any; not kept past the step
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.adversary is not None:
            average_gradients(self.adversary)  # under DDP: one adversary on every rank, as the network is
        self.scaler.step(self.opt)
        self.scaler.update()
        loss = detector_loss.detach()
        self.loss_sum = self.loss_sum + loss * len(y)
        self.loss_n += len(y)
        self.last_loss = loss
        return loss

    def diverged(self) -> bool:
        """Whether the epoch just trained left the loss or the weights not finite numbers (a
        learning rate far too high). Asked once per epoch, one host sync (the loss is summed on
        the device, so a per-step check would cost a sync each step); with fp16's gradient
        scaler an inf loss is a step the scaler skipped, so only the weights count."""
        if not self.scaler.is_enabled() and not math.isfinite(self.mean_loss):
            return True
        return not bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all())

    def rng_state(self) -> dict[str, torch.Tensor]:
        """Where the patch-offset, tile-order, frequency-mask and CutMix streams are, and the one-class
        term's running real centre: saved with a resumable state, so a resumed run goes on with new
        patches instead of repeating the first epochs' draws."""
        state = {"patch_rng": self.patch_gen.get_state(), "tile_rng": self.tile_gen.get_state(),
                 "freq_rng": self.freq_gen.get_state(), "mix_rng": self.mix_gen.get_state()}
        if self.real_centre is not None:  # real_compact_weight: the running centre goes on where it was
            state["real_centre"] = self.real_centre.detach().cpu()
        if self.adversary is not None:  # adv_weight: a resumed run goes on against the same adversary
            state["adversary_weight"] = self.adversary.head.weight.detach().cpu()
            state["adversary_bias"] = self.adversary.head.bias.detach().cpu()
            state["adversary_classes"] = json.dumps(self.content_names)
        return state

    def check_resumable(self, state: dict) -> None:
        """Refuse a saved state whose content adversary is not this learner's: called before the
        optimiser's state is loaded (its groups follow the adversary). A resume may change
        ``--train_data``; a head whose rows named other real kinds would be reused for these
        (or the optimiser refuse with a bare "different number of parameter groups")."""
        saved = json.loads(state["adversary_classes"]) if "adversary_classes" in state else None
        mine = list(self.content_names) if self.adversary is not None else None
        if saved != mine:
            raise ValueError(f"the saved state's content adversary names the real kinds {saved or 'none'}, this "
                             f"run's training set gives {mine or 'none'} (--adv_weight needs two or more): resume with "
                             "the data it was trained on, or start a new run from its weights (--init_from)")

    def load_rng_state(self, state: dict) -> None:
        """Restore ``rng_state`` (a state saved before it existed keeps the seeded streams); its
        content adversary is the one ``check_resumable`` passed before the optimiser was loaded."""
        if "patch_rng" in state:
            self.patch_gen.set_state(state["patch_rng"])
        if "tile_rng" in state:
            self.tile_gen.set_state(state["tile_rng"])
        if "freq_rng" in state:
            self.freq_gen.set_state(state["freq_rng"])
        if "mix_rng" in state:
            self.mix_gen.set_state(state["mix_rng"])
        if self.compact_weight and state.get("real_centre") is not None:
            self.real_centre = state["real_centre"].to(next(self.model.parameters()).device)
        if self.adversary is not None and state.get("adversary_weight") is not None:  # checked: ``check_resumable``
            with torch.no_grad():
                self.adversary.head.weight.copy_(state["adversary_weight"])
                self.adversary.head.bias.copy_(state["adversary_bias"])

    @property
    def aux_classes(self) -> int:
        """How many auxiliary classes the head tells apart (0 without it)."""
        return len(self.aux_names)

    def set_aux(self, names: Sequence[str], labels: Sequence[int]) -> None:
        """``aux_weight``: the head's classes and the class of every training item, by dataset
        index (``bitmind.data.families.aux_classes``); the labels stay on the CPU, where the
        batches' keys are. Ignored without ``aux_weight``."""
        if self.cfg.aux_weight and names:
            self.aux_names, self.aux_labels = list(names), torch.as_tensor(labels, dtype=torch.long)

    def set_content(self, names: Sequence[str], labels: Sequence[int]) -> None:
        """``adv_weight``: the real kinds the content adversary names and each training item's kind
        by dataset index (``bitmind.data.families.content_classes``; -1 for a generated picture).
        Builds the adversary (on the model's device, seeded from ``cfg.seed``) and gives its
        weights to the optimiser; with fewer than two kinds there is nothing to tell apart and
        the run trains without it (a warning says so). Ignored without ``adv_weight``; called
        before a resumed state is loaded (the optimiser's groups must match)."""
        if not self.adv_weight:
            return
        if len(names) < 2:
            logger.warning("--adv_weight %s: the training set has %d real kind(s) (%s); the content adversary needs "
                           "two or more to tell apart, so this run trains without it", self.adv_weight, len(names),
                           ", ".join(names) or "none")
            return
        device = next(self.model.parameters()).device
        self.adversary = ContentAdversary(self.model.fc1.in_features, len(names), seed=self.cfg.seed + 4).to(device)
        self.content_names = list(names)
        self.content_labels = torch.as_tensor(labels, dtype=torch.long)
        self.opt.add_param_group({"params": list(self.adversary.parameters())})

    def content_for(self, k: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        """The real kinds of the items with keys ``k``, on ``device`` (None without the adversary)."""
        if self.content_labels is None or k is None:
            return None
        return to_device_async(self.content_labels[k], device)

    def adversary_term(self, content: torch.Tensor) -> torch.Tensor:
        """The content adversary's cross-entropy on the batch just run forward (its pooled
        features, the unflipped views with ``flip_mean``), its gradient into the network reversed
        and scaled by this epoch's ``adv_scale`` (``bitmind.training.adversary``)."""
        f = self.pooled.value.flatten(1)[: len(content)]
        return self.adversary.term(f, content, self.adv_scale)

    def aux_for(self, k: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        """The auxiliary classes of the items with keys ``k``, on ``device`` (None when off)."""
        if self.aux_labels is None or k is None:
            return None
        return to_device_async(self.aux_labels[k], device)

    def align_pairs(self, partner: dict[int, int]) -> None:
        """``pair_patches``: crop an aligned round trip and its real photo (``partner``: the
        dataset's item -> partner map, ``DetectionDataset.pair_with``) at the same place."""
        self.partner = dict(partner) if self.cfg.pair_patches else None

    def follows_partner(self, k: torch.Tensor | None) -> torch.Tensor | None:
        """Which rows of a batch with item keys ``k`` are the real partner of the row before
        them (the sampler puts a round trip's photo right after it); None if none is."""
        if not self.partner or k is None or len(k) < 2:
            return None
        ks = k.tolist()
        follow = [False] + [self.partner.get(a) == b for a, b in zip(ks, ks[1:])]
        return torch.tensor(follow) if any(follow) else None

    def crop(self, x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        """Patch training: one random ``patch_size`` square per image at an even offset (on the
        NPR's 2 x 2 grid, ``random_patches``; the whole image when 0 or when the images are
        not larger), its tiles shuffled if ``tile_shuffle``, part of its spectrum masked if
        ``aug_freq_mask_prob``; with ``pair_patches`` and the batch's keys ``k``, a real photo
        right after its round trip gets the round trip's square, tile order and mask."""
        follow = self.follows_partner(k)
        if self.patch_size and self.patch_size < min(x.shape[-2:]):
            x = random_patches(x, self.patch_size, self.patch_gen, follow)
        if self.tile:
            x = shuffle_tiles(x, check_tile_shuffle(self.tile, *x.shape[-2:]), self.tile_gen, follow)
        if self.freq_prob:
            x = mask_frequencies(x, self.freq_prob, self.freq_ratio, self.freq_gen, follow, self.freq_max)
        return x

    def history_for(self, history: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        """A batch's processing-history targets (CPU, from the loader) on ``device``; None without the head."""
        if history is None or not self.history_names:
            return None
        return to_device_async(history, device)

    def train_batch(self, x: torch.Tensor, y: torch.Tensor, k: torch.Tensor, context: dict) -> None:
        """Train on one shared batch (sweep variants override this to take their part of it)."""
        self.step(self.crop(x, k), y, aux=self.aux_for(k, x.device),
                  history=self.history_for(context.get(HISTORY_KEY), x.device), content=self.content_for(k, x.device))


def history_term(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The processing-history head's loss: the Huber loss (smooth L1) of its outputs ``pred`` against
    ``target`` (B, len(HISTORY_OUTPUTS)), averaged over the known targets (NaN ones, of pictures whose
    history is not known, left out; 0 when none is known). Why: the family head was the one change
    that lifted held-out GANs on two seeds (a second task that needs how a picture was made); this
    one can only be answered from how pixels were resampled and compressed, for real and generated
    pictures alike, never from what they show (in the spirit of Huh et al., ECCV 2018, who learnt
    splice detection from EXIF self-consistency). Boolean weights, not an index: no host sync."""
    known = torch.isfinite(target)
    err = F.smooth_l1_loss(pred.float(), torch.nan_to_num(target.float()), reduction="none")
    return (err * known).sum() / known.sum().clamp(min=1)


#: The smallest training patch: with the stem pool, 16 px reach the last layer as a 2x2 map.
MIN_PATCH = 16


def check_patch_size(size: int, image_size: int | None = None) -> int:
    """``size`` if it is a usable patch side (0 = the whole image), else a ValueError."""
    size = int(size or 0)
    top = image_size if image_size else float("inf")
    if size and not MIN_PATCH <= size <= top:
        raise ValueError(f"patch_size must be 0 (whole image) or in [{MIN_PATCH}, {image_size or 'the image side'}], got {size}")
    if size % 2:  # an odd side puts the patch's own 2 x 2 residual grid off the served picture's
        raise ValueError(f"patch_size must be even (the NPR residual's 2 x 2 grid), got {size}")
    return size


def to_device_async(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor (patch offsets, tile orders, row indices) on ``device`` without
    waiting for the device: a plain ``.to("cuda")`` of pageable memory synchronises the
    stream, so every call in a training step drained the GPU's queue and left it idle while
    Python issued the next kernels (several times per model and batch in a sweep). Pinned
    and copied non-blocking, the copy is queued behind the work already issued; the values
    are the same."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _from_previous(follow: torch.Tensor | None, b: int) -> torch.Tensor | None:
    """Row indices where each row marked in ``follow`` takes the row before it (None: none)."""
    return None if follow is None else torch.arange(b) - follow.long()


def random_patches(x: torch.Tensor, size: int, generator: torch.Generator | None = None,
                   follow: torch.Tensor | None = None) -> torch.Tensor:
    """One random ``size`` x ``size`` crop of each image of a (B, C, H, W) batch, at its own
    offset (rows marked in ``follow``: at the offset of the row before them). Why: a network
    trained on small patches sees too little of a picture to tell what it shows (a face, a
    painting), so it has to use how the pixels were made; served on the whole image, its
    global average pool averages the patch evidence.

    Offsets are even (any even one that fits, ``H - size`` odd or not): the NPR residual
    works on a fixed 2 x 2 grid, and served pictures are seen from offset 0, so a patch
    from an even offset has the residual of those pixels in the whole picture, while one
    from an odd offset would teach the network blocks that straddle the served grid (as
    ``center_square`` and ``check_tile_shuffle``, which keep to the grid too)."""
    b, c, h, w = x.shape
    oy = 2 * torch.randint(0, (h - size) // 2 + 1, (b,), generator=generator)
    ox = 2 * torch.randint(0, (w - size) // 2 + 1, (b,), generator=generator)
    idx = _from_previous(follow, b)
    if idx is not None:
        oy, ox = oy[idx], ox[idx]
    oy, ox = to_device_async(oy, x.device), to_device_async(ox, x.device)
    ar = torch.arange(size, device=x.device)
    rows = (oy[:, None] + ar)[:, None, :, None].expand(b, c, size, w)
    out = torch.gather(x, 2, rows)
    cols = (ox[:, None] + ar)[:, None, None, :].expand(b, c, size, size)
    out = torch.gather(out, 3, cols)
    return _layout_like(out, x)


def _layout_like(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` channels-last where the batch ``x`` it was cut from is (on CUDA), as it came otherwise."""
    return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) and x.is_cuda else out


def check_cutmix(prob: float, area: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """``(prob, (lo, hi))`` if they are a usable ``aug_cutmix_prob`` / ``aug_cutmix_area`` (a
    probability; two area shares, lo <= hi, within (0, 1)), else a ValueError naming the option."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"aug_cutmix_prob must be a probability in [0, 1], got {prob}")
    area = list(area)
    if len(area) != 2 or not 0.0 < area[0] <= area[1] < 1.0:
        raise ValueError(f"aug_cutmix_area takes two area shares, min max, with 0 < min <= max < 1, got {area}")
    return float(prob), (float(area[0]), float(area[1]))


def mix_classes(x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, aux: torch.Tensor | None, n_aux: int,
                prob: float, area: tuple[float, float], generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """CutMix across classes: with probability ``prob`` each image of a (B, C, H, W) batch takes,
    in a random rectangle of ``area`` (a share of the image, drawn in that range, height to
    width between 1:2 and 2:1; sides and offset even, on the NPR's 2 x 2 grid, so the share is
    met to that rounding, and never the whole image), the pixels at the same place of a random image of
    the other class (``y``: 0 real, 1 generated). Its ``target`` becomes the area-weighted mix
    of the two targets, and its auxiliary class (``aux``, indices among ``n_aux``) the same
    mix of the two classes as probabilities. Images with no partner of the other class stay as
    they are. Returns the images, targets, auxiliary targets (probabilities when given) and
    which rows were mixed (bool, on the device).

    Why: a detector whose label follows what the picture shows (faces real, art generated)
    cannot fit these labels, whose share of 'generated' is the share of the area a generator
    made; it has to read the evidence where it lies, pixel by pixel. Both directions are
    mixed, so the seam itself says nothing about the label. The random draws come from
    ``generator`` on the CPU; nothing here waits for the device."""
    b, _, h, w = x.shape
    dev = x.device
    scores = to_device_async(torch.rand(b, b, generator=generator), dev)  # a random partner of the other
    partner = scores.masked_fill(y[:, None] == y[None, :], -1.0).argmax(1)  # class (none: the row checks below)
    share = torch.empty(b).uniform_(area[0], area[1], generator=generator)
    # height:width between 1:2 and 2:1, and never beyond what keeps both sides within the image
    # (a side clamped to the image shrank the area below the range asked for)
    lo, hi = torch.log(share.clamp(min=0.5)), torch.log((1.0 / share).clamp(max=2.0))
    aspect = torch.exp(lo + (hi - lo) * torch.rand(b, generator=generator))
    bh = (2 * torch.round(torch.sqrt(share * aspect) * h / 2)).clamp(2, h - h % 2).long()
    bw = (2 * torch.round(torch.sqrt(share / aspect) * w / 2)).clamp(2, w - w % 2).long()
    bh = torch.where((bh >= h) & (bw >= w), bh - 2, bh).clamp(min=2)  # rounded up to the whole image: one row pair less
    oy = 2 * (torch.rand(b, generator=generator) * ((h - bh) // 2 + 1)).long()
    ox = 2 * (torch.rand(b, generator=generator) * ((w - bw) // 2 + 1)).long()
    draw = torch.rand(b, generator=generator) < prob
    bh, bw, oy, ox, draw = (to_device_async(t, dev) for t in (bh, bw, oy, ox, draw))
    mixed = draw & (y != y[partner])
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    inside = (((rows[None, :] >= oy[:, None]) & (rows[None, :] < (oy + bh)[:, None]))[:, :, None]
              & ((cols[None, :] >= ox[:, None]) & (cols[None, :] < (ox + bw)[:, None]))[:, None, :])
    inside = inside & mixed[:, None, None]
    out = torch.where(inside[:, None], x[partner], x)
    a = (bh * bw).float() / float(h * w) * mixed.float()
    mixed_target = (1.0 - a) * target + a * target[partner]
    if aux is not None:
        own = F.one_hot(aux, n_aux).float() if aux.dim() == 1 else aux.float()
        aux = (1.0 - a)[:, None] * own + a[:, None] * own[partner]
    return _layout_like(out, x), mixed_target, aux, mixed


def check_freq_mask(prob: float, ratio: float, max_freq: float = 0.0) -> tuple[float, float, float]:
    """``(prob, ratio, max_freq)`` if they are a usable ``aug_freq_mask_prob`` /
    ``aug_freq_mask_ratio`` / ``aug_freq_mask_max_freq`` (a probability, a share of the
    spectrum below 1, a radius of at least 0: 0 for no limit), else a ValueError naming
    the option."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"aug_freq_mask_prob must be a probability in [0, 1], got {prob}")
    if prob and not 0.0 < ratio < 1.0:
        raise ValueError(f"aug_freq_mask_ratio must be a share of the spectrum in (0, 1), got {ratio}")
    if not (max_freq >= 0.0 and math.isfinite(max_freq)):
        raise ValueError(f"aug_freq_mask_max_freq must be 0 (the whole spectrum) or a radius above 0, as a share of "
                         f"the Nyquist frequency (the corners of the spectrum lie at 1.41), got {max_freq}")
    return float(prob), float(ratio), float(max_freq)


def _radius(h: int, w: int, device) -> torch.Tensor:
    """(h, w // 2 + 1) radius of each coefficient of a half spectrum (``rfft2``), as a share of
    the Nyquist frequency along an axis (1 at (h/2, 0) and at (0, w/2); up to sqrt 2 in the corner)."""
    fy = torch.fft.fftfreq(h, device=device).abs() / 0.5
    fx = torch.fft.rfftfreq(w, device=device) / 0.5
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def mask_frequencies(x: torch.Tensor, prob: float, ratio: float, generator: torch.Generator | None = None,
                     follow: torch.Tensor | None = None, max_freq: float = 0.0) -> torch.Tensor:
    """Zero a random ``ratio`` of the 2-D Fourier coefficients of each image of a (B, C, H, W)
    batch with probability ``prob`` (the same coefficients in every channel; the mean, the
    DC term, kept), the others unchanged (rows marked in ``follow``: the mask, or no mask, of
    the row before them). Why: a detector that leans on one generator's spectral peak or
    band fails on a generator without it; with random bands missing from training pictures
    it has to read traces spread over the spectrum (frequency masking, Doloriel and Cheung,
    ICASSP 2024, where a 15 % random spectral mask helped most on unseen generators).
    ``max_freq`` above 0: only coefficients within that radius (a share of the Nyquist
    frequency along an axis; the corners of the spectrum lie at sqrt 2, so from there on it is
    the whole spectrum, as with 0) are ever masked, the high frequencies where up-sampling traces live never
    (masking over the whole spectrum lost by LOGO: docs/Generalisation_record.md, "Frequency
    masking"); ``ratio`` is then the share of those coefficients.
    Training only; the real FFT keeps the result real, computed in float32."""
    b, c, h, w = x.shape
    chosen = torch.rand(b, generator=generator) < prob
    idx = _from_previous(follow, b)
    if idx is not None:
        chosen = chosen[idx]
    if not bool(chosen.any()):  # on the CPU: no device sync
        return x
    # the masks are drawn where the batch is, from a seed the CPU stream gives (a million
    # draws a batch on the CPU, per variant of a sweep, cost seconds an epoch)
    on_device = torch.Generator(device=x.device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    keep = torch.rand(b, 1, h, w // 2 + 1, device=x.device, generator=on_device) >= ratio
    if 0.0 < max_freq < math.sqrt(2.0):
        keep |= _radius(h, w, x.device) > max_freq  # (a function of |frequency|: Hermitian pairs alike)
    if idx is not None:
        keep = keep[to_device_async(idx, x.device)]
    # columns 0 (and w/2 for an even w) of the half spectrum are their own conjugates, row k
    # pairing with row h - k: one mask for each pair keeps the spectrum Hermitian (cuFFT's
    # inverse of a non-Hermitian one is undefined; the CPU's halves the coefficient)
    rows = torch.arange(h, device=x.device)
    pair = torch.minimum(rows, (-rows) % h)
    for col in ((0, w // 2) if w % 2 == 0 else (0,)):
        keep[..., col] = keep[..., pair, col]
    keep[:, :, 0, 0] = True
    chosen_here = to_device_async(chosen, x.device).view(b, 1, 1, 1)
    spec = torch.fft.rfft2(x.float(), norm="ortho") * (keep | ~chosen_here)  # not a boolean index: that waits for the device
    out = torch.where(chosen_here, torch.fft.irfft2(spec, s=(h, w), norm="ortho").to(x.dtype), x)  # the others exactly as they were
    return _layout_like(out, x)


#: The smallest shuffled tile: smaller ones are mostly seams.
MIN_TILE = 8


def check_tile_shuffle(tile: int, *sides: int | None) -> int:
    """``tile`` if it is a usable ``tile_shuffle`` (0 = off) for images of these sides (None:
    not known yet), else a ValueError. Even, so every tile starts on the NPR's 2 x 2 grid and
    the residual of a tile is the residual of those pixels in the original."""
    tile = int(tile or 0)
    if not tile:
        return 0
    if tile < MIN_TILE or tile % 2:
        raise ValueError(f"tile_shuffle must be 0 (off) or an even side >= {MIN_TILE}, got {tile}")
    for side in sides:
        if side is not None and (side % tile or side == tile):
            raise ValueError(f"tile_shuffle {tile} must divide the training image side {side} into two or more tiles")
    return tile


def shuffle_tiles(x: torch.Tensor, tile: int, generator: torch.Generator | None = None,
                  follow: torch.Tensor | None = None) -> torch.Tensor:
    """Each image of a (B, C, H, W) batch cut into ``tile`` x ``tile`` squares put back in
    its own random order (rows marked in ``follow``: in the order of the row before them). Why: what a picture shows lives in how its parts are laid out (a
    face, a street, a composition), how it was made lives in every small part (up-sampling,
    decoder and sensor traces); shuffled, only the second still tells the classes apart.
    ``tile`` must divide H and W (``check_tile_shuffle``)."""
    b, c, h, w = x.shape
    nh, nw = h // tile, w // tile
    tiles = x.reshape(b, c, nh, tile, nw, tile).permute(0, 2, 4, 1, 3, 5).reshape(b, nh * nw, c, tile, tile)
    order = torch.argsort(torch.rand(b, nh * nw, generator=generator), dim=1)
    idx = _from_previous(follow, b)
    order = to_device_async(order if idx is None else order[idx], x.device)
    tiles = torch.gather(tiles, 1, order[:, :, None, None, None].expand_as(tiles))
    out = tiles.reshape(b, nh, nw, c, tile, tile).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
    return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) and x.is_cuda else out.contiguous()


def prepare_batch(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch on ``device``: float images in [0, 1] (channels-last if asked), float labels."""
    x = to_model_input(x, device)
    if channels_last and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def train_one_epoch(learners: Sequence[Learner], loader: DataLoader, cfg: TrainConfig, epoch: int, device: torch.device,
                    show: bool = True, context: Callable[[torch.Tensor], dict] | None = None,
                    on_step: Callable[[], None] | None = None) -> dict:
    """One epoch over ``loader``: each batch is prepared once and given to every learner
    (``Learner.train_batch``). ``context(x)`` computes what all learners share for a batch
    (distillation teachers' logits); ``on_step`` runs after each batch. Returns the
    images and unreadable images seen and the seconds taken."""
    t0, images, skipped, lost = time.time(), 0, 0, [0]
    for group in epoch_batches(loader, cfg, epoch, show=show, unreadable=lost):
        x, y, k, bad = join_batches(group, device, cfg.channels_last)
        skipped += bad
        ctx = context(x) if context is not None else {}
        history = join_history(group)
        if history is not None:
            ctx = {**ctx, HISTORY_KEY: history}
        for learner in learners:
            learner.train_batch(x, y, k, ctx)
        images += len(y)
        if on_step is not None:
            on_step()
    return {"images": images, "skipped": skipped + lost[0], "seconds": time.time() - t0}


# ---------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: nn.Module, batches: Iterable, device: torch.device, amp_dtype: torch.dtype | None,
             channels_last: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, labels and keys of ``model`` (in eval mode) over ``batches`` of
    ``(x, y, keys, n_bad)`` (a validation loader, pre-drawn challenges, or what ``bitmind.eval``
    scores); None batches skipped. ``channels_last`` as ``forward_logits`` takes it (None: on CUDA)."""
    model.eval()
    logits, labels, keys = [], [], []
    for batch in batches:
        if batch is None:
            continue
        x, y, k, _ = batch
        logits.append(forward_logits(model, x, device, amp_dtype, channels_last=channels_last).cpu())
        labels.append(torch.as_tensor(y))
        keys.append(torch.as_tensor(k))
    if not logits:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=int)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy(), torch.cat(keys).numpy()


def epoch_record(epoch: int, train_loss: float, lr: float, m: dict, epoch_seconds: float, **extra) -> dict:
    """One line of ``history.json``: training loss and the validation metrics ``m``, with the
    balanced accuracy that picks the best epoch (``selection_score``) beside plain accuracy:
    the log, history, curves and TensorBoard showed plain accuracy alone, so the epoch saved
    as best could look worse than another."""
    return {"epoch": epoch, "train_loss": train_loss, "lr": lr, "val_acc": m.get("accuracy"),
            "val_balanced_acc": balanced_accuracy(m), "val_ap": m.get("ap"),
            "val_real_acc": m.get("real_accuracy"), "val_fake_acc": m.get("fake_accuracy"), "val_brier": m.get("brier"),
            "epoch_seconds": epoch_seconds, **extra}


def val_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Metrics of uncalibrated validation logits (empty without images)."""
    return compute_metrics(labels, apply_calibration(logits)) if len(labels) else {}


def balanced_accuracy(m: dict) -> float | None:
    """The mean of real and fake accuracy of metrics ``m``; None unless both classes are present."""
    if m.get("real_accuracy") is None or m.get("fake_accuracy") is None:
        return None
    return 0.5 * (m["real_accuracy"] + m["fake_accuracy"])


def selection_score(m: dict) -> float:
    """What picks a variant's best epoch: balanced accuracy (the mean of real and fake
    accuracy) when both classes are present, so a validation set with more fakes than
    reals cannot crown a model that calls everything fake; plain accuracy otherwise."""
    if (balanced := balanced_accuracy(m)) is not None:
        return balanced
    return m.get("accuracy") if m.get("accuracy") is not None else -1.0  # no validation picture read: never the best


@dataclass
class Best:
    """The best epoch so far: its selection score, record and the epochs since it."""

    score: float = -1.0
    record: dict = field(default_factory=dict)
    bad_epochs: int = 0


def save_if_best(best: Best, score: float, epoch: int, m: dict, model: nn.Module, arch: str, run_dir: Path, meta_extra: dict,
                 logits: np.ndarray, labels: np.ndarray, val_mask: np.ndarray | None = None) -> bool:
    """If ``score`` beats ``best``, make this epoch the best: ``model_epoch_best.pth`` (with
    ``meta_extra`` in its metadata), ``val_logits_best.npy`` (logits and labels, what the
    calibration is fitted on) and ``val_mask.npy`` if given. Returns whether it did."""
    if score <= best.score:
        best.bad_epochs += 1
        return False
    best.score, best.bad_epochs = score, 0
    best.record = {"epoch": epoch, **{k: v for k, v in m.items() if k != "per_source"}}
    save_checkpoint(model, run_dir / "model_epoch_best.pth", model_meta(model, arch, **meta_extra))
    np.save(run_dir / "val_logits_best.npy", np.stack([logits, labels]))
    if val_mask is not None:
        np.save(run_dir / "val_mask.npy", val_mask)
    return True
