"""The calibrate line ``python -m bitmind.ensemble`` prints must run as printed (operator review):
it named the members' data roots as typed (``../tiny``: not found from any other folder), and
offered ``--split val`` to members trained on different splits, which calibrate then refused,
naming both members only as ``model_epoch_best.pth``; the ``--split all`` line it prints for them
instead must run too."""
from __future__ import annotations

import json

import pytest
import torch

from bitmind.checkpoint import model_meta, save_checkpoint
from bitmind.cli import calibrate, ensemble
from bitmind.evaluation import evaluate, members_split
from bitmind.models import build_model

from eval_helpers import solid_image


def _member(run_dir, data, challenge=None, val_fraction=0.1, opt_json=True):
    """A tiny NPR in ``run_dir/model_epoch_best.pth`` whose options name ``data`` as typed, and
    (``opt_json``) the run's ``opt.json`` beside it holding them absolute, as the trainer writes
    (typed in ``run_dir``'s parent, the checkpoints folder)."""
    run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    m = build_model("npr", layers=[1, 1], width=8)
    options = {"data": data, "challenge_data": challenge, "val_fraction": val_fraction, "split_seed": 0}
    path = save_checkpoint(m, run_dir / "model_epoch_best.pth", model_meta(m, train_options=options))
    if opt_json:
        absolute = {k: [str((run_dir / ".." / v).resolve()) for v in vs] if isinstance(vs, list) else vs
                    for k, vs in options.items()}
        (run_dir / "opt.json").write_text(json.dumps(absolute))
    return path


def test_the_line_names_absolute_roots_and_leaves_the_challenge_roots_as_they_are(tmp_path, capsys):
    """Challenge roots already are validator challenges: the line's ``--challenge`` would
    augment and JPEG them a second time, so they stay out of it."""
    a = _member(tmp_path / "run_a", ["../tiny"], ["../tval"])
    b = _member(tmp_path / "run_b", ["../tiny"], ["../tval"])
    ensemble.main(["--members", str(a), str(b), "--out", str(tmp_path / "ens.pth")])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    tiny = str((tmp_path / "run_a" / ".." / ".." / "tiny").resolve())
    assert line.endswith(f"--data {tiny} --split val --challenge --seeds 0 1 2 3 4 5") and "tval" not in line


def test_members_without_their_run_folder_keep_the_roots_as_recorded(tmp_path):
    a = _member(tmp_path / "a", ["/data/x"], opt_json=False)
    b = _member(tmp_path / "b", ["/data/x"], opt_json=False)
    meta = ensemble.write_ensemble([a, b], tmp_path / "e.pth")[1]
    assert ensemble.shared_data(meta["members"], [a, b]) == ["/data/x"]


def test_members_split_differently_get_a_line_on_pictures_none_trained_on(tmp_path, capsys):
    a = _member(tmp_path / "run_a", ["../tiny"], val_fraction=0.1)
    b = _member(tmp_path / "run_b", ["../tiny"], val_fraction=0.4)
    ensemble.main(["--members", str(a), str(b), "--out", str(tmp_path / "ens.pth")])
    out = capsys.readouterr().out
    assert "note: the ensemble's members were trained on different splits" in out
    assert "run_a/model_epoch_best.pth: " in out and "run_b/model_epoch_best.pth: " in out
    assert out.strip().splitlines()[-1].endswith("--data DIR --split all --challenge --seeds 0 1 2 3 4 5")
    with pytest.raises(ValueError, match="run_a/model_epoch_best.pth"):
        members_split(json.loads(json.dumps(ensemble.write_ensemble([a, b], tmp_path / "e2.pth")[1])))
    # the line runs as printed on a folder of pictures (calibrate refused it: "different splits")
    held_out = tmp_path / "held_out"
    for k in range(4):
        solid_image(held_out / "real" / "cam" / f"r{k}.png", 40 + 20 * k)
        solid_image(held_out / "fake" / "gen" / f"f{k}.png", 120 + 20 * k)
    args = out.strip().splitlines()[-1].split("--data DIR")[1].split()
    assert calibrate.main(["--model", str(tmp_path / "ens.pth"), "--data", str(held_out), *args, "--device", "cpu",
                           "--min_per_class", "0", "--replace"]) == 0
    report = evaluate(tmp_path / "ens.pth", held_out, split=None, device="cpu", progress=False)
    assert report["n"] == 8
