"""Checkpoint I/O: self-describing .pth and .safetensors, bare reference state dicts,
no pickle, clear errors; calibration metadata applied by LoadedModel."""
from __future__ import annotations

import pickle
import re

import pytest
import torch

from bitmind.checkpoint import CheckpointError, load_model, model_meta, read_checkpoint, save_checkpoint
from bitmind.models import available_models, build_model, register_model


def _tiny(seed=0):
    torch.manual_seed(seed)
    return build_model("npr", layers=[1, 1], width=8).eval()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_keeps_weights_and_metadata(tmp_path, suffix):
    m = _tiny(1)
    path = save_checkpoint(m, tmp_path / f"m{suffix}", model_meta(m, "npr", temperature=2.0, logit_bias=-0.5, metrics={"acc": 0.9}))
    lm = load_model(path)
    assert lm.arch == "npr" and lm.meta["config"]["layers"] == [1, 1] and lm.meta["metrics"]["acc"] == 0.9
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(lm.model(x), m(x))
        logits = m(x).reshape(-1)
    assert torch.allclose(lm.probabilities(logits), torch.sigmoid(logits / 2.0 - 0.5))
    assert len(lm.sha256) == 64
    # The same file parsed from its bytes (what the hot reloader does) is the same model.
    from_bytes = load_model(tmp_path / f"elsewhere{suffix}", data=path.read_bytes())
    assert from_bytes.sha256 == lm.sha256 and from_bytes.meta == lm.meta
    with torch.no_grad():
        assert torch.equal(from_bytes.model(x), lm.model(x))


def test_a_safetensors_file_is_read_through_the_served_pth_link(tmp_path):
    """The miner serves a fixed name (``--neuron.model_path .../current.pth``, a link): a link
    to a .safetensors file was read as a torch file by the link's suffix and refused, on hot
    reload and at start (operator review). The format is that of the file linked to, from disk
    and from the bytes the hot reloader read."""
    m = _tiny(2)
    target = save_checkpoint(m, tmp_path / "v1.safetensors", model_meta(m, "npr", temperature=1.5))
    link = tmp_path / "current.pth"
    link.symlink_to(target.name)
    lm = load_model(link)
    assert lm.sha256 == load_model(target).sha256 and lm.temperature == 1.5
    assert load_model(link, data=target.read_bytes()).sha256 == lm.sha256
    blob = tmp_path / "blobs" / "3f2a"  # the Hugging Face cache: model.safetensors links to a blob
    blob.parent.mkdir()
    blob.write_bytes(target.read_bytes())
    (tmp_path / "model.safetensors").symlink_to(blob)
    chained = tmp_path / "served.pth"
    chained.symlink_to("model.safetensors")
    assert load_model(chained).sha256 == lm.sha256
    plain = tmp_path / "copied.pth"  # a safetensors file named .pth (not a link) is still named as such
    plain.write_bytes(target.read_bytes())
    with pytest.raises(CheckpointError, match="name it .safetensors"):
        load_model(plain)


def test_bare_reference_state_dict_and_ddp_prefix(tmp_path):
    """The original NPR/SN34 format: torch.save(model.state_dict()), possibly from DDP."""
    full = build_model("npr")
    torch.save({f"module.{k}": v for k, v in full.state_dict().items()}, tmp_path / "ref.pth")
    lm = load_model(tmp_path / "ref.pth")
    assert lm.arch == "npr" and lm.temperature == 1.0 and lm.logit_bias == 0.0


def test_pickled_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "evil.pth")
    assert not marker.exists()


def test_wrong_shapes_truncated_and_missing_files_are_clear_errors(tmp_path):
    save_checkpoint(_tiny(), tmp_path / "tiny.pth")
    state, _ = read_checkpoint(tmp_path / "tiny.pth")
    save_checkpoint(state, tmp_path / "noconf.pth", {"arch": "npr"})  # tiny weights, default (full-size) config
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(tmp_path / "noconf.pth")
    data = (tmp_path / "tiny.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="expected"):
        load_model(tmp_path / "tiny.pth", expected_arch="other")


def test_registry_accepts_new_architectures_and_rejects_duplicates():
    @register_model("test_const")
    class Const(torch.nn.Module):
        def __init__(self, value: float = 0.0):
            super().__init__()
            self.config = {"value": value}
            self.b = torch.nn.Parameter(torch.tensor([value]))

        def forward(self, x):
            return self.b.expand(x.shape[0], 1)

    assert "test_const" in available_models() and "npr" in available_models()
    assert build_model("test_const", value=1.5)(torch.zeros(2, 3, 8, 8)).tolist() == [[1.5], [1.5]]
    with pytest.raises(ValueError):
        register_model("test_const")(lambda: None)
    with pytest.raises(KeyError):
        build_model("no_such_model")


def test_saved_files_get_the_mode_of_an_ordinary_file(tmp_path):
    """Written through a private temporary file, a checkpoint still ends up 0666 less the
    umask (0644 under the usual 022), like ``open()`` would make it, not 0600."""
    import os
    import stat

    old = os.umask(0o027)
    try:
        path = save_checkpoint(build_model("npr", layers=[1, 1], width=8), tmp_path / "m.pth")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    path = save_checkpoint(build_model("npr", layers=[1, 1], width=8), tmp_path / "n.pth")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~old


def test_stored_calibration_that_would_break_every_answer_is_named_but_the_file_still_opens(tmp_path):
    """``check_calibration`` (what the miner runs before serving a file) refuses a temperature
    or bias that would answer NaN, fail or invert every decision; ``load_model`` itself still
    opens such a file, so that ``bitmind.calibrate`` can fit it anew and ``model_info`` show it."""
    from bitmind.checkpoint import check_calibration

    model = _tiny()
    for bad in ({"temperature": float("nan")}, {"temperature": -0.5}, {"temperature": "warm"},
                {"logit_bias": float("inf")}, {"logit_bias": [1, 2]}, {"temperature": True}, {"temperature": 10**400},
                {"temperature": 1e-300}, {"logit_bias": 1e9}):
        save_checkpoint(model, tmp_path / "m.pth", meta=model_meta(model, **bad))
        lm = load_model(tmp_path / "m.pth")
        with pytest.raises(CheckpointError, match=next(iter(bad))):
            check_calibration(lm.meta, tmp_path / "m.pth")
    for fine, (t, b) in (({}, (1.0, 0.0)), ({"temperature": None, "logit_bias": None}, (1.0, 0.0)),
                         ({"temperature": 0, "logit_bias": 0}, (1.0, 0.0)), ({"temperature": 0.8, "logit_bias": -0.2}, (0.8, -0.2)),
                         ({"temperature": "0.7"}, (0.7, 0.0))):
        save_checkpoint(model, tmp_path / "m.pth", meta=model_meta(model, **fine))
        lm = load_model(tmp_path / "m.pth")
        check_calibration(lm.meta)
        assert (lm.temperature, lm.logit_bias) == (t, b)


def test_metadata_that_is_not_an_object_is_a_clear_error(tmp_path):
    """A .pth whose meta is a list (or a .safetensors whose bitmind key is '[1, 2]') was an
    AttributeError inside load_model; now a CheckpointError naming the file."""
    model = _tiny()
    torch.save({"model": model.state_dict(), "meta": [1]}, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match="metadata is a list"):
        load_model(tmp_path / "m.pth")


@pytest.mark.parametrize("key, value, says", [
    ("width", "8", "config width='8' (a str): architecture 'npr' takes an int (default 64)"),
    ("layers", [1, "1"], "takes a list of int"),
    ("stem_pool", 1, "stem_pool=1 (an int): architecture 'npr' takes a bool"),
    ("width", True, "width=True (a bool)"),
])
def test_a_config_value_of_the_wrong_type_is_named(tmp_path, key, value, says):
    """A hand-edited config (``width: "8"``) failed inside the constructor with "not all
    arguments converted during string formatting"; the miner and model_info now name the key."""
    model = _tiny()
    meta = model_meta(model)
    meta["config"][key] = value
    save_checkpoint(model.state_dict(), tmp_path / "m.pth", meta)
    with pytest.raises(CheckpointError, match=re.escape(says)):
        load_model(tmp_path / "m.pth")
    # an int where the default is a float, and a list where it is a tuple, are the same values
    ok = {**model_meta(model), "config": {**model_meta(model)["config"], "dropout": 0, "layers": [1, 1]}}
    save_checkpoint(model.state_dict(), tmp_path / "ok.pth", ok)
    assert load_model(tmp_path / "ok.pth").meta["config"]["dropout"] == 0


def test_numpy_scalars_from_python_callers_fit_the_config_types():
    import numpy as np

    from bitmind.models import config_type_problem

    assert config_type_problem("npr", {"width": np.int64(8), "dropout": np.float32(0.5), "stem_pool": np.bool_(False),
                                       "layers": [np.int64(1), 1]}) is None
    assert "(null)" in config_type_problem("npr", {"width": None})
    assert config_type_problem("npr", {"width": np.bool_(True)}) is not None  # a bool is no width, numpy's neither
