"""Hot reload while serving through a real axon: a new model file is picked up by the
next request; a broken one is refused and the previous model keeps answering."""
import math
import os

import pytest
import torch

from bitmind.checkpoint import load_model
from bitmind.miner.handlers import MinerHandlers
from bitmind.miner.predict import Predictor, predict
from bitmind.protocol import decode_synapse_image, prepare_image_synapse

pytestmark = pytest.mark.usefixtures("session_chain")


class NotWeights:
    """Pickling this needs code execution: a weights_only load must refuse it."""

    def __init__(self):
        self.payload = "would run code on load"


def replace_file(path, write):
    """Write a sibling temp file and rename it over ``path`` (how an operator's cp/mv lands)."""
    tmp = path.with_name(path.name + ".incoming")
    write(tmp)
    os.replace(tmp, path)


@pytest.fixture
def reloading_miner(local_net, tmp_path, checkpoint_factory):
    path = tmp_path / "base.pth"
    checkpoint_factory(path, seed=0)
    predictor = Predictor(str(path), device="cpu", check_interval=0.0)  # check the file on every request
    yield path, predictor, MinerHandlers(predictor, local_net.metagraph)
    predictor.close()


def test_new_model_file_changes_next_answer(local_net, reloading_miner, tmp_path, checkpoint_factory,
                                            image_factory, serve, send):
    path, predictor, handlers = reloading_miner
    synapse = prepare_image_synapse(image_factory(seed=4))
    image = decode_synapse_image(synapse)
    validator = local_net.wallets["validator"]
    with serve(handlers, local_net.wallets["miner"]) as axon:
        before = send(validator, axon, synapse).prediction
        sha_before = predictor.status()["sha256"]
        assert before == pytest.approx(predict(load_model(path), image), abs=1e-5)

        replace_file(path, lambda p: checkpoint_factory(p, seed=1))
        after = send(validator, axon, synapse).prediction
        assert after != pytest.approx(before, abs=1e-4)
        assert after == pytest.approx(predict(load_model(path), image), abs=1e-5)
        assert predictor.status()["sha256"] != sha_before and predictor.status()["reloads"] == 1

        # Broken replacements: garbage bytes, a truncated checkpoint, a pickle that needs code.
        good_bytes = path.read_bytes()
        sha_good = predictor.status()["sha256"]
        broken = [
            lambda p: p.write_bytes(os.urandom(4096)),
            lambda p: p.write_bytes(good_bytes[: len(good_bytes) // 2]),
            lambda p: torch.save({"model": NotWeights()}, p),
        ]
        for i, write in enumerate(broken, start=1):
            replace_file(path, write)
            resp = send(validator, axon, synapse)
            assert resp.dendrite.status_code == 200
            assert resp.prediction == pytest.approx(after, abs=1e-6), f"broken file #{i} changed the answer"
            status = predictor.status()
            assert status["sha256"] == sha_good and status["bad_versions"] == i

        # A good file after the broken ones is picked up again.
        replace_file(path, lambda p: checkpoint_factory(p, seed=2))
        final = send(validator, axon, synapse).prediction
        assert final == pytest.approx(predict(load_model(path), image), abs=1e-5)
        assert predictor.status()["reloads"] == 2


def test_stem_pool_change_swaps_in_place_and_serves_the_new_config(tmp_path, image_factory):
    """base_fast.pth -> base.pth in a running miner: the two differ only in ``stem_pool``
    (no parameter changes), so the swap is accepted as the same structure, and the network
    that serves is rebuilt from the NEW file's config (no max-pool), not the old one's."""
    from bitmind.checkpoint import save_checkpoint
    from bitmind.models import build_model

    def tiny(stem_pool: bool):
        torch.manual_seed(0)
        return build_model("npr", layers=[1, 1], width=8, stem_pool=stem_pool)

    path = tmp_path / "base.pth"
    save_checkpoint(tiny(True), path)
    image = image_factory(seed=2)
    predictor = Predictor(str(path), device="cpu", check_interval=0.0)
    try:
        pooled = predictor.predict_image(image)
        replace_file(path, lambda p: save_checkpoint(tiny(False), p))
        unpooled = predictor.predict_image(image)
        assert predictor.status()["reloads"] == 1
        assert load_model(path).meta["config"]["stem_pool"] is False
        assert unpooled == pytest.approx(predict(load_model(path), image), abs=1e-5)
        assert unpooled != pytest.approx(pooled, abs=1e-6)  # same weights, other network: other answer
    finally:
        predictor.close()


def test_centre_crop_change_swaps_in_place(tmp_path, image_factory, caplog):
    """base.pth -> base_crop192.pth in a running miner: the same weights with ``center_crop``
    in the config are the same structure, so the copy swaps in place and the crop serves;
    the log says the serve-time config changed."""
    from bitmind.checkpoint import save_checkpoint
    from bitmind.models import build_model

    def tiny(**config):
        torch.manual_seed(0)
        return build_model("npr", layers=[1, 1], width=8, **config)

    path = tmp_path / "base.pth"
    save_checkpoint(tiny(), path)
    image = image_factory(seed=3)
    predictor = Predictor(str(path), device="cpu", check_interval=0.0)
    try:
        whole = predictor.predict_image(image)
        replace_file(path, lambda p: save_checkpoint(tiny(center_crop=96), p))
        with caplog.at_level("INFO", logger="bitmind.miner.reload"):
            cropped = predictor.predict_image(image)
        assert any("serve-time config changes" in r.getMessage() and "'center_crop': 96" in r.getMessage()
                   for r in caplog.records)
        assert predictor.status()["reloads"] == 1 and load_model(path).meta["config"]["center_crop"] == 96
        assert cropped == pytest.approx(predict(load_model(path), image), abs=1e-5)
        assert cropped != pytest.approx(whole, abs=1e-6)  # same weights, less of the picture: another answer
    finally:
        predictor.close()


@pytest.mark.parametrize("bad", [{"temperature": math.nan}, {"logit_bias": math.nan}, {"temperature": "abc"},
                                 {"temperature": -1.0}, {"logit_bias": math.inf}, {"temperature": 1e-300},
                                 {"logit_bias": 1e9}, {"temperature": 1e300}],
                         ids=["temperature-nan", "bias-nan", "temperature-text", "temperature-negative", "bias-inf",
                              "temperature-tiny-all-0", "bias-huge-all-1", "temperature-huge-all-same"])
def test_hot_reload_keeps_serving_when_the_new_files_calibration_would_break_every_answer(tmp_path, image_factory,
                                                                                        checkpoint_factory, bad):
    """The new file's test forward was finite, so it was swapped in, and then every answer
    was NaN (-1.0 to the validator), an error, or (negative temperature) every decision
    inverted. Its stored calibration is now checked when it loads: the old model keeps serving."""
    path, p, img, before = _serving_a_checkpoint(tmp_path, checkpoint_factory, image_factory)
    try:
        assert _swap_in(p, path, lambda f: checkpoint_factory(f, **bad)) is False
        assert p.predict_image(img) == pytest.approx(before)
        # a good calibration still swaps in
        assert _swap_in(p, path, lambda f: checkpoint_factory(f, temperature=2.0, logit_bias=0.5)) is True
        assert p.predict_image(img) != pytest.approx(before)
    finally:
        p.close()


def _serving_a_checkpoint(tmp_path, checkpoint_factory, image_factory):
    """A predictor serving a tiny checkpoint at ``tmp_path/model.pth``, checking for a new file
    at every request: (path, predictor, a picture, its answer)."""
    path = tmp_path / "model.pth"
    checkpoint_factory(path)
    p = Predictor(str(path), device="cpu", check_interval=0.0)
    img = image_factory(size=64, seed=3)
    try:
        return path, p, img, p.predict_image(img)
    except BaseException:
        p.close()
        raise


def _swap_in(p: Predictor, path, write) -> bool:
    """Replace the served file at once with what ``write(file)`` writes; whether ``p`` took it."""
    new = path.with_name("new.pth")
    write(new)
    os.replace(new, path)
    return p.check_reload(force=True)


@pytest.mark.parametrize("value", [-1.48e37, 1e30], ids=["flipped-exponent-bit", "huge-finite"])
def test_hot_reload_refuses_a_file_with_a_corrupt_weight_in_the_first_layer(tmp_path, image_factory, checkpoint_factory,
                                                                            value):
    """One flipped exponent bit in the first convolution (-0.0434 -> -1.48e37): the test forward
    ran on an all-zero picture, whose NPR residual is zero, so that weight multiplied nothing;
    the file swapped in and every answer became -1 (or, at 1e30, 1.0 for every picture). The
    test forward now runs on seeded noise and the weights are checked: the old model keeps serving."""
    from bitmind.checkpoint import read_checkpoint, save_checkpoint
    from bitmind.models import build_model

    path, p, img, before = _serving_a_checkpoint(tmp_path, checkpoint_factory, image_factory)
    try:
        state, meta = read_checkpoint(path)
        first = next(k for k, v in state.items() if v.dim() == 4)  # the first convolution's weight
        state[first].view(-1)[0] = value
        model = build_model("npr", layers=[1, 1], width=8)
        model.load_state_dict(state)
        assert _swap_in(p, path, lambda f: save_checkpoint(model, f, meta=meta)) is False
        assert p.predict_image(img) == pytest.approx(before)
    finally:
        p.close()


def test_a_symlinked_model_path_follows_the_link_when_it_is_re_pointed(tmp_path, checkpoint_factory, image_factory):
    """The usual deploy swap (versions side by side, one link re-pointed atomically) is a hot
    reload: the miner keeps the link as its model path instead of the target it pointed to at
    start, and pointing it back is a roll-back."""
    from bitmind.miner.config import resolve_model_path

    old, new = tmp_path / "v1.pth", tmp_path / "v2.pth"
    checkpoint_factory(old, seed=0)
    checkpoint_factory(new, seed=1)
    link = tmp_path / "current.pth"
    link.symlink_to(old.name)
    path = resolve_model_path(str(link), tmp_path)
    assert path == link  # the link, not its target
    (tmp_path / "real").mkdir()  # '..' after a link to a folder is the kernel's, not folded by name
    os.replace(old, tmp_path / "real" / old.name)
    (tmp_path / "away").mkdir()
    (tmp_path / "away" / "models").symlink_to(tmp_path / "real" / "sub", target_is_directory=True)
    (tmp_path / "real" / "sub").mkdir()
    via = resolve_model_path(str(tmp_path / "away" / "models" / ".." / old.name), tmp_path)
    assert via.is_file() and via.samefile(tmp_path / "real" / old.name)
    os.replace(tmp_path / "real" / old.name, old)
    image = decode_synapse_image(prepare_image_synapse(image_factory(seed=4)))
    predictor = Predictor(str(path), device="cpu", check_interval=0.0)
    try:
        first = predictor.predict_image(image)
        assert first == pytest.approx(predict(load_model(old), image), abs=1e-5)
        staged = tmp_path / "current.pth.new"
        staged.symlink_to(new.name)
        os.replace(staged, link)  # ln -sfn + mv -T
        assert predictor.predict_image(image) == pytest.approx(predict(load_model(new), image), abs=1e-5)
        assert predictor.status()["reloads"] == 1
        staged.symlink_to(old.name)
        os.replace(staged, link)
        assert predictor.predict_image(image) == pytest.approx(first, abs=1e-5)
        assert predictor.status()["reloads"] == 2
    finally:
        predictor.close()
