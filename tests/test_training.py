"""Trainer: a short CPU run writes what the guide says where it says; resume; torchrun/gloo;
the train/eval/serve pipeline agreement; seeded augmentation; aligned-fake generator."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from bitmind.checkpoint import load_model, read_checkpoint
from bitmind.data import DetectionDataset, LocalFolderSource, split_indices
from bitmind.image_transforms import AugConfig, TrainAugment, ValidatorPipeline
from bitmind.miner.predict import Predictor
from bitmind.training import TrainConfig, parse_config, train
from train_helpers import tiny_config
from validator_synth import make_folder

REPO = Path(__file__).resolve().parents[1]
TINY = ["--layers", "1", "1", "--width", "8"]


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("synth"), n_per_class=14, seed=3, size=64)


_cfg = tiny_config


def test_cli_defaults_follow_the_guide():
    cfg = parse_config([])
    assert cfg.lr == 2e-4 and cfg.lr_decay == 0.9
    assert Path(cfg.checkpoints_dir) == REPO / "base_miner" / "checkpoints"
    cfg = parse_config(["--data", "a", "b", "--layers", "2", "2", "--channels_last", "false", "--aug_jpeg_quality", "30", "100"])
    assert cfg.data == ["a", "b"] and cfg.layers == [2, 2] and cfg.channels_last is False and cfg.aug_jpeg_quality == [30, 100]
    # data roots add up when the flag is repeated (as in bitmind.eval); other lists are replaced
    cfg = parse_config(["--data", "a", "--data", "b", "c", "--challenge_data", "v", "--aug_jpeg_quality", "60", "90"])
    assert cfg.data == ["a", "b", "c"] and cfg.challenge_data == ["v"] and cfg.aug_jpeg_quality == [60, 90]
    assert parse_config([]).data == []


def test_cpu_run_writes_checkpoints_tensorboard_and_options(synth_data, tmp_path):
    torch.set_num_threads(1)
    summary = train(_cfg(synth_data, tmp_path, calibrate=True, calibration_real_target=0.75))
    run = tmp_path / "t"
    for name in ("model_epoch_best.pth", "model_last.pth", "state_last.pt", "opt.json", "history.json", "summary.json", "curves.png"):
        assert (run / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    assert json.loads((run / "opt.json").read_text())["width"] == 8
    assert len(summary["history"]) == 2 and summary["history"][0]["train_loss"] > 0
    # The best checkpoint describes itself and carries its calibration.
    state, meta = read_checkpoint(run / "model_epoch_best.pth")
    assert meta["arch"] == "npr" and meta["config"]["layers"] == [1, 1]
    cal = meta["metrics"]["calibration"]
    assert "temperature" in meta and "logit_bias" in meta and cal["split"] == "val"
    assert cal["real_target"] == 0.75 and meta["logit_bias"] == cal["logit_bias"] and "platt_bias" in cal  # the boundary rule
    # ...and the miner's predictor serves it as is.
    pred = Predictor(str(run / "model_epoch_best.pth"), device="cpu")
    p = pred.predict_image(Image.open(next((synth_data / "fake" / "synth").iterdir())))
    assert 0.0 <= p <= 1.0


def test_resume_continues_from_saved_epoch(synth_data, tmp_path, monkeypatch):
    import copy

    from bitmind.training.loop import Learner

    torch.set_num_threads(1)
    opts = dict(calibrate=False, patch_size=32, tile_shuffle=16, aug_freq_mask_prob=0.5)
    train(_cfg(synth_data, tmp_path, epochs=1, **opts))
    saved = torch.load(tmp_path / "t" / "state_last.pt", map_location="cpu", weights_only=True)
    assert saved["optimizer"]["state"], "the optimiser state (Adam moments) is saved"
    fresh = Learner(torch.nn.Linear(1, 1), TrainConfig(seed=0), None)
    for k, gen in (("patch_rng", fresh.patch_gen), ("tile_rng", fresh.tile_gen),
                   ("freq_rng", fresh.freq_gen)):  # epoch 0 drew from all three
        assert not torch.equal(saved[k], gen.get_state()), k
    seen = {}
    begin = Learner.begin_epoch

    def spy(self, epoch):  # what the resumed run starts its first epoch from
        if not seen:
            seen.update(epoch=epoch, model={k: v.clone() for k, v in self.model.state_dict().items()},
                        optimizer=copy.deepcopy(self.opt.state_dict()), rng=self.rng_state())
        return begin(self, epoch)

    monkeypatch.setattr(Learner, "begin_epoch", spy)
    s = train(_cfg(synth_data, tmp_path, epochs=2, resume=True, **opts))
    assert [h["epoch"] for h in s["history"]] == [0, 1]  # epoch 0 restored, only epoch 1 trained
    assert seen["epoch"] == 1
    for k, v in saved["model"].items():  # the weights are the saved ones, not a fresh initialisation
        assert torch.equal(seen["model"][k], v), k
    got, want = seen["optimizer"]["state"], saved["optimizer"]["state"]
    assert got.keys() == want.keys()
    for i in want:  # Adam's step count and moments carried over
        for name, t in want[i].items():
            assert torch.equal(torch.as_tensor(got[i][name]), torch.as_tensor(t)), (i, name)
    for k in ("patch_rng", "tile_rng", "freq_rng"):  # patch offsets, tile orders and frequency masks go on where they were
        assert torch.equal(seen["rng"][k], saved[k]), k
    # so do the sampler's draws: epoch 1 of the resumed run draws the pictures an uninterrupted run draws
    assert "sampler_rng" in saved
    first = torch.load(tmp_path / "t" / "state_last.pt", map_location="cpu", weights_only=True)
    straight = tmp_path / "straight"
    train(_cfg(synth_data, straight, epochs=2, **opts))
    both = torch.load(straight / "t" / "state_last.pt", map_location="cpu", weights_only=True)
    assert torch.equal(first["sampler_rng"], both["sampler_rng"]) and not torch.equal(saved["sampler_rng"], both["sampler_rng"])


def test_train_only_sources_never_leak_val_or_test_stems(synth_data, tmp_path):
    from bitmind.training.trainer import build_datasets

    cfg = _cfg(synth_data, tmp_path, train_data=[str(synth_data)])
    tr, val, counts = build_datasets(cfg)
    val_stems = {src.stem(i) for src, i in val.items}
    assert val_stems and not val_stems & {src.stem(i) for src, i in tr.items}
    assert counts[str(synth_data)]["train"] > 0


def test_split_by_stem_keeps_crops_together(tmp_path):
    for cls in ("real", "fake"):
        d = tmp_path / cls / "s"
        d.mkdir(parents=True)
        for k in range(30):
            for crop in (0, 1):
                Image.new("RGB", (8, 8), (k, crop, 0)).save(d / f"{cls}pic{k}_{crop}.jpg")
    src = LocalFolderSource(tmp_path)
    splits = split_indices(src, seed=5)
    where = {}
    for name, idx in splits.items():
        for i in idx:
            where.setdefault(src.stem(i), set()).add(name)
    assert all(len(v) == 1 for v in where.values())
    assert all(splits[s] for s in ("train", "val", "test"))
    assert split_indices(src, seed=5) == splits and split_indices(src, seed=6) != splits


def test_augmentation_is_reproducible_by_seed(synth_data):
    src = LocalFolderSource(synth_data)
    aug = TrainAugment(AugConfig(blur_prob=0.5, color_jitter_prob=0.5, jpeg_quality=(30, 100)))
    a = DetectionDataset([(src, i) for i in range(4)], augment=aug, seed=1)
    b = DetectionDataset([(src, i) for i in range(4)], augment=aug, seed=1)
    c = DetectionDataset([(src, i) for i in range(4)], augment=aug, seed=2)
    assert all(torch.equal(a[k][0], b[k][0]) for k in range(4))
    assert not all(torch.equal(a[k][0], c[k][0]) for k in range(4))
    a.set_epoch(1)
    assert not all(torch.equal(a[k][0], b[k][0]) for k in range(4))  # a new epoch draws new augmentations


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_each_epoch_reaches_persistent_workers(synth_data, context):
    """The training loader keeps its workers from one epoch to the next (``persistent_workers``),
    so ``set_epoch`` must reach them: before it did, every epoch repeated the first epoch's
    augmentation of each picture. What the workers draw for an epoch is what the process
    itself draws for it."""
    from torch.utils.data import DataLoader

    from bitmind.training.trainer import loader_kwargs

    src = LocalFolderSource(synth_data)
    aug = TrainAugment(AugConfig(blur_prob=0.5, color_jitter_prob=0.5, jpeg_quality=(30, 100)))
    items = [(src, i) for i in range(4)]
    ds = DetectionDataset(items, augment=aug, seed=1)
    kw = loader_kwargs(TrainConfig(workers=2), torch.device("cpu"))
    assert kw["persistent_workers"]
    loader = DataLoader(ds, batch_size=2, shuffle=False, multiprocessing_context=context, **kw)
    reference = DetectionDataset(items, augment=aug, seed=1)
    drawn = []
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        x = torch.cat([batch[0] for batch in loader])
        reference.set_epoch(epoch)
        assert torch.equal(x, torch.stack([reference[k][0] for k in range(4)]))
        drawn.append(x)
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[1], drawn[2])


def test_sensor_noise_is_camera_like_seeded_and_reachable_from_the_config():
    """Shot + read noise: ``sigma`` levels at mid grey, more in highlights than in shadows,
    the same for the same seed; ``--aug_noise_prob`` switches it on in training."""
    import numpy as np

    from bitmind.image_transforms import sensor_noise
    from bitmind.training.config import TrainConfig

    def std_at(level, sigma=4.0, seed=0):
        img = Image.new("RGB", (128, 128), (level,) * 3)
        out = np.asarray(sensor_noise(img, random.Random(seed), sigma), dtype=np.float64)
        return out.std(), out

    mid, a = std_at(128)
    assert 3.4 < mid < 4.6  # sigma at mid grey (rounding to 8 bits adds little)
    assert std_at(40)[0] < mid < std_at(200)[0]  # photon noise grows with the signal
    assert np.array_equal(a, std_at(128)[1]) and not np.array_equal(a, std_at(128, seed=1)[1])
    chans = a.reshape(-1, 3) - 128.0
    assert 0.2 < np.corrcoef(chans.T)[0, 1] < 0.6  # partly shared by the channels (luma), partly not
    cfg = TrainConfig(aug_noise_prob=0.5, aug_noise_sigma=[2.0, 3.0]).aug_config()
    assert cfg.noise_prob == 0.5 and cfg.noise_sigma == (2.0, 3.0)
    aug = TrainAugment(AugConfig(validator_prob=0.0, jpeg_prob=0.0, noise_prob=1.0, noise_sigma=(5.0, 5.0)))
    flat = Image.new("RGB", (256, 256), (128, 128, 128))
    assert 4.0 < np.asarray(aug(flat, random.Random(0)), dtype=np.float64).std() < 6.0
    assert np.asarray(TrainAugment(AugConfig(validator_prob=0.0, jpeg_prob=0.0))(flat, random.Random(0))).std() == 0


def test_validator_pipeline_output_is_what_validators_send(synth_data):
    """The challenge pipeline itself: 20% plain, else rotation within +-20 degrees, a square
    random resized crop of 20-100% of the (centre-cropped) picture, independent horizontal
    and vertical flips; then a JPEG round trip at quality 75, of exactly that picture."""
    import numpy as np
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF

    from bitmind.image_transforms import CenterCropShortSide, RandomAugment, base_pil, jpeg_roundtrip

    img = Image.open(next((synth_data / "real" / "synth").iterdir())).convert("RGB").resize((300, 200))
    # the random parameters: their ranges and rates
    draws = [RandomAugment().sample(200, 200, random.Random(seed)) for seed in range(400)]
    angles = [d["angle"] for d in draws]
    assert all(-20 <= a <= 20 for a in angles) and min(angles) < -15 and max(angles) > 15
    scales = []
    for d in draws:
        top, left, ch, cw = d["crop"]
        assert ch == cw and 0 <= top <= 200 - ch and 0 <= left <= 200 - cw  # square, inside the picture
        scales.append(ch * cw / 200 ** 2)
    assert min(scales) >= 0.2 - 0.01 and max(scales) <= 1.0 and min(scales) < 0.3 and max(scales) > 0.85
    for key in ("hflip", "vflip"):
        assert 0.4 < np.mean([d[key] for d in draws]) < 0.6
    # the pipeline: replaying its RNG rebuilds each challenge exactly, JPEG 75 included
    pipe, plain, seeds = ValidatorPipeline(), 0, range(60)
    for seed in seeds:
        out = pipe(img, random.Random(seed))
        assert out.size == (256, 256) and out.mode == "RGB"
        r = random.Random(seed)
        if r.random() < 0.2:
            plain += 1
            expected, factor = base_pil(img, 256), 256 / 200
        else:
            square = CenterCropShortSide()(img)
            d = RandomAugment().sample(square.width, square.height, r)
            factor = 256 / d["crop"][2]
            expected = TF.rotate(square, d["angle"], interpolation=T.InterpolationMode.NEAREST)
            expected = TF.resized_crop(expected, *d["crop"], [256, 256], interpolation=T.InterpolationMode.BILINEAR, antialias=True)
            expected = TF.vflip(expected) if d["vflip"] else expected
            expected = TF.hflip(expected) if d["hflip"] else expected
        assert np.array_equal(np.asarray(out), np.asarray(jpeg_roundtrip(expected, 75))), seed
        assert not np.array_equal(np.asarray(out), np.asarray(expected))  # the JPEG round trip did happen
        # resize_factor replays the same draws without pixels: 256 / short side when plain,
        # 256 / crop side otherwise, and leaves the RNG where apply leaves it
        r1, r2 = random.Random(seed), random.Random(seed)
        assert pipe.resize_factor(*img.size, r1) == pytest.approx(factor)
        pipe.apply(img, r2)
        assert r1.getstate() == r2.getstate()
    assert 0.08 < plain / len(seeds) < 0.35


@pytest.mark.slow
@pytest.mark.process
def test_torchrun_gloo_two_processes(synth_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "base_miner" / "NPR" / "train_detector.py"), "--data", str(synth_data), "--epochs", "1",
           "--batch_size", "4", "--workers", "0", "--device", "cpu", "--checkpoints_dir", str(tmp_path), "--name", "ddp",
           "--val_fraction", "0.25", "--test_fraction", "0.15", "--progress", "false", *TINY]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    run = tmp_path / "ddp"
    hist = json.loads((run / "history.json").read_text())
    assert len(hist) == 1  # rank 0 alone wrote the history, once
    lm = load_model(run / "model_epoch_best.pth")
    assert not any(k.startswith("module.") for k in lm.model.state_dict())


def test_script_runs_from_its_own_folder(synth_data, tmp_path):
    """`cd base_miner/NPR && python train_detector.py` works as the guide says."""
    cmd = [sys.executable, "train_detector.py", "--data", str(synth_data), "--epochs", "1", "--batch_size", "8",
           "--workers", "0", "--device", "cpu", "--checkpoints_dir", str(tmp_path), "--name", "cwd",
           "--val_fraction", "0.25", "--test_fraction", "0.15", "--progress", "false", "--max_steps_per_epoch", "2", *TINY]
    r = subprocess.run(cmd, cwd=REPO / "base_miner" / "NPR", env={**os.environ, "OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "cwd" / "model_epoch_best.pth").is_file()


def test_aligned_fakes_keep_stem_and_size(tmp_path):
    from bitmind.training.aligned_fakes import build_from_state_dict, make_aligned_fakes

    from validator_synth import tiny_taesd_weights

    # A random tiny encoder/decoder in the TAESD layout, saved like the real weights.
    wdir = tiny_taesd_weights(tmp_path / "w")
    dec = build_from_state_dict(torch.load(wdir / "taef2_decoder.pth", weights_only=True), decoder=True)
    assert isinstance(dec[3], torch.nn.Upsample)  # the parameter-free gap is the 2x up-sampling
    real = tmp_path / "data" / "real" / "cam"
    real.mkdir(parents=True)
    Image.new("RGB", (64, 64), (90, 120, 30)).save(real / "photo_1.jpg")
    stats = make_aligned_fakes(tmp_path / "data", tmp_path / "out", wdir)
    out = tmp_path / "out" / "fake" / "taef2_cam" / "photo_1.jpg"
    assert stats["written"] == 1 and out.is_file() and Image.open(out).size == (64, 64)
    # only one split's photos (e.g. test photos as fakes of a generator no training image came from)
    from bitmind.data import split_of

    for k in range(12):
        Image.new("RGB", (16, 16), (10 * k, 50, 90)).save(real / f"pic{k}_0.jpg")
    stats = make_aligned_fakes(tmp_path / "data", tmp_path / "out_test", wdir, split="test")
    expected = sorted(f"pic{k}_0.jpg" for k in range(12) if split_of(f"pic{k}") == "test") + (["photo_1.jpg"] if split_of("photo") == "test" else [])
    assert sorted(p.name for p in (tmp_path / "out_test").rglob("*.jpg")) == sorted(expected)
    assert stats["written"] == len(expected)


def test_the_epoch_record_shows_the_balanced_accuracy_that_picks_the_best_and_tensorboard_keeps_one_x_axis_per_tag(
        synth_data, tmp_path):
    """The best epoch is picked by balanced accuracy, but the log, history.json, curves and
    TensorBoard showed plain accuracy alone; and the epoch's lr went to the per-batch
    ``train/lr`` tag at the epoch's index (a chart of steps 2, 4, 0, 6, ...: operator audit)."""
    from bitmind.training.loop import epoch_record, log_epoch

    rec = epoch_record(3, 0.5, 1e-4, {"accuracy": 0.8, "real_accuracy": 0.9, "fake_accuracy": 0.5}, 10.0)
    assert rec["val_balanced_acc"] == pytest.approx(0.7) and rec["val_acc"] == 0.8

    class Recorder:
        def __init__(self):
            self.tags = {}

        def add_scalar(self, tag, value, step):
            self.tags[tag] = step

    w = Recorder()
    log_epoch(w, rec)
    assert w.tags["val/balanced_acc"] == 3 and w.tags["epoch/lr"] == 3 and not any(t.startswith("train/") for t in w.tags)
    assert epoch_record(0, 0.5, 1e-4, {"accuracy": 0.8}, 1.0)["val_balanced_acc"] is None  # one class: no balance
    summary = train(_cfg(synth_data, tmp_path, epochs=3))
    history = json.loads((tmp_path / "t" / "history.json").read_text())
    assert summary["best"]["epoch"] == max(history, key=lambda r: r["val_balanced_acc"])["epoch"]  # the first of the best
