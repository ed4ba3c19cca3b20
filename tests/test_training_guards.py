"""The trainer never loses a run's work and turns bad input into a clear error: a folder that
holds a run is not replaced silently, a resumed run keeps its options, a diverging run
stops with its last finite checkpoints, one-class or unreadable data and impossible options
are refused before training, and images right under ``real/`` are read."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from bitmind.checkpoint import read_checkpoint
from bitmind.data import LocalFolderSource
from bitmind.training import TrainConfig, parse_config, train
from bitmind.training.run_folder import RunFolderError
from bitmind.training.trainer import TrainingDataError
from train_helpers import tiny_config
from validator_synth import make_folder

REPO = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(REPO / "base_miner" / "NPR" / "train_detector.py")]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("guards"), n_per_class=12, seed=5, size=48)


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    return tiny_config(data, out, **{"epochs": 1, **kw})


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _args(data: Path, out: Path, *more: str) -> list[str]:
    return ["--data", str(data), "--checkpoints_dir", str(out), "--name", "t", "--epochs", "1", "--batch_size", "8",
            "--layers", "1", "1", "--width", "8", "--workers", "0", "--progress", "false", "--device", "cpu",
            "--val_fraction", "0.25", "--test_fraction", "0.15", "--calibration_min_per_class", "0", *more]


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(data, tmp_path):
    torch.set_num_threads(1)
    train(_cfg(data, tmp_path))
    run = tmp_path / "t"
    before = {f: _digest(run / f) for f in ("model_epoch_best.pth", "state_last.pt", "opt.json")}
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(_cfg(data, tmp_path, lr=1e-3))
    assert {f: _digest(run / f) for f in before} == before  # nothing of the first run was touched
    # --overwrite starts over: the earlier run's files and TensorBoard events are gone, not mixed in
    # (by content: an event file's name holds the second it was opened, so the new run's can
    # carry the earlier one's name; the earlier run's records must not lead any file now)
    events_before = [p.read_bytes() for p in run.glob("events.out.tfevents.*")]
    assert events_before and all(events_before)
    summary = train(_cfg(data, tmp_path, lr=1e-3, overwrite=True))
    assert len(summary["history"]) == 1
    assert json.loads((run / "opt.json").read_text())["lr"] == 1e-3
    assert not any(p.read_bytes().startswith(old) for p in run.glob("events.out.tfevents.*") for old in events_before)


def test_a_run_that_fails_on_its_data_leaves_the_folder_as_it_was(data, tmp_path):
    train(_cfg(data, tmp_path))
    opt = (tmp_path / "t" / "opt.json").read_text()
    with pytest.raises(TrainingDataError, match="typo") as e:
        train(_cfg(tmp_path / "typo", tmp_path, name="t", resume=True, lr=0.5))
    assert "give all of them again with --data NEW_PATH" in str(e.value)  # a resumed run's roots moved: how to go on
    assert (tmp_path / "t" / "opt.json").read_text() == opt
    with pytest.raises(TrainingDataError):  # a new run on a missing root makes no folder
        train(_cfg(tmp_path / "typo", tmp_path, name="new"))
    assert not (tmp_path / "new").exists()


def test_resume_needs_a_state_and_keeps_the_runs_options(data, tmp_path, caplog, listen, capsys):
    with pytest.raises(RunFolderError, match="nothing to resume"):
        train(_cfg(data, tmp_path, resume=True))
    first = _args(data, tmp_path, "--lr", "0.001", "--lr_schedule", "step", "--lr_decay", "0.5", "--lr_decay_every", "1")
    train(parse_config(first))
    # resumed with only what says where the run is: the schedule and the network come from opt.json
    cfg = parse_config(_args(data, tmp_path, "--resume", "--epochs", "2"))
    assert (cfg.lr, cfg.lr_decay, cfg.lr_decay_every) == (0.001, 0.5, 1)
    summary = train(cfg)
    assert [h["epoch"] for h in summary["history"]] == [0, 1]
    assert summary["history"][1]["lr"] == pytest.approx(0.0005)  # the saved step schedule, not the default's
    # a network option that contradicts the saved weights is a usage error, not a size-mismatch traceback
    with pytest.raises(SystemExit):
        parse_config(_args(data, tmp_path, "--resume", "--width", "16"))
    assert "width=8" in capsys.readouterr().err
    with pytest.raises(RunFolderError, match="input"):
        train(_cfg(data, tmp_path, resume=True, epochs=3, input="hp"))
    # another learning rate is allowed, and said
    listen("bitmind.training.run_folder")
    parse_config(_args(data, tmp_path, "--resume", "--lr", "0.002"))
    assert "lr 0.001 -> 0.002" in caplog.text


def test_a_diverging_run_stops_and_keeps_the_last_finite_checkpoints(data, tmp_path):
    torch.set_num_threads(1)
    train(_cfg(data, tmp_path))
    run = tmp_path / "t"
    kept = {f: _digest(run / f) for f in ("model_last.pth", "state_last.pt")}
    best_weights = read_checkpoint(run / "model_epoch_best.pth")[0]

    def diverge(self, *a, **kw):  # a step that blows up, as a far too large learning rate does
        with torch.no_grad():
            for p in self.model.parameters():
                p.fill_(float("nan"))
        self.loss_sum, self.loss_n = float("nan"), 1
        return torch.tensor(float("nan"))

    from bitmind.training import loop

    mp = pytest.MonkeyPatch()
    mp.setattr(loop.Learner, "step", diverge)
    try:
        summary = train(_cfg(data, tmp_path, resume=True, epochs=3))
    finally:
        mp.undo()
    assert summary["stopped"] == "non-finite"
    assert len(summary["history"]) == 1  # the diverged epoch is not recorded
    assert {f: _digest(run / f) for f in kept} == kept
    state, meta = read_checkpoint(run / "model_epoch_best.pth")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert all(torch.equal(state[k], v) for k, v in best_weights.items())
    assert "calibration" in meta.get("metrics", {})  # the best is still calibrated


def test_the_command_line_reports_bad_input_in_one_line(data, tmp_path):
    only_real = tmp_path / "only_real"
    shutil.copytree(data / "real", only_real / "real")
    unreadable = tmp_path / "unreadable"
    for cls in ("real", "fake"):
        (unreadable / cls / "x").mkdir(parents=True)
        for i in range(10):
            (unreadable / cls / "x" / f"{cls}{i}.jpg").write_bytes(b"not a picture" * (i + 1))
    cases = {
        "missing root": (_args(tmp_path / "nope", tmp_path / "c1"), 2, "data folder not found"),
        "one class": (_args(only_real, tmp_path / "c2"), 2, "no fake pictures"),
        "nothing readable": (_args(unreadable, tmp_path / "c3"), 2, "no training picture could be read"),
        "infinite lr": (_args(data, tmp_path / "c4", "--lr", "inf"), 2, "--lr must be positive"),
        "no validation": (_args(data, tmp_path / "c5", "--val_fraction", "0"), 2, "--val_fraction must be above 0"),
        "log_every 0": (_args(data, tmp_path / "c6", "--log_every", "0"), 2, "--log_every must be at least 1"),
        "negative patience": (_args(data, tmp_path / "c7", "--early_stop_patience", "-1"), 2, "0 or more"),
        "negative decay": (_args(data, tmp_path / "c8", "--lr_decay", "-1"), 2, "--lr_decay must be positive"),
        "no GPU": (_args(data, tmp_path / "c9", "--device", "cuda:99"), 2, "--device"),
        "checkpoints_dir a file": (_args(data, REPO / "README.md"), 2, "README.md is a file, not a folder"),
        "checkpoints_dir under a file": (_args(data, REPO / "README.md" / "runs"), 2, "README.md is a file"),
        # said only "no state_last.pt", as if --resume alone had been given
        "resume and overwrite": (_args(data, tmp_path / "c10", "--resume", "--overwrite"), 2, "pass one of them"),
        "data a file": (_args(REPO / "README.md", tmp_path / "c11"), 2, "README.md is a file, not a folder of real/"),
    }
    for name, (argv, code, text) in cases.items():
        res = subprocess.run([*TRAIN, *argv], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert res.returncode == code, (name, res.returncode, res.stderr[-2000:])
        assert text in res.stderr, (name, res.stderr[-2000:])
        assert "Traceback" not in res.stderr, (name, res.stderr[-2000:])


def test_a_validation_split_of_one_class_trains_without_a_calibration(data, tmp_path, caplog, listen):
    # every real picture in the training split: a fake-only validation split (a split by stem, seeded)
    cfg = _cfg(data, tmp_path)
    from bitmind.data import split_indices

    src = LocalFolderSource(data)
    fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    val_reals = [i for i in split_indices(src, cfg.split_seed, fractions)["val"] if src.label(i) == 0]
    moved = tmp_path / "data"
    shutil.copytree(data, moved)
    for i in val_reals:  # move the validation split's real photos out
        Path(str(src.path(i)).replace(str(data), str(moved))).unlink()
    listen("bitmind.training.trainer")
    summary = train(_cfg(moved, tmp_path, calibrate=True))
    assert "calibration" not in summary
    assert "only fake pictures" in caplog.text
    meta = read_checkpoint(tmp_path / "t" / "model_epoch_best.pth")[1]
    assert "calibration" not in meta.get("metrics", {})


def test_images_right_under_a_class_folder_are_a_source(tmp_path):
    for cls in ("real", "fake"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(tmp_path / "d" / cls / f"{cls}_{i}.png")
    (tmp_path / "d" / "real" / "sub").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "d" / "real" / "sub" / "x.png")
    src = LocalFolderSource(tmp_path / "d")
    names = sorted({src.source_name(i) for i in range(len(src))})
    assert names == ["fake/d", "real/d", "real/sub"]
    assert sorted(src.label(i) for i in range(len(src))) == [0, 0, 0, 0, 1, 1, 1]


def test_the_learning_rate_is_printed_so_a_fine_tuning_rate_shows(data, tmp_path, capsys):
    train(_cfg(data, tmp_path, lr=2e-5))
    out = capsys.readouterr().out
    assert "lr=2e-05" in out  # four decimals showed 0.0000


def test_a_fine_tune_resumes_after_the_file_it_started_from_is_gone(data, tmp_path):
    train(_cfg(data, tmp_path, name="base"))
    start = tmp_path / "start.pth"
    shutil.copy(tmp_path / "base" / "model_epoch_best.pth", start)
    train(parse_config(_args(data, tmp_path, "--init_from", str(start), "--lr", "5e-5")))
    start.unlink()  # moved away or replaced since: the resumed run's weights are its own state
    summary = train(parse_config(_args(data, tmp_path, "--resume", "--epochs", "2")))
    assert [h["epoch"] for h in summary["history"]] == [0, 1]
    assert summary["history"][1]["lr"] <= 5e-5  # the fine-tune's rate, from opt.json


def test_a_sweep_folder_holding_a_sweep_is_refused_unless_overwritten(data, tmp_path):
    spec = {"base": {"data": [str(data)], "checkpoints_dir": str(tmp_path), "name": "s", "epochs": 1, "batch_size": 8,
                     "workers": 0, "progress": False, "device": "cpu", "val_fraction": 0.25, "test_fraction": 0.15,
                     "layers": [1, 1], "width": 8},
            "variants": {"a": {}}, "ensemble_members": 0}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    sweep = [sys.executable, "-m", "bitmind.training.sweep", "--spec", str(spec_file)]
    first = subprocess.run(sweep, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert first.returncode == 0, first.stderr[-2000:]
    best = tmp_path / "s" / "a" / "model_epoch_best.pth"
    kept = _digest(best)
    again = subprocess.run(sweep, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 2 and "already holds a sweep" in again.stderr and "Traceback" not in again.stderr
    assert _digest(best) == kept
    # the LOGO entry point refuses it too, before its logo_spec.json replaces the earlier one
    (tmp_path / "s" / "logo_spec.json").write_text("earlier")
    logo_file = tmp_path / "logo.json"
    logo_file.write_text(json.dumps({"base": spec["base"], "recipes": {"a": {}}, "folds": [], "ensemble_members": 0}))
    logo = subprocess.run([sys.executable, "benchmarks/generalisation.py", "train", "--spec", str(logo_file),
                           "--checkpoints_dir", str(tmp_path), "--name", "s"], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert logo.returncode == 2 and "already holds a sweep" in logo.stderr, logo.stderr[-2000:]
    assert (tmp_path / "s" / "logo_spec.json").read_text() == "earlier"
    replaced = subprocess.run([*sweep, "--overwrite"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert best.exists() and json.loads((tmp_path / "s" / "sweep.json").read_text())["variants"]["a"]


def _interrupting(presses: int):
    """A ``train_one_epoch`` that presses Ctrl-C ``presses`` times during the first epoch it trains."""
    import os
    import signal

    from bitmind.training import trainer

    real = trainer.train_one_epoch
    state = {"pressed": False}

    def epoch(*a, **kw):
        if not state["pressed"]:
            state["pressed"] = True
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **kw)

    return epoch


def test_ctrl_c_finishes_the_epoch_saves_and_calibrates_then_a_second_press_stops_at_once(data, tmp_path, monkeypatch):
    import signal

    from bitmind.training import trainer

    monkeypatch.setattr(trainer, "train_one_epoch", _interrupting(1))
    summary = train(_cfg(data, tmp_path, epochs=3))
    assert summary["stopped"] == "interrupted"
    assert [h["epoch"] for h in summary["history"]] == [0]  # the epoch in progress was finished, no more
    run = tmp_path / "t"
    assert (run / "state_last.pt").exists() and (run / "summary.json").exists()
    assert "calibration" in summary  # the best is calibrated, as at a normal end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is gone after the run
    resumed = train(_cfg(data, tmp_path, epochs=2, resume=True))  # and the run goes on from there
    assert [h["epoch"] for h in resumed["history"]] == [0, 1] and "stopped" not in resumed
    # pressed twice: stop now, and Ctrl-C works as usual afterwards
    monkeypatch.setattr(trainer, "train_one_epoch", _interrupting(2))
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data, tmp_path, name="twice", epochs=3))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_overwrite_with_a_typo_in_the_data_keeps_the_earlier_run(data, tmp_path):
    train(_cfg(data, tmp_path))
    run = tmp_path / "t"
    before = {f.name: _digest(f) for f in run.iterdir() if f.is_file()}
    with pytest.raises(TrainingDataError):
        train(_cfg(tmp_path / "typo", tmp_path, overwrite=True))
    assert {f.name: _digest(f) for f in run.iterdir() if f.is_file()} == before


def test_resume_refuses_another_split(data, tmp_path):
    train(_cfg(data, tmp_path))
    with pytest.raises(RunFolderError, match="val_fraction"):  # it would validate on pictures it trained on
        train(_cfg(data, tmp_path, resume=True, epochs=2, val_fraction=0.3))


def test_an_epoch_without_a_readable_validation_picture_is_never_the_best():
    from bitmind.training.loop import selection_score

    assert selection_score({}) == -1.0  # was a KeyError after the epoch had trained
    assert selection_score({"accuracy": 0.5, "real_accuracy": 1.0, "fake_accuracy": 0.5}) == 0.75


def _ddp_worker(rank: int, root: str, port: int, out: str) -> None:
    import datetime
    import os

    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    from bitmind.training import trainer

    # one rank alone sees a diverged epoch (an fp16 step skipped on its shard, say)
    trainer.epoch_failure = lambda done, learner: "non-finite" if rank == 1 else None
    summary = train(_cfg(Path(root), Path(out), epochs=2, batch_size=4, balance="weight"))
    Path(out, f"rank{rank}.json").write_text(json.dumps({"stopped": summary.get("stopped")}))


def test_every_rank_stops_together_when_one_rank_diverges(data, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_ddp_worker, args=(r, str(data), port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
    assert not hung, "a rank was left waiting in a collective"
    assert [json.loads((tmp_path / f"rank{r}.json").read_text())["stopped"] for r in range(2)] == ["non-finite"] * 2



def test_loader_workers_leave_ctrl_c_to_the_trainer():
    """Ctrl-C in a terminal reaches the whole process group: a worker started by spawn (macOS,
    Windows) would die of it mid-epoch, and one forked after the trainer's handler was installed
    would print the trainer's message once per worker."""
    code = ("import signal; from bitmind.data.dataset import worker_init; worker_init(0); "
            "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.stdout.strip() == "True", res.stderr[-2000:]


def test_the_command_line_shows_each_epoch_once(data, tmp_path):
    """train_detector.py configures logging, and the trainer both printed and logged the sets,
    every epoch line and the calibration: each showed twice on the operator's console."""
    res = subprocess.run([*TRAIN, *_args(data, tmp_path, "--epochs", "2")], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    console = res.stdout + res.stderr
    for line in ("epoch=0 ", "epoch=1 ", "training set:", "validation set:", "calibration: T="):
        assert console.count(line) == 1, (line, console[-3000:])


def test_a_folder_another_run_is_writing_is_refused_and_a_killed_run_leaves_no_lock(data, tmp_path):
    """Two trainings with one --name both ran while the first had not saved an epoch yet (the
    folder checks look for saved files), and the folder ended with one's model and the other's
    options and history. The second is refused now, naming the first; the lock dies with its
    process, however it ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from bitmind.training.run_folder import hold_run_folder\n"
         f"with hold_run_folder(Path({str(tmp_path / 't')!r})):\n    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = subprocess.run([*TRAIN, *_args(data, tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        assert "being written by another run" in refused.stderr and f"pid {holder.pid}" in refused.stderr
        assert not (tmp_path / "t").exists()  # refused before anything was written
        spec = {"base": {"data": [str(data)], "checkpoints_dir": str(tmp_path), "name": "t", "epochs": 1,
                         "batch_size": 8, "workers": 0, "progress": False, "device": "cpu", "val_fraction": 0.25,
                         "test_fraction": 0.15, "layers": [1, 1], "width": 8}, "variants": {"a": {}}, "ensemble_members": 0}
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        sweep = subprocess.run([sys.executable, "-m", "bitmind.training.sweep", "--spec", str(tmp_path / "spec.json")],
                               capture_output=True, text=True, timeout=300, cwd=REPO)
        assert sweep.returncode == 2 and "being written by another run" in sweep.stderr, sweep.stderr[-2000:]
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
    summary = train(_cfg(data, tmp_path))
    assert len(summary["history"]) == 1 and (tmp_path / "t" / "model_epoch_best.pth").is_file()


def test_a_small_fine_tune_keeps_the_starting_files_calibration(data, tmp_path, caplog, listen):
    """A fine-tune of a calibrated file whose validation split is too small to fit one stored
    none and served raw logits (real photos kept 0.97 -> 0.87 in the operator audit): it keeps
    the starting file's, says so, and the record names where it came from."""
    from bitmind.calibration import store_calibration

    train(_cfg(data, tmp_path, name="base"))
    start = tmp_path / "start.pth"
    shutil.copy(tmp_path / "base" / "model_epoch_best.pth", start)
    store_calibration(start, {"temperature": 1.7, "logit_bias": -0.4, "method": "platt"})
    listen("bitmind.training.trainer")
    summary = train(_cfg(data, tmp_path, name="ft", init_from=str(start), calibrate=True, calibration_min_per_class=20))
    meta = read_checkpoint(tmp_path / "ft" / "model_epoch_best.pth")[1]
    assert (meta["temperature"], meta["logit_bias"]) == (1.7, -0.4)
    rec = meta["metrics"]["calibration"]
    assert rec["init_from"] == str(start) and "kept from --init_from" in rec["method"] and "fewer than 20" in rec["not_fitted"]
    assert summary["calibration"]["temperature"] == 1.7
    assert "keeps the calibration of --init_from" in caplog.text
    assert "it keeps the calibration of --init_from" in caplog.text  # said before the first epoch too


def test_a_fine_tune_keeps_the_calibration_its_starting_file_had_when_it_began(data, tmp_path, caplog, listen):
    """The starting file's calibration was read when the run ended: an operator who swapped a new
    ``base.pth`` in meanwhile gave the fine-tune the new file's, and a resumed run whose starting
    file had moved kept none. The run keeps its own copy from the start (``init_calibration.json``)."""
    from bitmind.calibration import store_calibration

    train(_cfg(data, tmp_path, name="base"))
    start = tmp_path / "start.pth"
    shutil.copy(tmp_path / "base" / "model_epoch_best.pth", start)
    store_calibration(start, {"temperature": 1.7, "logit_bias": -0.4, "method": "platt"})
    ft = dict(name="ft", init_from=str(start), calibrate=True, calibration_min_per_class=20)
    train(_cfg(data, tmp_path, **ft))
    saved = json.loads((tmp_path / "ft" / "init_calibration.json").read_text())
    assert (saved["temperature"], saved["logit_bias"], saved["init_from"]) == (1.7, -0.4, str(start))
    store_calibration(start, {"temperature": 3.0, "logit_bias": 0.9, "method": "platt"})  # another file swapped in
    train(_cfg(data, tmp_path, epochs=2, resume=True, **ft))
    meta = read_checkpoint(tmp_path / "ft" / "model_epoch_best.pth")[1]
    assert (meta["temperature"], meta["logit_bias"]) == (1.7, -0.4)
    start.unlink()  # moved away: the run's copy still holds what it started from, and names it
    train(_cfg(data, tmp_path, epochs=3, resume=True, **{**ft, "init_from": str(tmp_path / "other.pth")}))
    meta = read_checkpoint(tmp_path / "ft" / "model_epoch_best.pth")[1]
    assert meta["temperature"] == 1.7 and meta["metrics"]["calibration"]["init_from"] == str(start)
    # a damaged copy: said, raw logits kept, the run ends
    (tmp_path / "ft" / "init_calibration.json").write_text("{not json")
    listen("bitmind.training.trainer")
    train(_cfg(data, tmp_path, epochs=4, resume=True, **ft))
    assert "cannot keep the calibration of --init_from" in caplog.text and "init_calibration.json" in caplog.text


def test_a_validation_split_of_a_few_pictures_leaves_the_raw_logits_and_says_so(data, tmp_path, caplog, listen):
    """A fine-tune whose validation split held 1 real photo and 2 fakes stored T=0.05, b=+50
    (called better on those same three pictures), which called 81% of a test split's real photos
    fake (operator audit). Below --calibration_min_per_class nothing is fitted, and the run says
    how to calibrate on more data."""
    listen("bitmind.training.trainer")
    summary = train(_cfg(data, tmp_path, calibrate=True, calibration_min_per_class=20))  # 3 of each class in val
    assert "calibration" not in summary
    assert "calibration not fitted: only " in caplog.text and "fewer than 20 of a class" in caplog.text
    assert "bitmind.calibrate" in caplog.text and "keeps its raw logits" in caplog.text
    # said before the first epoch too, not only once the run has trained
    assert caplog.text.index("the best checkpoint will not be calibrated") < caplog.text.index("train_loss=")
    meta = read_checkpoint(tmp_path / "t" / "model_epoch_best.pth")[1]
    assert "temperature" not in meta and "calibration" not in meta.get("metrics", {})
    with pytest.raises(ValueError, match="calibration_min_per_class"):
        _cfg(data, tmp_path, calibration_min_per_class=-1).check()


def test_the_run_lock_stays_with_the_run_not_its_children_and_a_file_system_without_locks_runs_unguarded(
        tmp_path, monkeypatch, caplog):
    """A forked child (a DataLoader worker) shares the lock's open file: one that outlived the
    run kept the folder held. And any flock error read as "another run": on a file system
    without flock every training was refused (review)."""
    import errno
    import os
    import time

    from bitmind.training import run_folder

    folder = tmp_path / "t"
    ready, started = os.pipe()
    with run_folder.hold_run_folder(folder):
        pid = os.fork()
        if pid == 0:  # a child that outlives the block
            os.write(started, b"1")  # the fork hooks have run
            time.sleep(3)
            os._exit(0)
        os.read(ready, 1)
    try:
        with run_folder.hold_run_folder(folder):  # the run is over: the folder is free though the child lives
            pass
    finally:
        os.waitpid(pid, 0)

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(run_folder.fcntl, "flock", no_flock)
    with caplog.at_level("WARNING", logger=run_folder.__name__):
        with run_folder.hold_run_folder(folder):
            pass
    assert "would not be refused" in caplog.text
