"""The NPR training loop: single process (CPU or one GPU) or ``torchrun`` (DDP).

Writes to ``<checkpoints_dir>/<name>/``:
  ``model_epoch_best.pth`` (best validation accuracy; loadable by the miner as is),
  ``model_last.pth``, ``state_last.pt`` (resumable: weights, optimiser, scheduler, epoch, sampler, patch and tile streams),
  ``opt.json`` (resolved options), ``history.json`` (per-epoch metrics),
  ``curves.png`` and TensorBoard event files (tensorboardX).
Only rank 0 logs and writes.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from bitmind.calibration import MIN_PER_CLASS, CalibrationDataError, calibrate_logits, store_calibration, too_few_to_calibrate
from bitmind.checkpoint import RUN_STATE_KEYS, model_meta, save_checkpoint
from bitmind.common import atomic_write, resolve_amp, resolve_device
from bitmind.data import (
    AsIs,
    DetectionDataset,
    FamilySampler,
    FlipOnly,
    aligned_partners,
    balanced_sampler,
    class_pos_weight,
    collate_skip_none,
    open_source,
    split_indices,
    unique_roots,
)
from bitmind.data.dataset import worker_init
from bitmind.data.families import aux_classes, class_family_shares, content_classes, parse_family_share, sampling_family
from bitmind.image_transforms import HISTORY_OUTPUTS, TrainAugment, ValidatorPipeline
from bitmind.models import build_model
from bitmind.shutdown import GracefulStop, sigterm_as_interrupt, stop_label, stop_name, stop_reason
from bitmind.training.config import TrainConfig
from bitmind.training.init_from import init_weights, load_weights, read_init_from
from bitmind.training.run_folder import (INIT_CALIBRATION, EarlierRun, RunFolderError, check_resume_matches, hold_run_folder,
                                         prepare_run_folder, recover_earlier_run, write_options)
from bitmind.training.loop import (
    Best,
    Learner,
    batches_per_epoch,
    epoch_record,
    log_epoch,
    make_writer,
    plot_curves,
    save_if_best,
    selection_score,
    train_one_epoch,
    val_metrics,
    validate,
)

logger = logging.getLogger(__name__)


def show(msg: str, level: int = logging.INFO) -> None:
    """A line a person watches a run by (the sets, each epoch, why it stopped): logged, and
    printed as well only where logging would not show it (no handler, or INFO off: a notebook,
    a library call). Before, it was printed and logged both, so the command line, which
    configures logging, showed every epoch twice."""
    logger.log(level, msg)
    if not (logger.isEnabledFor(level) and logger.hasHandlers()):
        print(msg, flush=True)


class RunWriteError(OSError):
    """The run folder could not be written during the run (a full disk, a lost mount): not a
    usage error (exit status 1), reported in one line (``writing``)."""


#: Words of torch's RuntimeError when its file writer fails (a full disk): "[enforce fail at
#: inline_container.cc:...] unexpected pos", "PytorchStreamWriter failed writing file ...".
_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "unexpected pos", "No space left")


@contextlib.contextmanager
def writing(run_dir: Path, when: str, earlier: EarlierRun | None = None):
    """Run the block that writes ``run_dir``'s files; an ``OSError`` or torch's ``RuntimeError``
    of a failed write becomes a ``RunWriteError`` in one line: what failed, the free space,
    what is kept and how to go on. Why: a full disk stopped a run with torch's
    "[enforce fail at inline_container.cc] unexpected pos" traceback, hours in, saying nothing
    of the space or of the files (each checkpoint and the state are written whole or not at
    all, ``atomic_write``, so the last saved epoch is intact and resumable). ``earlier``: an
    ``--overwrite`` run's earlier files, put back as the error leaves the run (``EarlierRun``)."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if not isinstance(e, OSError) and not any(w in str(e) for w in _WRITE_FAILURES):
            raise  # a RuntimeError that is not a failed write (torch's file writer) stays what it is
        try:
            free = f"{shutil.disk_usage(run_dir).free / 2**20:.1f} MiB free there"
        except OSError:
            free = "free space unknown"
        reason = _cause(e) or type(e).__name__
        if earlier is not None and earlier.pending:  # its files go back as the error leaves ``train``
            go_on = ("stopped before this run saved an epoch; the earlier run's files are put back (--overwrite): free "
                     "some space and run the command again with --overwrite")
        elif (run_dir / "state_last.pt").exists():
            go_on = ("stopped; every file it holds is whole (checkpoints and state of the last epoch saved): free some "
                     "space, then the same command with --resume goes on from there")
        elif (run_dir / "model_epoch_best.pth").exists():  # written first: a whole file, but never calibrated
            go_on = ("stopped before a resumable state was saved; its model_epoch_best.pth is uncalibrated (do not serve "
                     "it): free some space (the state holds the weights and the optimiser's two moments, about 3x the "
                     "model file) and run the command again with --overwrite")
        else:
            go_on = "stopped before any epoch was saved: free some space and run the command again with --overwrite"
        raise RunWriteError(f"{when}: cannot write to {run_dir} ({type(e).__name__}: {reason}; {free}): {go_on}") from None


def _cause(e: BaseException, limit: int = 200) -> str:
    """An exception's message for a one-line error: its first line, cut at the end of a sentence
    within ``limit`` characters where it is longer (torch's zip reader appends a paragraph of
    advice that was cut mid-sentence: "... that your checkpoint file is)")."""
    text = (str(e).strip().splitlines() or [""])[0]
    if len(text) <= limit:
        return text
    end = text.rfind(". ", 0, limit)
    return text[:end + 1] if end > 0 else text[:limit].rstrip() + "..."


class TrainingDataError(ValueError):
    """Training data no run can learn from (a missing or empty root, one class only, no
    validation pictures): a usage error, reported before the first epoch."""


# ---------------------------------------------------------------------------- setup
def _dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment, or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_datasets(cfg: TrainConfig, history: bool = False) -> tuple[DetectionDataset, DetectionDataset, dict]:
    """Training and validation sets of ``cfg``: every root of ``data`` and ``challenge_data``
    split by stem; ``train_data`` adds its train split only. With ``history`` the training items
    carry their processing history (``DetectionDataset.history``: a processing-history head,
    ``history_weight``, is trained on them).

    Augmentation is per source: crop pools get the training augmentation (and the
    validator pipeline for validation); ``challenge_data`` roots, which already are what a
    validator sends, get flips only in training and are validated as they are. With
    ``pair_aligned`` a round trip takes its photo's augmentation and draws in validation as
    the sampler makes it do in training."""
    fractions = (1.0 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    train_parts, val_parts, counts = [], [], {}
    train_aug_for, val_aug_for = {}, {}
    roots = unique_roots(list(cfg.data) + list(cfg.challenge_data))  # a root given twice would count twice
    for spec in roots:
        src = _open(spec, cfg)
        idx = split_indices(src, cfg.split_seed, fractions)
        train_parts.append((src, idx["train"]))
        val_parts.append((src, idx["val"]))
        counts[spec] = {k: len(v) for k, v in idx.items()}
        if spec in cfg.challenge_data:
            train_aug_for[src], val_aug_for[src] = FlipOnly(), AsIs()
    for spec in unique_roots(roots + list(cfg.train_data))[len(roots):]:
        src = _open(spec, cfg)
        idx = split_indices(src, cfg.split_seed, fractions)  # same stems -> same split: no leakage
        train_parts.append((src, idx["train"]))
        counts[spec] = {"train": len(idx["train"]), "dropped_val_test": len(idx["val"]) + len(idx["test"])}
    if not train_parts:
        raise TrainingDataError("no training data: pass --data DIR (a CLASS/SOURCE/*.jpg folder or hf:NAME:role)")
    train = DetectionDataset.from_sources(train_parts, augment=TrainAugment(cfg.aug_config()), seed=cfg.seed,
                                          uint8=cfg.uint8_loading, augment_for=train_aug_for, history=history)
    # Validation challenges: one fixed RNG per image (epoch stays 0), the same ones that
    # ``python -m bitmind.eval --split val --challenge --seed <seed>`` draws.
    val = DetectionDataset.from_sources(val_parts, augment=ValidatorPipeline() if cfg.val_challenge else None,
                                        seed=cfg.seed, uint8=cfg.uint8_loading, augment_for=val_aug_for)
    if cfg.pair_aligned:  # a round trip is validated like its photo: one of a challenge is not re-sent through the pipeline
        val.pair_with(aligned_partners(val))
    check_classes(train, val)
    return train, val, counts


def _open(spec: str, cfg: TrainConfig | None = None):
    """``open_source(spec)``, a ``TrainingDataError`` naming the root and its option if it cannot
    be read; on ``--resume`` (the roots read back from the run's ``opt.json``) it says how to
    give moved roots again."""
    try:
        return open_source(spec)
    except (ValueError, OSError) as e:
        flag = next((f for f in ("data", "challenge_data", "train_data") if cfg is not None and spec in getattr(cfg, f)),
                    "data")
        hint = (f" (--resume reads the roots from the run's opt.json: if they moved, give all of them again with "
                f"--{flag} NEW_PATH ...)" if cfg is not None and cfg.resume and isinstance(e, FileNotFoundError) else "")
        raise TrainingDataError(f"--{flag} {spec}: {e}{hint}") from None


def check_classes(train: DetectionDataset, val: DetectionDataset) -> None:
    """A ``TrainingDataError`` unless the training set holds both classes and the validation
    split some pictures; a warning if the validation split has one class only (its accuracy
    still picks the epoch, but no calibration can be fitted on it)."""
    names = {0: "real", 1: "fake"}
    have = set(np.unique(train.labels()).tolist()) if len(train) else set()
    if have != {0, 1}:
        missing = " and ".join(names[c] for c in (0, 1) if c not in have)
        raise TrainingDataError(f"the training split has no {missing} pictures: a detector learns from both classes "
                                "(ROOT/real/SOURCE/*.jpg and ROOT/fake/SOURCE/*.jpg)")
    if not len(val):
        raise TrainingDataError("the validation split is empty: raise --val_fraction or add pictures "
                                "(the best epoch and the calibration come from it)")
    val_have = set(np.unique(val.labels()).tolist())
    if val_have != {0, 1}:
        logger.warning("the validation split has only %s pictures: the calibration is not fitted (raise "
                       "--val_fraction or add pictures)", " and ".join(names[c] for c in sorted(val_have)))


def family_share_of(cfg: TrainConfig, train_ds: DetectionDataset) -> dict[str, float]:
    """``cfg.family_share`` as a mapping. A named family the training data lacks is a
    ``TrainingDataError`` (a typo, or small GANs that were not made: the share would silently
    stay the default; a LOGO sweep's sampler draws from every family, its folds drop the
    held-out rows afterwards). The weights themselves are the sampler's (``family_sampler``):
    computed once, and logged as it draws them."""
    share = parse_family_share(cfg.family_share)
    if not share:
        return share
    present = {sampling_family(s) for s in train_ds.source_names()}
    missing = sorted(set(share) - present)
    if missing:
        raise TrainingDataError(f"--family_share names {', '.join(missing)}, which the training data lacks "
                                f"(its sampling families: {', '.join(sorted(present))})")
    return share


def log_draw_shares(sampler: FamilySampler, labels: list[int], sources: list[str]) -> None:
    """Logs each sampling family's share of its class in what ``sampler`` really yields
    (``FamilySampler.draw_shares``: after aligned pairs, whose photos may be overdrawn by their
    round trips), and with pairs the share of each class, which overdrawn photos shift too."""
    shares = sampler.draw_shares().tolist()
    for y, fams in sorted(class_family_shares(labels, sources, shares).items()):
        logger.info("family shares of class %d: %s", y, ", ".join(f"{f} {v:.3f}" for f, v in fams.items()))
    if sampler.partners is not None:
        by_class: dict[int, float] = {}
        for y, v in zip(labels, shares):
            by_class[y] = by_class.get(y, 0.0) + v
        logger.info("class shares with aligned pairs: %s", ", ".join(f"{y} {v:.3f}" for y, v in sorted(by_class.items())))


def family_sampler(cfg: TrainConfig, train_ds: DetectionDataset, partners: list[int] | None) -> FamilySampler:
    """The family-balanced sampler of ``cfg`` (``partners``: aligned pairs, or None). A class
    whose families all weigh 0 is a ``TrainingDataError``. The family shares are logged as
    the sampler draws them when ``--family_share`` or pairs change them from equal shares."""
    share = family_share_of(cfg, train_ds)
    labels, sources = train_ds.labels(), train_ds.source_names()
    try:
        sampler = FamilySampler(labels, sources, seed=cfg.seed, num_samples=cfg.samples_per_epoch or len(train_ds),
                                partners=partners, family_share=share)
    except ValueError as e:
        raise TrainingDataError(str(e)) from None
    if share or partners is not None:
        log_draw_shares(sampler, labels, sources)
    return sampler


def train_sampler(cfg: TrainConfig, train_ds: DetectionDataset):
    """The training sampler ``cfg.balance`` asks for (single process): class-balanced,
    family-balanced (optionally with aligned pairs), or None (shuffle)."""
    cfg.check_pairing()
    if cfg.balance == "sampler":
        return balanced_sampler(train_ds.labels(), seed=cfg.seed)
    if cfg.balance == "family":
        partners = aligned_partners(train_ds) if cfg.pair_aligned else None
        if partners is not None:
            train_ds.pair_with(partners)
            logger.info("aligned pairs: %d round trips paired with their real photo", sum(p >= 0 for p in partners))
        return family_sampler(cfg, train_ds, partners)
    return None


# ---------------------------------------------------------------------------- evaluation
def _gather_np(arr: np.ndarray, world: int) -> np.ndarray:
    if world == 1:
        return arr
    out = [None] * world
    dist.all_gather_object(out, arr)
    return np.concatenate(out)


# ---------------------------------------------------------------------------- training
def prepare_device(cfg: TrainConfig, local_rank: int = 0) -> torch.device:
    """The training device, with cudnn autotuning and TF32 matmuls switched on for CUDA."""
    device = resolve_device(cfg.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def build_training_model(cfg: TrainConfig, device: torch.device, aux_classes: int = 0, init: bool = True,
                         checkpoint: tuple[dict, dict] | None = None) -> nn.Module:
    """``cfg``'s architecture, with ``--init_from`` weights if set (and ``init``: a resumed run
    loads its own state instead, so the file it started from need not be there any more), on
    ``device`` (channels-last on CUDA); with ``aux_classes`` (``aux_weight``), that many outputs
    after the detector's logit, and after them the processing-history head's (``history_weight``,
    ``HISTORY_OUTPUTS``). ``checkpoint``: the ``--init_from`` file's ``(state, meta)`` when the
    caller has already read it."""
    model = build_model(cfg.arch, **cfg.model_config())
    extra = aux_classes + (len(HISTORY_OUTPUTS) if cfg.history_weight else 0)
    if extra:  # built without them first: the heads change no other initial weight
        from bitmind.models.npr import with_aux_outputs

        with_aux_outputs(model, extra, seed=cfg.seed)
    if cfg.init_from and init:
        load_weights(model, init_weights(cfg, checkpoint), f"--init_from {cfg.init_from}")
    model.to(device)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def usable_cpus() -> int:
    """Cores this process may run on (its affinity where the OS tells it, else all)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def loader_workers(requested: int) -> int:
    """Worker processes to start for ``--workers requested``: at most one per usable core.
    More only queue for the same cores (torch warns about it on every loader start, twice an
    epoch: the default 4 on a 2-core machine); which worker reads a picture does not change
    what is drawn for it, so the data stream is the same with fewer."""
    cores = usable_cpus()
    if requested > cores:
        logger.info("--workers %d: using %d, one per core this machine gives the run", requested, cores)
        return cores
    return requested


def loader_kwargs(cfg: TrainConfig, device: torch.device) -> dict:
    """DataLoader options shared by the training and validation loaders."""
    workers = loader_workers(cfg.workers)
    kw = dict(num_workers=workers, pin_memory=cfg.pin_memory and device.type == "cuda",
              collate_fn=collate_skip_none, persistent_workers=workers > 0, worker_init_fn=worker_init)
    if workers > 0:
        kw["prefetch_factor"] = 4
    return kw


def train(cfg: TrainConfig) -> dict:
    """Train per ``cfg``; returns a summary (best checkpoint path, None if no epoch was saved as the
    best; best metrics, history), also written to ``summary.json`` without the history."""
    cfg.check()  # a bad option stops here, before the data and the workers
    rank, world, local_rank = _dist_info()
    # one run per folder at a time; SIGTERM (timeout, docker stop, systemctl stop) stops as Ctrl-C does (main thread
    # only); an --overwrite run's earlier files are put back if it ends before it saves an epoch (``EarlierRun``)
    with (hold_run_folder(cfg.run_dir) if rank == 0 else contextlib.nullcontext(), sigterm_as_interrupt(),
          EarlierRun(cfg.run_dir, overwrite=cfg.overwrite and not cfg.resume and rank == 0) as earlier):
        return _train(cfg, rank, world, local_rank, earlier)


def _train(cfg: TrainConfig, rank: int, world: int, local_rank: int, earlier: EarlierRun) -> dict:
    """``train``'s body, run while this process holds the run folder; ``earlier`` keeps an
    ``--overwrite``'s earlier run aside until an epoch is saved."""
    device = prepare_device(cfg, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    seed_everything(cfg.seed + rank)
    amp_dtype = resolve_amp(cfg.amp, device)
    amp_used = amp_name(amp_dtype)
    if is_main:
        say_amp(cfg.amp, amp_used, device)
    run_dir = cfg.run_dir
    if is_main and recover_earlier_run(run_dir) == "restored" and cfg.resume:  # what a killed --overwrite run left
        raise RunFolderError(f"--resume: {run_dir} held an --overwrite run killed before it saved an epoch, with the "
                             "earlier run's files set aside; those are back now, and this command read the killed run's "
                             "options: run it again to resume the earlier run")
    if cfg.resume:
        check_resume_matches(cfg)
    if is_main:  # before the data: a folder holding a run is refused (unless --resume / --overwrite)
        prepare_run_folder(run_dir, cfg.resume, cfg.overwrite)
    state_path = run_dir / "state_last.pt"
    st = read_run_state(state_path) if cfg.resume and state_path.exists() else None  # a damaged state: before the data

    train_ds, val_ds, counts = build_datasets(cfg, history=bool(cfg.history_weight))
    if is_main:  # only once the data has been read: a run that fails on a typo leaves the folder as it was
        earlier.set_aside()  # --overwrite: until this run saves an epoch (put back if it ends before)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_options(cfg, run_dir, amp_resolved=amp_used)  # its paths absolute: it resumes from any working folder
        logger.info("data splits per source: %s", json.dumps(counts))
        show("training set:\n" + train_ds.summary())
        show("validation set:\n" + val_ds.summary())
        val_labels = val_ds.labels()
        if cfg.calibrate and len(set(val_labels)) == 2 and (why := too_few_to_calibrate(val_labels, cfg.calibration_min_per_class)):
            # said now, not only after hours of training (one class is check_classes' warning)
            show(f"the best checkpoint will not be calibrated: {why}"
                 + ("; it keeps the calibration of --init_from, if that has one" if cfg.init_from else ""), logging.WARNING)

    labels = train_ds.labels()
    if world > 1:
        if is_main and cfg.balance == "family":
            logger.warning("balance family with %d processes: each process shards the data (DistributedSampler), so "
                           "families and aligned pairs are not kept; the loss weights the two classes instead", world)
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    else:
        sampler = train_sampler(cfg, train_ds)
    loader_kw = loader_kwargs(cfg, device)
    train_loader = DataLoader(train_ds, batch_size=cfg.loader_batch()[0], sampler=sampler, shuffle=sampler is None,
                              drop_last=len(train_ds if sampler is None or world > 1 else sampler) >= cfg.batch_size * world, **loader_kw)
    val_sampler = DistributedSampler(val_ds, num_replicas=world, rank=rank, shuffle=False) if world > 1 else None
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size * 2, sampler=val_sampler, shuffle=False, **loader_kw)

    aux_names, aux_labels = aux_classes(train_ds.source_names(), cfg.aux_by) if cfg.aux_weight else ([], [])
    # the starting file read once: its weights and the calibration the run keeps are of the same bytes
    start = read_init_from(cfg.init_from) if cfg.init_from and not cfg.resume else None
    model = build_training_model(cfg, device, len(aux_names), init=not cfg.resume, checkpoint=start)  # resume: state_last.pt
    if is_main and start is not None:
        save_starting_calibration(cfg, run_dir, start[1])
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    # Under DDP the DistributedSampler shards the data, so class balance comes from the loss instead.
    weight_loss = cfg.balance == "weight" or (cfg.balance in ("sampler", "family") and world > 1)
    pos_weight = torch.tensor(class_pos_weight(labels), device=device) if weight_loss else None
    learner = Learner(model, cfg, amp_dtype, criterion=nn.BCEWithLogitsLoss(pos_weight=pos_weight), net=net)
    learner.set_aux(aux_names, aux_labels)
    learner.set_content(*(content_classes(train_ds.source_names()) if cfg.adv_weight else ([], [])))
    # what the checkpoints record of the run: ``amp`` as asked (a resume asks it again), ``amp_resolved`` as it ran
    train_options = {**cfg.to_dict(), "amp_resolved": amp_used, **learner.aux_meta}
    learner.align_pairs(train_ds.partner)  # pair_patches: a round trip and its photo cropped alike

    start_epoch, best, history = 0, Best(), []
    sampler_gen = getattr(sampler, "generator", None)  # family / class-balanced samplers draw from their own stream
    if st is not None:
        try:
            load_weights(model, st["model"], f"--resume {state_path}")
        except ValueError as e:  # a run folder without its opt.json, resumed with other network options
            raise RunFolderError(f"{e}: give the network options the run was started with") from None
        resume_serving_options(model, run_dir / "model_last.pth")
        try:
            learner.check_resumable(st)
        except ValueError as e:
            raise RunFolderError(f"--resume {state_path}: {e}") from None
        learner.opt.load_state_dict(st["optimizer"])
        learner.load_rng_state(st)
        if sampler_gen is not None and "sampler_rng" in st:
            sampler_gen.set_state(st["sampler_rng"])
        start_epoch, best.score, best.bad_epochs = st["epoch"] + 1, st["best_acc"], st.get("bad_epochs", 0)
        history = json.loads(st.get("history", "[]"))
        best.record = json.loads(st.get("best", "{}"))
        if is_main:
            logger.info("resumed from %s at epoch %d (best val balanced accuracy %.4f)", state_path, start_epoch, best.score)
            if start_epoch >= cfg.epochs:  # nothing to train: say so rather than end as if it had trained
                show(f"--resume: the run has trained {start_epoch} epoch{'s' * (start_epoch != 1)}, --epochs is "
                     f"{cfg.epochs}: no epoch left "
                     "to train (pass a larger --epochs to train on)", logging.WARNING)

    writer = make_writer(run_dir) if is_main else None
    step = start_epoch * batches_per_epoch(train_loader, cfg)  # TensorBoard's step goes on where it stopped
    t_start = time.time()
    images_seen = 0

    def log_step() -> None:
        nonlocal step
        step += 1
        if writer is not None and step % cfg.log_every == 0:
            writer.add_scalar("train/loss", learner.last_loss.item(), step)
            writer.add_scalar("train/lr", lr, step)

    # first Ctrl-C or SIGTERM: finish the epoch, save, calibrate, stop; second: now
    ctrl_c = GracefulStop(signals=(signal.SIGINT, signal.SIGTERM)).install()
    stopped = None  # why the run ended before its last epoch, if it did for a reason a person must see
    try:
        for epoch in range(start_epoch, cfg.epochs):
            train_ds.set_epoch(epoch)
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch)
            lr = learner.begin_epoch(epoch)
            done = train_one_epoch([learner], train_loader, cfg, epoch, device, show=is_main, on_step=log_step)
            images_seen += done["images"] * world
            train_time = done["seconds"]
            # Stop before validating and saving anything of this epoch? Every rank must agree (one
            # that left alone would keep the others waiting in a collective until it timed out).
            reason = agreed(STOP_REASONS.index(epoch_failure(done, learner)), world)
            if reason:
                stopped = STOP_REASONS[reason]
                if stopped == "no-images" and epoch == 0:  # nothing ever trained: the data, not the run
                    raise unreadable_training_data(epoch, done)
                kept = (f"{run_dir} keeps the last good epoch's checkpoints" if (run_dir / "state_last.pt").exists()
                        else "no epoch of this run was saved, so it has no checkpoint")
                msg = (f"epoch {epoch}: " + ("no training picture could be read" if stopped == "no-images" else
                                             f"the training loss or weights are not finite numbers (lr {lr:.3g}; try a "
                                             "smaller --lr, or --amp bf16/none)")
                       + f": stopped; {kept}")
                if is_main:
                    show(msg, logging.ERROR)
                else:
                    logger.error(msg)
                break
            # ---- validation (all ranks compute their shard, rank 0 gathers)
            logits, vlabels, vkeys = validate(model, val_loader, device, amp_dtype)
            logits, vlabels, vkeys = _gather_np(logits, world), _gather_np(vlabels, world), _gather_np(vkeys, world)
            if world > 1:  # DistributedSampler pads with repeats: keep each validation image once
                _, first = np.unique(vkeys, return_index=True)
                logits, vlabels, vkeys = logits[first], vlabels[first], vkeys[first]
            if done["skipped"]:
                logger.warning("epoch %d: skipped %d unreadable training images (each file named once by a "
                               "'skipping unreadable image' warning)", epoch, done["skipped"])
            stop = torch.zeros(1)
            if is_main:
                m = val_metrics(logits, vlabels)
                if not m:
                    logger.warning("epoch %d: no validation picture could be read, so this epoch cannot be the best", epoch)
                rec = epoch_record(epoch, learner.mean_loss, lr, m, train_time,
                                   images_per_second=learner.loss_n * world / max(train_time, 1e-9),
                                   **learner.aux_record)
                history.append(rec)
                log_epoch(writer, rec)
                writer.flush()
                msg = " ".join(f"{k}={v:.3g}" if k == "lr" else f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in rec.items())
                show(msg)
                meta_extra = {"metrics": {"val": m, "epoch": epoch}, "train_options": train_options}
                with writing(run_dir, f"epoch {epoch}", earlier):  # a full disk: one line, the last whole files kept
                    save_if_best(best, selection_score(m), epoch, m, model, cfg.arch, run_dir, meta_extra, logits, vlabels)
                    save_checkpoint(model, run_dir / "model_last.pth", model_meta(model, cfg.arch, **meta_extra))
                    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "optimizer": learner.opt.state_dict(),
                             "epoch": epoch, "best_acc": best.score, "bad_epochs": best.bad_epochs,
                             "history": json.dumps(history), "best": json.dumps(best.record), **learner.rng_state()}
                    if sampler_gen is not None:  # the sampler's stream goes on where it was, not from epoch 0's draws
                        state["sampler_rng"] = sampler_gen.get_state()
                    atomic_write(state_path, lambda tmp: torch.save(state, tmp))
                    (run_dir / "history.json").write_text(json.dumps(history, indent=1))
                    plot_curves(history, run_dir / "curves.png")
                earlier.drop()  # --overwrite: this run has an epoch saved, the earlier run's files go for good
                if cfg.early_stop_patience and best.bad_epochs >= cfg.early_stop_patience:
                    show(f"early stopping: no validation improvement for {best.bad_epochs} epochs")
                    stop[0] = 1
            if ctrl_c.requested:  # Ctrl-C (2) or SIGTERM (3): stop now that this epoch's files are complete
                stop[0] = 3 if ctrl_c.signum == signal.SIGTERM else 2
            stop = torch.tensor([float(agreed(int(stop.item()), world))])
            if stop.item() >= 2:  # the signal the ranks agreed on: a SIGTERM on any rank is one for all
                signum = signal.SIGTERM if stop.item() == 3 else signal.SIGINT
                stopped = stop_reason(signum)
                if is_main:
                    show(f"stopped after epoch {epoch} ({stop_label(signum)}): {run_dir} "
                         "keeps every finished epoch; the same command with --resume goes on from there")
            if stop.item():
                break
    finally:  # also when the run fails: Ctrl-C must stop a process that is not training any more
        ctrl_c.uninstall()
    # None where no epoch was saved as the best (a run that failed in its first epoch, or whose validation pictures
    # never read): the summary named model_epoch_best.pth all the same, a file that was not there
    best_path = run_dir / "model_epoch_best.pth"
    summary = {"run_dir": str(run_dir), "best_checkpoint": str(best_path) if best_path.is_file() else None,
               "best": best.record, "history": history, "seconds": time.time() - t_start, "images_seen": images_seen}
    if stopped:
        summary["stopped"] = stopped
    if is_main:
        with writing(run_dir, "the run's end (calibration, summary)", earlier):
            if cfg.calibrate and (run_dir / "val_logits_best.npy").exists():
                try:
                    summary["calibration"] = calibrate_checkpoint(run_dir / "model_epoch_best.pth", run_dir / "val_logits_best.npy",
                                                                  real_target=cfg.calibration_real_target,
                                                                  min_per_class=cfg.calibration_min_per_class)
                except CalibrationDataError as e:  # one class, or too few, in validation
                    if (kept := keep_starting_calibration(cfg, run_dir / "model_epoch_best.pth", e)) is not None:
                        summary["calibration"] = kept
            writer.close()
            (run_dir / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def amp_name(dtype: torch.dtype | None) -> str:
    """The ``--amp`` value of what ``resolve_amp`` resolved: ``bf16``, ``fp16`` or ``none`` (fp32)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "none")


def say_amp(asked: str, used: str, device: torch.device, records: str = "opt.json and the checkpoints") -> None:
    """One line at a run's start where ``--amp asked`` is not what runs (``used``): bf16/fp16 off
    CUDA run in fp32 (autocast is used on CUDA only). Why: ``--amp bf16`` on a CPU trained in fp32
    without a word, and opt.json and the checkpoints' ``train_options`` said bf16; they now record
    ``amp`` as asked (a resume asks it again, on whatever device it runs) and ``amp_resolved`` as
    it ran. ``records``: the files that record both (a sweep: its sweep.json and checkpoints)."""
    if asked == used:
        return
    if asked == "auto":
        logger.info("--amp auto: %s on %s (recorded as amp_resolved in %s)", used, device, records)
        return
    show(f"--amp {asked}: mixed precision runs on CUDA only, so this run on {device} trains in fp32 ({records} "
         f"record amp {asked!r} as asked and amp_resolved {used!r} as it ran)", logging.WARNING)


#: Why a run stops early (index 0: it does not); the agreed reason is the largest index any rank has.
STOP_REASONS = (None, "non-finite", "no-images")
#: Exit status of a run (or a sweep) that ended early, by its summary's ``stopped``: 1 for a
#: failure, 130 (as a shell reports Ctrl-C) for a stop that ``--resume`` goes on from, 143 (as a
#: shell reports SIGTERM) for the same stop asked by SIGTERM (``terminated``: timeout, docker stop,
#: systemctl stop), after the best checkpoint is calibrated, as a process manager expects of it.
EXIT_STATUS = {"non-finite": 1, "no-images": 1, "interrupted": 130, "terminated": 143}


def epoch_failure(done: dict, learner: Learner) -> str | None:
    """Why the epoch just trained must not be validated nor saved, else None: no training
    picture could be read (``no-images``), or its loss or weights are not finite numbers
    (``non-finite``, ``Learner.diverged``); a diverged run then stops at the epoch's end
    instead of saving NaN weights or failing in validation with a traceback about NaN
    probabilities."""
    if not done["images"]:
        return "no-images"
    return "non-finite" if learner.diverged() else None


#: What a resumable state must hold (``train`` writes it after every epoch); one tuple with the
#: model loaders' test that refuses such a file as a model (``bitmind.checkpoint``).
STATE_KEYS = RUN_STATE_KEYS


def read_run_state(path: Path) -> dict:
    """The resumable state at ``path`` (``state_last.pt``), or a ``RunFolderError`` if it cannot
    be read or lacks what a resumed run needs. Why: ``--resume`` on a damaged file (a truncated
    copy, a full disk in an older version) read it only after the data, then stopped with a
    traceback from ``torch.load``; now it stops at once, in one line."""
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - EOFError, OSError, RuntimeError, UnpicklingError: all "damaged"
        raise RunFolderError(f"--resume: {path} cannot be read ({type(e).__name__}: {_cause(e) or 'empty or cut short'}): "
                             "the run's saved state is damaged; restore it, or start again with --overwrite") from None
    missing = [k for k in STATE_KEYS if not isinstance(st, dict) or k not in st]
    if missing:
        raise RunFolderError(f"--resume: {path} is not a run's saved state (it lacks {', '.join(missing)}); "
                             "start again with --overwrite")
    return st


def interrupted_message(cfg: TrainConfig) -> str:
    """The line a run stopped at once by Ctrl-C (a second press, or one before its first epoch
    started) or SIGTERM (a second one, or one before the loop: ``StopSignal``) ends with, instead
    of a KeyboardInterrupt traceback: what is kept and how to go on. Called while that exception is
    handled: an ``--overwrite`` run that had not saved an epoch says the earlier run is kept."""
    run_dir, how = cfg.run_dir, stop_name()
    if getattr(sys.exc_info()[1], "earlier_run_kept", None):  # set by EarlierRun as the stop left ``train``
        return (f"stopped ({how}) before this run saved an epoch: {run_dir} holds the earlier run's files as they were "
                "(--overwrite replaces them only once an epoch is saved); run the command again")
    if (run_dir / "state_last.pt").exists():
        return (f"stopped at once ({how}): the epoch in progress is lost; {run_dir} keeps the finished epochs (the best "
                "checkpoint is calibrated at the run's end); the same command with --resume goes on from there")
    return f"stopped ({how}) before any epoch was saved: {run_dir} holds nothing to resume; run the command again"


def unreadable_training_data(epoch: int, done: dict) -> TrainingDataError:
    """The error of an epoch in which no training picture could be read (``done``: what
    ``train_one_epoch`` returned); at epoch 0 it is the data, not the run, that fails."""
    return TrainingDataError(f"epoch {epoch}: no training picture could be read ({done['skipped']} unreadable); "
                             "check the files under --data")


def agreed(value: int, world: int) -> int:
    """The largest ``value`` of all ranks (itself in a single process): what every rank then does."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def calibration_line(rec: dict) -> str:
    """What a calibration did, in one line: the map stored, whether the new Platt fit was kept
    and the class-balanced Brier score that decided it (the plain Brier and accuracy beside
    it). Why: the line printed the plain Brier alone, which can rise while the class-balanced
    one, the keep rule, falls (T=20 kept with "val brier 0.2488 -> 0.2499": operator audit)."""
    kept = "new Platt fit kept" if rec.get("kept") else "new Platt fit not kept"
    if rec.get("real_target"):  # the bias is then the boundary rule's, not the fit's: say so (its accuracy moves)
        kept += f", boundary where {rec['real_target']:g} of validation real photos pass"
    brier = f"{rec['val_balanced_brier_before']:.4f} -> {rec['val_balanced_brier_after']:.4f}"
    if rec.get("real_target") and "val_balanced_brier_platt" in rec:  # the Platt step and the boundary move apart
        brier = (f"{rec['val_balanced_brier_before']:.4f} -> {rec['val_balanced_brier_platt']:.4f} (Platt) -> "
                 f"{rec['val_balanced_brier_after']:.4f} (boundary moved)")
    return (f"calibration: T={rec['temperature']:.3f} b={rec['logit_bias']:+.3f} ({kept}); val class-balanced brier "
            f"{brier} (plain "
            f"{rec['val_brier_before']:.4f} -> {rec['val_brier_after']:.4f}), acc {rec['val_accuracy_before']:.4f} -> "
            f"{rec['val_accuracy_after']:.4f}")


def resume_serving_options(model: nn.Module, last: Path) -> None:
    """A resumed fine-tune answers with the serve-time options (``center_crop``, ``flip_mean``)
    its ``--init_from`` carried over (``bitmind.training.init_from``): the state holds weights
    only, so they are read back from the run's last checkpoint, written with the same epoch's
    state. Without this a resumed fine-tune of ``base_crop192.pth`` validated and saved whole pictures."""
    from bitmind.checkpoint import read_checkpoint
    from bitmind.models.npr import set_serving_options
    from bitmind.training.init_from import serving_options

    if not last.exists():
        return
    options = serving_options(read_checkpoint(last)[1], f"--resume {last}")
    if options:
        set_serving_options(model, **options)
        logger.info("--resume: serve-time options of the run's checkpoints kept: %s",
                    ", ".join(f"{k}={v}" for k, v in options.items()))


def starting_calibration(cfg: TrainConfig, meta: dict | None = None) -> dict:
    """The ``--init_from`` file's calibration (from its ``meta`` where the caller has read it,
    else from the file now): ``temperature`` None where it has none, or one the miner would
    refuse (``error`` says why); for ``keep_starting_calibration``."""
    from bitmind.checkpoint import check_calibration, read_checkpoint

    record = {"init_from": str(cfg.init_from), "temperature": None}
    try:
        meta = meta if meta is not None else read_checkpoint(cfg.init_from)[1]
        check_calibration(meta, cfg.init_from)  # one the miner would refuse is not passed on
    except Exception as e:  # noqa: BLE001 (unreadable or refused: said at the end, raw logits kept)
        return {**record, "error": f"{type(e).__name__}: {e}"}
    if meta.get("temperature") is not None:
        record.update(temperature=float(meta["temperature"]), logit_bias=float(meta.get("logit_bias") or 0.0))
    return record


def save_starting_calibration(cfg: TrainConfig, run_dir: Path, meta: dict) -> None:
    """Write ``starting_calibration`` of the starting file's ``meta`` (read with the weights the
    run starts from) into ``run_dir`` (``INIT_CALIBRATION``) as a fine-tune starts. Why: the
    calibration was read from ``--init_from`` only when the run ended, hours later, so an operator
    who swapped a new ``base.pth`` in meanwhile (the miner hot-reloads it) gave the fine-tune the
    new file's calibration, and a resumed run whose starting file had been moved kept none; the
    run's own copy is what its weights started from."""
    (run_dir / INIT_CALIBRATION).write_text(json.dumps(starting_calibration(cfg, meta), indent=2))


def keep_starting_calibration(cfg: TrainConfig, ckpt: Path, why: Exception) -> dict | None:
    """The validation split is too small (or one-class) to fit a calibration: a fine-tune
    (``--init_from``) keeps the starting file's (its record names it and why, for
    ``model_info``); a run from scratch keeps raw logits. Why: a small fine-tune of
    ``base.pth`` stored none and served raw logits, which kept 0.87 of real photos where the
    starting file's calibration kept 0.97 (operator audit); a few epochs of fine-tuning move
    the logits far less than the raw scale is off. The starting file's calibration is the one the
    run saved as it started (``save_starting_calibration``, beside ``ckpt``), or for a run begun
    before that was saved the file's now. Returns the stored record, or None."""
    start = None
    if cfg.init_from:
        saved = ckpt.parent / INIT_CALIBRATION
        try:
            start = json.loads(saved.read_text()) if saved.is_file() else starting_calibration(cfg)
        except (OSError, ValueError) as e:  # a damaged copy: said, raw logits kept
            start = {"error": f"{saved}: {e}"}
        if start.get("error"):
            logger.warning("cannot keep the calibration of --init_from %s: %s", cfg.init_from, start["error"])
    if not start or start.get("temperature") is None:  # absent or None: the starting file had none either
        show(f"calibration not fitted: {why}; {ckpt} keeps its raw logits", logging.WARNING)
        return None
    started_from = start.get("init_from") or str(cfg.init_from)  # the file the run began with (a resume may name another)
    record = {"temperature": float(start["temperature"]), "logit_bias": float(start.get("logit_bias") or 0.0),
              "method": "kept from --init_from (too few validation pictures to fit one)", "init_from": started_from,
              "not_fitted": str(why)}
    store_calibration(ckpt, record)
    show(f"calibration not fitted: {why}; {ckpt} keeps the calibration of --init_from {started_from} "
         f"(T={record['temperature']:.3f} b={record['logit_bias']:+.3f}); refit it on more validation pictures with "
         "python -m bitmind.calibrate", logging.WARNING)
    return record


def calibrate_checkpoint(ckpt: Path, logits_file: Path, mask: np.ndarray | None = None, real_target: float = 0.0,
                         min_per_class: int = MIN_PER_CLASS) -> dict:
    """Fit the calibration on the validation logits saved beside ``ckpt`` (those under
    ``mask`` only, if given: a leave-one-out model is calibrated without its held-out
    sources), its boundary at ``real_target`` of the real ones if set, and store it in
    the checkpoint (a ``CalibrationDataError`` with fewer than ``min_per_class`` pictures of a class)."""
    logits, labels = np.load(logits_file)
    if mask is not None:
        logits, labels = logits[mask], labels[mask]
    rec = store_calibration(ckpt, calibrate_logits(logits, labels, real_target=real_target, split="val",
                                                   min_per_class=min_per_class))
    show(calibration_line(rec))
    return rec
