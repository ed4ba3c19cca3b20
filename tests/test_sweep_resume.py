"""A sweep never loses its work: Ctrl-C stops it after an epoch with its state saved, and
``--resume`` goes on from there to the same result as a sweep that was never stopped; a
resumed sweep must be the same sweep; a variant that diverges stops alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bitmind.checkpoint import read_checkpoint
from bitmind.training import sweep as sweep_mod
from bitmind.training.run_folder import SWEEP_STATE, RunFolderError
from bitmind.training.sweep import SweepSpec, run_sweep
from validator_synth import make_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("sweep_resume"), n_per_class=12, seed=5, size=48)


def _spec_dict(data: Path, out: Path, name: str = "s", epochs: int = 4, **extra) -> dict:
    """Two variants (one with weight averaging on half of the pictures, one batch of them an
    epoch, each on a patch of its pictures), validated every epoch, small enough for the CPU in
    seconds."""
    return {"base": {"data": [str(data)], "checkpoints_dir": str(out), "name": name, "epochs": epochs, "batch_size": 8,
                     "workers": 0, "progress": False, "device": "cpu", "val_fraction": 0.25, "test_fraction": 0.15,
                     "layers": [1, 1], "width": 8, "lr_schedule": "cosine", "balance": "family"},
            "val_seeds": [0], "ensemble_members": 2,
            "variants": {"plain": {}, "avg_patch": {"swa_start": 1, "patch_size": 32, "seed": 3, "train_fraction": 0.5}},
            **extra}


def _spec(data: Path, out: Path, resume: bool = False, **kw) -> SweepSpec:
    return SweepSpec.from_dict(_spec_dict(data, out, **kw), resume=resume or None)


def _interrupt_during(epoch_to_stop: int, presses: int = 1):
    """A ``train_one_epoch`` that presses Ctrl-C ``presses`` times while training ``epoch_to_stop``."""
    real = sweep_mod.train_one_epoch

    def epoch(learners, loader, cfg, epoch, *a, **kw):
        if epoch == epoch_to_stop:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
        return real(learners, loader, cfg, epoch, *a, **kw)

    return epoch


def _histories(out: Path) -> dict:
    return {v: json.loads((out / v / "history.json").read_text()) for v in ("plain", "avg_patch")}


def test_ctrl_c_saves_the_state_and_resume_ends_where_an_unstopped_sweep_ends(data, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    whole = run_sweep(_spec(data, tmp_path / "whole"))
    out = tmp_path / "cut" / "s"
    monkeypatch.setattr(sweep_mod, "train_one_epoch", _interrupt_during(1))
    stopped = run_sweep(_spec(data, tmp_path / "cut"))
    monkeypatch.undo()
    assert stopped["stopped"] == "interrupted" and stopped["epochs_run"] == 2
    assert (out / SWEEP_STATE).exists()  # what --resume goes on from
    assert [r["epoch"] for r in _histories(out)["plain"]] == [0, 1]  # the epoch in progress was finished, no more
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is gone after the sweep
    for v in ("plain", "avg_patch"):  # every variant's best is calibrated, as at a normal end
        assert "temperature" in read_checkpoint(out / v / "model_epoch_best.pth")[1]
    assert json.loads((out / "sweep.json").read_text())["stopped"] == "interrupted"

    resumed = run_sweep(_spec(data, tmp_path / "cut", resume=True))
    assert "stopped" not in resumed and resumed["epochs"] == 4
    assert not (out / SWEEP_STATE).exists()  # ran to its end: nothing left to resume
    # the same stream, weights, optimiser, weight average and patches: the same sweep as one never stopped
    cut, ref = _histories(out), _histories(tmp_path / "whole" / "s")
    for v in ("plain", "avg_patch"):
        assert [r["epoch"] for r in cut[v]] == [0, 1, 2, 3]
        assert [r["train_loss"] for r in cut[v]] == pytest.approx([r["train_loss"] for r in ref[v]], abs=1e-6)
        assert [r["val_acc"] for r in cut[v]] == pytest.approx([r["val_acc"] for r in ref[v]], abs=1e-6)
        # (the weight average's batch-norm statistics too: from the epoch's own batches, which a resume has)
        assert [r["val_brier"] for r in cut[v]] == pytest.approx([r["val_brier"] for r in ref[v]], abs=1e-6)
        assert [bool(r.get("averaged")) for r in cut[v]] == [bool(r.get("averaged")) for r in ref[v]]
        assert resumed["variants"][v]["best"]["epoch"] == whole["variants"][v]["best"]["epoch"]
    a = read_checkpoint(out / "avg_patch" / "model_epoch_best.pth")[0]
    b = read_checkpoint(tmp_path / "whole" / "s" / "avg_patch" / "model_epoch_best.pth")[0]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in b)


def test_a_second_ctrl_c_stops_at_once(data, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(sweep_mod, "train_one_epoch", _interrupt_during(0, presses=2))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_spec(data, tmp_path))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_is_refused_without_a_state_or_for_another_sweep(data, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    with pytest.raises(RunFolderError, match="no sweep_state.pt"):
        run_sweep(_spec(data, tmp_path, resume=True))
    monkeypatch.setattr(sweep_mod, "train_one_epoch", _interrupt_during(0))
    run_sweep(_spec(data, tmp_path))
    monkeypatch.undo()
    state = (tmp_path / "s" / SWEEP_STATE).read_bytes()
    other = _spec_dict(data, tmp_path)
    other["variants"]["plain"] = {"lr": 0.01}
    with pytest.raises(RunFolderError, match=r"differs from the sweep's spec.json \(variants"):
        run_sweep(SweepSpec.from_dict(other, resume=True))
    with pytest.raises(RunFolderError, match="epochs: 4 -> 6"):
        run_sweep(_spec(data, tmp_path, resume=True, epochs=6))
    assert (tmp_path / "s" / SWEEP_STATE).read_bytes() == state  # a refused resume changes nothing
    # a new sweep into the folder is refused too, and names --resume
    with pytest.raises(RunFolderError, match="--resume"):
        run_sweep(_spec(data, tmp_path))
    # where it runs may change (the data may move, the device, the workers)
    moved = tmp_path / "moved"
    os.symlink(data, moved)
    again = _spec_dict(data, tmp_path)
    again["base"]["data"] = [str(moved)]
    again["base"]["progress"] = True
    assert "stopped" not in run_sweep(SweepSpec.from_dict(again, resume=True))


def test_resuming_a_finished_sweep_trains_nothing(data, tmp_path, capsys):
    torch.set_num_threads(1)
    first = run_sweep(_spec(data, tmp_path, epochs=3))
    best = tmp_path / "s" / "plain" / "model_epoch_best.pth"
    before = best.stat().st_mtime_ns
    again = run_sweep(_spec(data, tmp_path, epochs=3, resume=True))
    assert "already ran to its end" in capsys.readouterr().out
    assert again["variants"]["plain"]["best"] == first["variants"]["plain"]["best"]
    assert best.stat().st_mtime_ns == before
    # its results must still be the ones asked for: another spec is refused, not answered with them
    with pytest.raises(RunFolderError, match="epochs: 3 -> 6"):
        run_sweep(_spec(data, tmp_path, epochs=6, resume=True))
    # how often the state is saved is not part of what a sweep trains
    assert run_sweep(_spec(data, tmp_path, epochs=3, resume=True, state_every_s=5))["epochs"] == 3
    # a sweep started before an option existed (its spec.json lacks the key) ran with the option's
    # default: resuming it with today's code is the same sweep (before: "family_share: None -> []")
    saved = json.loads((tmp_path / "s" / "spec.json").read_text())
    assert saved["base"].pop("family_share") == []
    (tmp_path / "s" / "spec.json").write_text(json.dumps(saved))
    assert run_sweep(_spec(data, tmp_path, epochs=3, resume=True))["epochs"] == 3
    saved["base"]["family_share"] = ["sdxl=2"]  # but a value other than the default is a change
    (tmp_path / "s" / "spec.json").write_text(json.dumps(saved))
    with pytest.raises(RunFolderError, match=r"family_share: \['sdxl=2'\] -> \[\]"):
        run_sweep(_spec(data, tmp_path, epochs=3, resume=True))


def test_a_diverging_variant_stops_alone_and_the_others_go_on(data, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    real_step = sweep_mod._Variant.step

    def step(self, *a, **kw):  # variant "avg_patch" blows up in epoch 1, as a far too large learning rate does
        loss = real_step(self, *a, **kw)
        if self.name == "avg_patch" and self.epoch_now == 1:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
        return loss

    real_begin = sweep_mod._Variant.begin_epoch

    def begin(self, epoch):
        self.epoch_now = epoch
        return real_begin(self, epoch)

    monkeypatch.setattr(sweep_mod._Variant, "step", step)
    monkeypatch.setattr(sweep_mod._Variant, "begin_epoch", begin)
    summary = run_sweep(_spec(data, tmp_path, epochs=3))
    monkeypatch.undo()
    assert "stopped" not in summary
    bad, good = summary["variants"]["avg_patch"], summary["variants"]["plain"]
    assert bad["failed"].startswith("non-finite at epoch 1") and bad["best"]["epoch"] == 0
    assert "failed" not in good and [r["epoch"] for r in _histories(tmp_path / "s")["plain"]] == [0, 1, 2]
    assert [r["epoch"] for r in _histories(tmp_path / "s")["avg_patch"]] == [0]  # the diverged epoch is not recorded
    weights, meta = read_checkpoint(tmp_path / "s" / "avg_patch" / "model_epoch_best.pth")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert "temperature" in meta and bad["calibration"] is not None  # its last finite best, calibrated


def test_every_variant_diverging_stops_the_sweep_with_status_1(data, tmp_path, monkeypatch):
    torch.set_num_threads(1)

    def step(self, *a, **kw):
        with torch.no_grad():
            for p in self.model.parameters():
                p.fill_(float("nan"))
        self.loss_sum, self.loss_n = float("nan"), 1
        return torch.tensor(float("nan"))

    monkeypatch.setattr(sweep_mod._Variant, "step", step)
    summary = run_sweep(_spec(data, tmp_path, epochs=3))
    assert summary["stopped"] == "non-finite" and summary["epochs_run"] == 0
    assert all(v["checkpoint"] is None and v["failed"] for v in summary["variants"].values())
    with pytest.raises(SystemExit) as e:
        sweep_mod.exit_if_stopped(summary)
    assert e.value.code == 1


def test_the_command_lines_resume_and_refuse_resume_with_overwrite(data, tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_spec_dict(data, tmp_path, epochs=3)))
    cli = [sys.executable, "-m", "bitmind.training.sweep", "--spec", str(spec_file)]
    both = subprocess.run([*cli, "--resume", "--overwrite"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert both.returncode == 2 and "pass one of them" in both.stderr
    nothing = subprocess.run([*cli, "--resume"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert nothing.returncode == 2 and "no sweep_state.pt" in nothing.stderr and "Traceback" not in nothing.stderr
    logo_file = tmp_path / "logo.json"
    d = _spec_dict(data, tmp_path, epochs=3)
    logo_file.write_text(json.dumps({"base": d["base"], "recipes": {"a": {}}, "folds": [], "ensemble_members": 0}))
    logo = [sys.executable, "benchmarks/generalisation.py", "train", "--spec", str(logo_file),
            "--checkpoints_dir", str(tmp_path), "--name", "logo"]
    first = subprocess.run(logo, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run([*logo, "--resume"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0 and "already ran to its end" in again.stdout, again.stderr[-2000:]
    ran = (tmp_path / "logo" / "logo_spec.json").read_text()
    other = subprocess.run([*logo, "--resume", "--epochs", "9"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert other.returncode == 2 and "epochs: 3 -> 9" in other.stderr
    assert (tmp_path / "logo" / "logo_spec.json").read_text() == ran  # what scoring reads still names what ran


def test_a_time_budget_sweep_resumed_keeps_the_shape_it_would_have_had(data, tmp_path, monkeypatch):
    """On a fake clock (10 s an epoch, 20 s for epochs 0-1, 3 s a validation), a 16-epoch plan
    with validation and averaging from epoch 8 and a 200 s budget. Stopped in epoch 3 (after
    the start-up fit, before the steady one) and resumed, it re-plans as the sweep never
    stopped does; before, the resumed sweep moved its steady fit, passed the start-up fit's
    cautious validation and averaging epochs (5) and kept them, and ran 13 epochs, not 14."""
    from types import SimpleNamespace

    torch.set_num_threads(1)
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(sweep_mod, "time", SimpleNamespace(time=lambda: clock.now))
    real_epoch, real_logits = sweep_mod.train_one_epoch, sweep_mod._logits

    def epoch(learners, loader, cfg, e, *a, **kw):
        clock.now += 20.0 if e < 2 else 10.0
        return real_epoch(learners, loader, cfg, e, *a, **kw)

    def logits(*a, **kw):
        clock.now += 1.5
        return real_logits(*a, **kw)

    monkeypatch.setattr(sweep_mod, "_logits", logits)

    def spec(out, resume=False):
        d = _spec_dict(data, out, epochs=16, time_budget_s=200, val_from=8, val_every=1, ensemble_members=0)
        d["variants"] = {"plain": {}, "avg": {"swa_start": 8}}
        return SweepSpec.from_dict(d, resume=resume or None)

    monkeypatch.setattr(sweep_mod, "train_one_epoch", epoch)
    whole = run_sweep(spec(tmp_path / "whole"))
    clock.now = 0.0
    monkeypatch.setattr(sweep_mod, "train_one_epoch", _interrupt_during(3))  # wraps the fake clock's epoch
    assert run_sweep(spec(tmp_path / "cut"))["stopped"] == "interrupted"
    clock.now = 10_000.0  # time between the two processes does not count
    monkeypatch.setattr(sweep_mod, "train_one_epoch", epoch)
    resumed = run_sweep(spec(tmp_path / "cut", resume=True))
    shape = lambda s: (s["epochs"], s["val_from"], s["variants"]["avg"]["swa_start"])  # noqa: E731
    assert shape(resumed) == shape(whole) and shape(whole)[0] < 16


def test_a_best_written_after_the_last_state_is_kept_on_resume(tmp_path):
    """A sweep killed between a variant's new best file and the state after that epoch: the
    file (a trained, validated model) stays the best, so the resumed sweep does not replace
    it with a worse epoch; a best the state knows is left as the state says."""
    from types import SimpleNamespace

    from bitmind.checkpoint import model_meta, save_checkpoint
    from bitmind.models import build_model
    from bitmind.training.loop import Best
    from bitmind.training.sweep_state import adopt_saved_best

    m = build_model("npr", layers=[1, 1], width=8)
    val = {"accuracy": 0.85, "real_accuracy": 0.9, "fake_accuracy": 0.8, "per_source": {"x": 1}}
    save_checkpoint(m, tmp_path / "model_epoch_best.pth", model_meta(m, "npr", metrics={"val": val, "epoch": 5}))
    v = SimpleNamespace(name="a", run_dir=tmp_path, best=Best(score=0.6, record={"epoch": 3, "accuracy": 0.6}))
    adopt_saved_best(v)
    assert v.best.record["epoch"] == 5 and v.best.score == pytest.approx(0.85) and "per_source" not in v.best.record
    known = SimpleNamespace(name="a", run_dir=tmp_path, best=Best(score=0.85, record={"epoch": 5, "accuracy": 0.85}))
    adopt_saved_best(known)
    assert known.best.record == {"epoch": 5, "accuracy": 0.85}


def test_a_state_of_another_layout_is_refused_in_one_line(data, tmp_path, monkeypatch):
    """A state written by another layout (version 1 had no record of the time budget's steady
    window, so a resumed budgeted sweep made no more fits) is refused, not half-read."""
    torch.set_num_threads(1)
    monkeypatch.setattr(sweep_mod, "train_one_epoch", _interrupt_during(0))
    run_sweep(_spec(data, tmp_path))
    monkeypatch.undo()
    path = tmp_path / "s" / SWEEP_STATE
    state = torch.load(path, weights_only=True)
    state["version"] = 1
    torch.save(state, path)
    with pytest.raises(RunFolderError, match="layout version 1"):
        run_sweep(_spec(data, tmp_path, resume=True))
