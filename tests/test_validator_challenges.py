"""Challenge generation: class balance, seeding, pipeline, bad files."""
from pathlib import Path

import pytest
from PIL import Image

from bitmind.data import LocalFolderSource
from bitmind.image_io import decode_image
from bitmind.protocol import ImageSynapse
from bitmind.validator.challenges import ChallengeGenerator
from validator_synth import make_folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("chal"), n_per_class=4, size=96)


def _sig(ch):
    return (ch.label, ch.item, ch.plain, ch.synapse.image)


def test_same_seed_same_challenges_other_seed_differs(data_dir):
    a = ChallengeGenerator([LocalFolderSource(data_dir)], seed=3).take(6)
    b = ChallengeGenerator([LocalFolderSource(data_dir)], seed=3).take(6)
    c = ChallengeGenerator([LocalFolderSource(data_dir)], seed=4).take(6)
    assert [_sig(x) for x in a] == [_sig(x) for x in b]
    assert [_sig(x) for x in a] != [_sig(x) for x in c]
    assert [x.index for x in a] == list(range(6))


def test_labels_are_balanced_and_match_the_source(data_dir):
    gen = ChallengeGenerator([LocalFolderSource(data_dir)], seed=0, plain_share=1.0)
    chs = gen.take(200)
    fakes = sum(c.label for c in chs)
    assert 70 < fakes < 130  # p = 0.5 (deterministic for this seed; a fixed 35-65 % band)
    for c in chs:
        assert c.source == ("fake/synth" if c.label else "real/synth")
        assert Path(c.item).parent.parent.name == ("fake" if c.label else "real")


def test_synapse_is_a_256_jpeg_and_plain_share_is_honoured(data_dir):
    src = LocalFolderSource(data_dir)
    plain = ChallengeGenerator([src], seed=1, plain_share=1.0).take(5)
    aug = ChallengeGenerator([src], seed=1, plain_share=0.0).take(5)
    assert all(c.plain for c in plain) and not any(c.plain for c in aug)
    for c in plain + aug:
        assert isinstance(c.synapse, ImageSynapse) and c.synapse.prediction == -1.0
        img = decode_image(c.synapse.image)
        assert img.size == (256, 256) and img.mode == "RGB"
        import base64

        assert base64.b64decode(c.synapse.image)[:3] == b"\xff\xd8\xff"  # JPEG on the wire


def test_share_of_plain_challenges(data_dir):
    chs = ChallengeGenerator([LocalFolderSource(data_dir)], seed=2, plain_share=0.2).take(150)
    assert 10 < sum(c.plain for c in chs) < 50


def test_unreadable_images_are_skipped(tmp_path):
    root = make_folder(tmp_path / "d", n_per_class=1, size=64)
    bad = root / "fake" / "broken"
    bad.mkdir()
    for i in range(3):
        (bad / f"bad{i}.jpg").write_bytes(b"not an image at all")
    gen = ChallengeGenerator([LocalFolderSource(root)], seed=0, fake_prob=1.0)
    chs = gen.take(10)
    assert all(c.label == 1 and c.source == "fake/synth" for c in chs)
    assert "fake/broken" not in gen.by_label[1]  # dropped once found unreadable, not retried forever


def test_all_unreadable_raises_a_clear_error(tmp_path):
    d = tmp_path / "fake" / "x"
    d.mkdir(parents=True)
    (d / "a.png").write_bytes(b"junk")
    gen = ChallengeGenerator([LocalFolderSource(tmp_path)], seed=0, max_retries=3)
    with pytest.raises(RuntimeError, match="no readable image"):
        gen.next()


def test_single_class_data_gives_that_class(tmp_path):
    d = tmp_path / "real" / "only"
    d.mkdir(parents=True)
    Image.new("RGB", (40, 30), (10, 20, 30)).save(d / "a.png")
    gen = ChallengeGenerator.from_specs([str(tmp_path)], seed=0)
    assert {c.label for c in gen.take(8)} == {0}


def test_sources_are_picked_uniformly_not_by_size(tmp_path):
    # one big and one small fake source: each is chosen about half the time
    make_folder(tmp_path / "a", n_per_class=1, size=32)
    big = tmp_path / "a" / "fake" / "big"
    big.mkdir()
    for i in range(20):
        Image.new("RGB", (32, 32), (i, 0, 0)).save(big / f"b{i}.png")
    chs = ChallengeGenerator([LocalFolderSource(tmp_path / "a")], seed=5, fake_prob=1.0).take(100)
    small = sum(c.source == "fake/synth" for c in chs)
    assert 30 < small < 70


def test_bad_arguments():
    with pytest.raises(ValueError):
        ChallengeGenerator([])


def test_split_restricts_the_pool_by_picture_stem(tmp_path):
    from bitmind.data import split_of

    root = make_folder(tmp_path / "d", n_per_class=12, size=32)
    gen = ChallengeGenerator([LocalFolderSource(root)], seed=0, split="test", split_seed=3)
    items = {Path(src.describe(i)) for groups in gen.by_label.values() for entries in groups.values() for src, i in entries}
    expected = {p for p in root.rglob("*.png") if split_of(p.stem.rsplit("_", 1)[0], 3) == "test"}
    assert items == expected and 0 < len(items) < 24
    assert {Path(c.item) for c in gen.take(10)} <= expected
    with pytest.raises(ValueError):
        ChallengeGenerator([LocalFolderSource(root)], split="holdout")
