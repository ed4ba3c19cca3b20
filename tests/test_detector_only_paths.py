"""The detector-only form of a model file is made in one place (``bitmind.checkpoint.build_network``):
the miner's load (``load_model(..., detector_only=True)``) and ``model_info``'s swap check
(``as_the_miner_loads``, from a model loaded whole) must give the same network."""
from __future__ import annotations

import pytest
import torch

from bitmind.checkpoint import CheckpointError, build_network, load_model, model_meta, save_checkpoint
from bitmind.cli.model_info import as_the_miner_loads
from bitmind.models import build_model

TINY = {"layers": [1, 1], "width": 8, "input": "npr_hp", "stem_pool": False}
CLASSES = ["real", "gans", "sd1-2"]


def _with_head(path):
    torch.manual_seed(3)
    model = build_model("npr", **TINY, num_classes=1 + len(CLASSES)).eval()
    with torch.no_grad():  # every row of the head different, so a wrong row would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    meta = model_meta(model, temperature=0.7, logit_bias=0.1, train_options={"aux_classes": CLASSES})
    return model, save_checkpoint(model, path, meta)


def test_both_paths_give_the_same_detector(tmp_path):
    whole_model, path = _with_head(tmp_path / "aux.pth")
    served = load_model(path, detector_only=True)
    whole = load_model(path)
    assert whole.model.config["num_classes"] == 4
    checked = as_the_miner_loads(whole)
    assert checked is not whole and checked.model.config["num_classes"] == 1
    a, b = served.model.state_dict(), checked.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["fc1.weight"].shape[0] == 1
    assert served.meta == checked.meta and served.meta["config"]["num_classes"] == 1
    assert (checked.path, checked.sha256) == (whole.path, whole.sha256)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out_served, out_checked, out_whole = served.model(x), checked.model(x), whole_model(x)
    assert out_served.shape == (2, 1) and out_whole.shape == (2, 4)
    assert torch.equal(out_served, out_checked)
    assert torch.allclose(out_served[:, 0], out_whole[:, 0], atol=1e-6)  # the detector: the first output
    assert not served.model.training and not checked.model.training


def test_a_model_without_a_head_is_left_as_it_is(tmp_path):
    model = build_model("npr", **TINY).eval()
    path = save_checkpoint(model, tmp_path / "plain.pth")
    whole = load_model(path)
    assert as_the_miner_loads(whole) is whole  # nothing to drop: not built again
    built, meta = build_network("npr", whole.model.state_dict(), whole.meta, detector_only=True, built=whole.model)
    assert built is whole.model and meta is whole.meta


def test_build_network_names_the_file_when_the_weights_do_not_fit():
    model = build_model("npr", **TINY)
    state = {k: v for k, v in model.state_dict().items() if k != "fc1.bias"}
    with pytest.raises(CheckpointError, match=r"^x\.pth does not fit architecture 'npr'"):
        build_network("npr", state, {"config": TINY}, path="x.pth")
