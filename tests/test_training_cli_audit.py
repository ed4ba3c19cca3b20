"""An operator's audit of the single-run training command (``base_miner/NPR/train_detector.py``)
on a CPU: what the command does with a damaged or foreign file, a run folder it cannot
write, an odd ``--name`` and Ctrl-C. Each case was a traceback or a silent surprise before;
each is now one ``error:`` line and exit status 2 (a usage error, before the data is read), or
for Ctrl-C one line and 130."""
from __future__ import annotations

import importlib.util
import logging
import struct
import zlib
from pathlib import Path

import pytest
import torch

from bitmind.training import parse_config, train
from bitmind.training import trainer
from train_helpers import tiny_config
from validator_synth import make_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("audit"), n_per_class=12, seed=5, size=48)


@pytest.fixture(scope="module")
def entry():
    """``base_miner/NPR/train_detector.py`` as a module (its ``main`` runs in this process)."""
    spec = importlib.util.spec_from_file_location("train_detector_audit", REPO / "base_miner" / "NPR" / "train_detector.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(data: Path, out: Path, *more: str, tiny: bool = True) -> list[str]:
    net = ["--layers", "1", "1", "--width", "8"] if tiny else []
    return ["--data", str(data), "--checkpoints_dir", str(out), "--name", "t", "--epochs", "1", "--batch_size", "8",
            *net, "--workers", "0", "--progress", "false", "--device", "cpu", "--val_fraction", "0.25",
            "--test_fraction", "0.15", *more]


def _no_data(monkeypatch) -> None:
    """Reading the data fails the test: the command must stop before it."""
    def read(cfg, **_kw):
        raise AssertionError("the data was read before the error")

    monkeypatch.setattr(trainer, "build_datasets", read)


def _run(entry, argv, capsys) -> tuple[int, str]:
    """``main(argv)``: its exit status and what it wrote to stderr (no traceback may escape)."""
    try:
        entry.main(argv)
    except SystemExit as ex:
        return ex.code, capsys.readouterr().err
    except KeyboardInterrupt:  # escaping, it would end the test session: a failure instead
        pytest.fail("KeyboardInterrupt escaped main (a traceback for the operator)")
    pytest.fail("main returned without an exit status")


def test_init_from_weights_that_do_not_fit_stop_before_the_data(data, tmp_path, capsys):
    # a state dict that says nothing of its network is read as the default NPR; its weights do
    # not fit it: a RuntimeError listing every key, once the data had been read
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv1.weight": torch.zeros(3), "head.bias": torch.zeros(1)}, foreign)
    with pytest.raises(SystemExit) as ex:
        parse_config(_args(tmp_path / "no_data_needed", tmp_path, "--init_from", str(foreign), tiny=False))
    err = capsys.readouterr().err
    assert ex.value.code == 2
    assert "do not fit the network" in err and "head.bias" in err and "conv1.weight" in err, err
    assert len(err.strip().splitlines()[-1]) < 600  # one line, not every key of the network


def test_resume_from_a_damaged_state_is_one_line(data, tmp_path, entry, capsys, monkeypatch):
    train(tiny_config(data, tmp_path, epochs=1))
    state = tmp_path / "t" / "state_last.pt"
    state.write_bytes(state.read_bytes()[:3000])  # a copy cut short
    _no_data(monkeypatch)
    code, err = _run(entry, _args(data, tmp_path, "--resume", "--epochs", "2"), capsys)
    assert code == 2 and "error: --resume" in err and "cannot be read" in err and "Traceback" not in err, err
    # torch's reader appends a paragraph of advice: the cause ends with a sentence, not cut inside one
    assert "file is)" not in err and "damaged; restore it" in err, err
    state.write_bytes(b"")
    code, err = _run(entry, _args(data, tmp_path, "--resume", "--epochs", "2"), capsys)
    assert code == 2 and "cannot be read" in err, err


def test_resume_with_weights_of_another_network_is_one_line(data, tmp_path, entry, capsys):
    train(tiny_config(data, tmp_path, epochs=1))
    (tmp_path / "t" / "opt.json").unlink()  # nothing says how the run was built: the command line's width is used
    code, err = _run(entry, [*_args(data, tmp_path, "--resume", "--epochs", "2"), "--width", "16"], capsys)
    assert code == 2 and "do not fit the network" in err and "Traceback" not in err, err


def test_a_run_folder_that_is_a_file_is_refused_before_the_data(data, tmp_path, entry, capsys, monkeypatch):
    (tmp_path / "t").write_text("not a folder")
    _no_data(monkeypatch)
    code, err = _run(entry, _args(data, tmp_path), capsys)
    assert code == 2 and "is a file, not a run folder" in err, err
    assert (tmp_path / "t").read_text() == "not a folder"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, where no file can be made")
def test_a_run_folder_that_cannot_be_written_is_refused_before_the_data(data, tmp_path, entry, capsys, monkeypatch):
    _no_data(monkeypatch)
    code, err = _run(entry, _args(data, Path("/proc/no_such_runs")), capsys)
    assert code == 2 and "cannot write the run folder" in err and "Traceback" not in err, err


@pytest.mark.parametrize("name", ["", ".", "/tmp/elsewhere_run", "../outside"])
def test_a_name_that_leaves_the_checkpoints_dir_is_a_usage_error(data, tmp_path, name, capsys):
    # --name '' wrote the run into checkpoints_dir itself (and --overwrite emptied it); an
    # absolute name or '..' wrote it anywhere on the disk
    argv = _args(data, tmp_path)
    argv[argv.index("--name") + 1] = name
    with pytest.raises(SystemExit) as ex:
        parse_config(argv)
    assert ex.value.code == 2 and "--name" in capsys.readouterr().err


def test_nested_names_still_work(data, tmp_path):
    argv = _args(data, tmp_path)
    argv[argv.index("--name") + 1] = "sweep/variant"  # as a sweep names its variants
    assert parse_config(argv).run_dir == tmp_path / "sweep" / "variant"


def _press_ctrl_c(times: int):
    """A ``train_one_epoch`` that presses Ctrl-C ``times`` times as the first epoch starts."""
    import os
    import signal

    real = trainer.train_one_epoch

    def epoch(*a, **kw):
        for _ in range(times):
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **kw)

    return epoch


def test_a_second_ctrl_c_ends_in_one_line_and_status_130(data, tmp_path, entry, capsys, monkeypatch):
    monkeypatch.setattr(trainer, "train_one_epoch", _press_ctrl_c(2))
    code, err = _run(entry, _args(data, tmp_path, "--epochs", "3"), capsys)
    assert code == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "stopped (Ctrl-C) before any epoch was saved" in err, err  # the epoch in progress was the first


def test_ctrl_c_after_a_saved_epoch_says_how_to_go_on(data, tmp_path, entry, capsys, monkeypatch):
    train(tiny_config(data, tmp_path, epochs=1))

    def interrupted(cfg, **_kw):  # Ctrl-C while a resumed run reads its data (no handler of the trainer's yet)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "build_datasets", interrupted)
    code, err = _run(entry, _args(data, tmp_path, "--resume", "--epochs", "3"), capsys)
    assert code == 130 and "--resume goes on from there" in err and "Traceback" not in err, err


def test_resuming_a_finished_run_says_there_is_nothing_to_train(data, tmp_path, caplog):
    train(tiny_config(data, tmp_path, epochs=1))
    logging.getLogger(trainer.__name__).addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=trainer.__name__):
            summary = train(tiny_config(data, tmp_path, epochs=1, resume=True))
    finally:
        logging.getLogger(trainer.__name__).removeHandler(caplog.handler)
    assert [h["epoch"] for h in summary["history"]] == [0]
    assert "no epoch left to train" in caplog.text, caplog.text


def _huge_png_header() -> bytes:
    """A PNG that claims 100,000 x 100,000 pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def test_bad_pictures_among_good_ones_are_skipped_with_a_warning(data, tmp_path, caplog):
    # a guard, not a mend: the audit found these skipped and counted, never a crash
    import shutil

    root = tmp_path / "d"
    shutil.copytree(data, root)
    good = next((root / "real" / "synth").glob("*.png")).read_bytes()
    for i in range(3):  # distinct stems, so most land in the training split
        (root / "real" / "synth" / f"cut{i}.png").write_bytes(good[: len(good) // 2])
        (root / "fake" / "synth" / f"empty{i}.jpg").write_bytes(b"")
        (root / "fake" / "synth" / f"text{i}.png").write_bytes(b"not a picture\n" * 20)
        (root / "real" / "synth" / f"huge{i}.png").write_bytes(_huge_png_header())
    for name in ("bitmind.data.dataset", trainer.__name__):
        logging.getLogger(name).addHandler(caplog.handler)
    try:
        # per logger: bittensor's logging, set up by tests run earlier, leaves every logger at CRITICAL
        with caplog.at_level(logging.WARNING, logger="bitmind.data.dataset"), \
                caplog.at_level(logging.WARNING, logger=trainer.__name__):
            summary = train(tiny_config(root, tmp_path, epochs=1))
    finally:
        for name in ("bitmind.data.dataset", trainer.__name__):
            logging.getLogger(name).removeHandler(caplog.handler)
    assert "stopped" not in summary and (tmp_path / "t" / "model_epoch_best.pth").exists()
    assert "skipping unreadable image" in caplog.text and "unreadable training images" in caplog.text


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_saved_epoch(data, tmp_path, entry, capsys, monkeypatch):
    real = trainer.atomic_write
    calls = {"n": 0}

    def full_disk(path, writer, **kw):  # the state of the second epoch: torch.save's error on a full disk
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 77760 vs 77652")
        return real(path, writer, **kw)

    monkeypatch.setattr(trainer, "atomic_write", full_disk)
    code, err = _run(entry, _args(data, tmp_path, "--epochs", "3"), capsys)
    assert code == 1 and "error: epoch 1: cannot write to" in err and "MiB free" in err and "--resume" in err, err
    assert "Traceback" not in err
    state = torch.load(tmp_path / "t" / "state_last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 0  # the last saved epoch, whole: the run resumes from it


def test_a_full_disk_at_the_first_state_says_the_best_checkpoint_is_not_to_be_served(data, tmp_path, entry, capsys,
                                                                                       monkeypatch):
    """The first epoch's model_epoch_best.pth was written, its state not: the line said "stopped
    before any epoch was saved" beside that file, uncalibrated, which an operator could ship."""
    def full_disk(path, writer, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 77760 vs 77652")

    monkeypatch.setattr(trainer, "atomic_write", full_disk)
    code, err = _run(entry, _args(data, tmp_path, "--epochs", "2"), capsys)
    assert (tmp_path / "t" / "model_epoch_best.pth").exists() and not (tmp_path / "t" / "state_last.pt").exists()
    assert code == 1 and "uncalibrated (do not serve it)" in err and "--overwrite" in err and "Traceback" not in err, err
