"""python -m bitmind.model_info: what a model file is and whether it loads, before serving it."""
from __future__ import annotations

import json

from bitmind.checkpoint import file_sha256, model_meta, save_checkpoint
from bitmind.cli.ensemble import build_ensemble_checkpoint
from bitmind.cli.model_info import describe, main
from bitmind.models import build_model


def _calibrated(path):
    model = build_model("npr", layers=[1, 1], width=8, input="npr_hp", stem_pool=False)
    cal = {"method": "class-balanced Platt scaling, boundary at 0.85 of validation real photos", "real_target": 0.85,
           "val_real_accuracy_after": 0.85, "val_fake_accuracy_after": 0.6}
    meta = model_meta(model, temperature=0.5, logit_bias=-0.2, description="a tiny test model",
                      metrics={"val": {"n": 10, "roc_auc": 0.75}, "epoch": 3, "calibration": cal},
                      train_options={"epochs": 4, "patch_size": 32, "tile_shuffle": 16, "data": ["/x/sn34-mini"], "challenge_data": ["/x/sn34-validator"],
                                     "train_data": ["/w/minigan"], "swa_start": 2})
    return save_checkpoint(model, path, meta)


def test_describes_a_calibrated_model(tmp_path, capsys):
    path = _calibrated(tmp_path / "m.pth")
    info = describe(path)
    assert info["arch"] == "npr" and info["config"]["stem_pool"] is False and info["sha256"] == file_sha256(path)
    assert info["parameters"] == sum(p.numel() for p in build_model("npr", layers=[1, 1], width=8, input="npr_hp").parameters())
    assert (info["temperature"], info["logit_bias"]) == (0.5, -0.2) and info["calibration"]["real_target"] == 0.85
    assert info["training"]["patch_size"] == 32 and info["training"]["tile_shuffle"] == 16
    assert info["data"] == ["sn34-mini", "sn34-validator (as sent)", "minigan (training only)"]
    assert info["training"]["swa_start"] == 2  # an averaged model says so
    assert main([str(path)]) == 0
    text = capsys.readouterr().out
    assert "P(AI) = sigmoid(logit / 0.500 -0.200): class-balanced Platt" in text
    assert "swa_start 2" in text and "minigan (training only)" in text
    assert "epoch 3, before calibration" in text and "roc_auc 0.750" in text and "about: a tiny test model" in text


def test_ensembles_list_their_members(tmp_path, checkpoint_factory):
    ens = build_ensemble_checkpoint([checkpoint_factory(tmp_path / f"m{i}.pth", seed=i) for i in range(2)], tmp_path / "e.pth")
    info = describe(ens)
    assert info["arch"] == "ensemble" and [m["file"] for m in info["members"]] == ["m0.pth", "m1.pth"]


def test_files_that_do_not_load_are_reported_not_raised(tmp_path, capsys):
    good = _calibrated(tmp_path / "good.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main([str(tmp_path / "junk.pth"), str(tmp_path / "absent.pth"), str(good)]) == 1
    text = capsys.readouterr().out
    assert text.count("does not load") == 2 and "not found" in text and "good.pth\n  npr" in text
    assert main([str(good), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(good)  # one file: one object
    # a file that loads but whose calibration the miner would refuse (before: a traceback for
    # a temperature that is not a number)
    model = build_model("npr", layers=[1, 1], width=8)
    save_checkpoint(model, tmp_path / "bad.pth", meta=model_meta(model, temperature="warm"))
    assert main([str(tmp_path / "bad.pth")]) == 1
    assert "the miner would refuse it" in capsys.readouterr().out


def test_serving_says_whether_a_file_can_hot_swap_over_the_served_one(tmp_path, capsys):
    """README step 7 has the operator run model_info before copying a trained file over the
    served one; a file of another network (the trainer's defaults against base.pth's npr_hp, no
    stem pool) was then refused by the running miner with no warning beforehand."""
    from bitmind.checkpoint import load_model
    from bitmind.miner.reload import swap_problem

    served = _calibrated(tmp_path / "served.pth")
    same = _calibrated(tmp_path / "same.pth")
    defaults = save_checkpoint(build_model("npr", layers=[1, 1], width=8), tmp_path / "defaults.pth")
    assert main([str(same), "--serving", str(served)]) == 0
    assert f"hot swap over {served}: yes (same network)" in capsys.readouterr().out
    assert main([str(defaults), str(same), "--serving", str(served), "--json"]) == 1
    infos = json.loads(capsys.readouterr().out)
    assert [i["hot_swap"]["ok"] for i in infos] == [False, True]
    problem = infos[0]["hot_swap"]["problem"]
    assert "--neuron.allow_arch_change" in problem and "--init_from" in problem
    # the same words the running miner logs when it refuses the file
    assert problem == swap_problem(load_model(defaults, detector_only=True), load_model(served, detector_only=True))
    assert main([str(same), "--serving", str(tmp_path / "absent.pth")]) == 1
    assert "the serving file" in capsys.readouterr().out


def test_serving_loads_each_file_once(tmp_path, capsys, monkeypatch):
    """``model_info NEW --serving base.pth`` loaded NEW twice: whole for its description, then
    again, detector-only, for the swap check. The check now uses the model ``describe`` loaded
    (an auxiliary head left behind as the miner leaves it), with the same answer."""
    from bitmind.checkpoint import load_model
    from bitmind.cli import model_info
    from bitmind.miner.reload import swap_problem

    served = _calibrated(tmp_path / "served.pth")
    same = _calibrated(tmp_path / "same.pth")
    defaults = save_checkpoint(build_model("npr", layers=[1, 1], width=8), tmp_path / "defaults.pth")
    # a training checkpoint with an auxiliary head: the miner serves (and swaps in) its detector
    head = build_model("npr", layers=[1, 1], width=8, input="npr_hp", stem_pool=False, num_classes=3)
    aux = save_checkpoint(head, tmp_path / "aux.pth", model_meta(head, train_options={"aux_classes": ["real", "gan"]}))
    loads = []

    def counting(path, *args, **kwargs):
        loads.append(str(path))
        return load_model(path, *args, **kwargs)

    monkeypatch.setattr(model_info, "load_model", counting)
    assert main([str(same), str(aux), "--serving", str(served)]) == 0
    assert sorted(loads) == sorted(map(str, (same, aux, served)))
    text = capsys.readouterr().out
    assert text.count(f"hot swap over {served}: yes (same network)") == 2 and "auxiliary head (in the file" in text
    loads.clear()
    served_defaults = save_checkpoint(build_model("npr", layers=[1, 1], width=8), tmp_path / "served_defaults.pth")
    assert main([str(defaults), str(aux), "--serving", str(served_defaults), "--json"]) == 1  # one refused: exit 1
    assert sorted(loads) == sorted(map(str, (defaults, aux, served_defaults)))
    infos = json.loads(capsys.readouterr().out)
    assert [i["hot_swap"]["ok"] for i in infos] == [True, False]
    # the miner's own words for the detector it would load from the file with the head
    assert infos[1]["hot_swap"]["problem"] == swap_problem(load_model(aux, detector_only=True),
                                                           load_model(served_defaults, detector_only=True))


def test_a_reader_that_stops_early_is_no_error(tmp_path):
    """`model_info FILE --json | head` was a BrokenPipeError traceback."""
    import subprocess
    import sys

    path = _calibrated(tmp_path / "m.pth")
    many = " ".join([str(path)] * 400)  # more JSON than a pipe holds, so the write meets the closed pipe
    r = subprocess.run(f"{sys.executable} -m bitmind.model_info {many} --json | head -c 10",
                       shell=True, capture_output=True, text=True, timeout=120)
    assert r.stdout == '[\n {\n  "pa' and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def test_serving_says_when_the_miner_would_refuse_a_file_from_its_size(tmp_path, capsys, monkeypatch):
    """The miner refuses a file over --neuron.max_model_mb unread; model_info --serving, "the
    miner's own check", said such a file could hot-swap."""
    from bitmind import checkpoint

    served = _calibrated(tmp_path / "served.pth")
    same = _calibrated(tmp_path / "same.pth")
    monkeypatch.setattr(checkpoint, "MAX_MODEL_BYTES", 1000)  # the tiny test files are larger
    assert main([str(same), "--serving", str(served)]) == 1
    assert "more than the 1000 bytes a model file may be" in capsys.readouterr().out


def test_the_calibration_line_names_the_pictures_it_was_fitted_on(tmp_path, capsys):
    """After ``bitmind.calibrate --split all`` the figures are on the pictures fitted, not on a
    validation split (the line said "on validation" whatever the split)."""
    model = build_model("npr", layers=[1, 1], width=8, input="npr_hp", stem_pool=False)
    for split, n, said in (("val", 1089, "on validation (1089 pictures), calibrated"),
                           (None, 37, "on the pictures it was fitted on (37 pictures), not a held-out split, calibrated"),
                           ("test", 50, "on the test split (50 pictures), calibrated")):
        cal = {"method": "class-balanced Platt scaling", "split": split, "n": n,
               "val_real_accuracy_after": 0.8, "val_fake_accuracy_after": 0.7}
        path = save_checkpoint(model, tmp_path / f"m_{split}.pth",
                               model_meta(model, temperature=0.5, metrics={"calibration": cal}))
        assert main([str(path)]) == 0
        assert said in capsys.readouterr().out
