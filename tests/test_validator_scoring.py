"""Unit tests: rewards, moving-average scores, weights, atomic persistence."""
import json
import math
import os

import numpy as np
import pytest

from bitmind.validator.rewards import reward, rewards, valid_prediction
from bitmind.validator.scores import ScoreBook


@pytest.mark.parametrize("pred,label,expected", [
    (0.9, 1, 1.0), (0.9, 0, 0.0), (0.1, 0, 1.0), (0.1, 1, 0.0),
    (0.0, 0, 1.0), (1.0, 1, 1.0), (0.5, 0, 1.0), (0.5, 1, 0.0),  # round(0.5) == 0: "real"
    (0.51, 1, 1.0),
])
def test_reward_rounds_the_prediction(pred, label, expected):
    assert reward(pred, label) == expected


@pytest.mark.parametrize("bad", [None, -1.0, 7.0, 1.0000001, -0.0001, float("nan"), float("inf"), True, [0.9]])
def test_reward_is_zero_for_missing_or_invalid_answers(bad):
    assert not valid_prediction(bad)
    assert reward(bad, 1) == 0.0
    assert reward(bad, 0) == 0.0


def test_numeric_string_is_accepted_but_garbage_is_not():
    # a float-convertible answer counts; anything else is wrong, never an exception
    assert reward("0.9", 1) == 1.0
    assert reward("abc", 1) == 0.0 and reward(object(), 0) == 0.0


def test_reward_rejects_bad_label():
    with pytest.raises(ValueError):
        reward(0.5, 2)


def test_rewards_vector():
    np.testing.assert_array_equal(rewards([0.9, 0.2, None, float("nan"), 7.0, 1.0], 1), [1, 0, 0, 0, 0, 1])


def test_moving_average_and_weights():
    book = ScoreBook(3, alpha=0.1)
    book.update([0, 1], [1.0, 0.0])
    np.testing.assert_allclose(book.scores, [0.1, 0.0, 0.0])
    book.update([0, 1, 2], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(book.scores, [0.19, 0.1, 0.0])
    w = book.weights()
    assert math.isclose(w.sum(), 1.0)
    np.testing.assert_allclose(w, [0.19 / 0.29, 0.1 / 0.29, 0.0])
    # excluded uid (the validator itself) gets nothing and the rest renormalise
    np.testing.assert_allclose(book.weights(exclude=[0]), [0.0, 1.0, 0.0])
    assert book.step == 2


def test_scores_converge_to_accuracy():
    book = ScoreBook(2, alpha=0.1)
    for i in range(300):
        book.update([0, 1], [1.0, float(i % 2)])
    assert book.scores[0] > 0.99
    assert 0.4 < book.scores[1] < 0.6


def test_weights_all_zero_when_nobody_scored():
    assert not ScoreBook(4).weights().any()


def test_update_validates_input():
    book = ScoreBook(2)
    with pytest.raises(IndexError):
        book.update([5], [1.0])
    with pytest.raises(ValueError):
        book.update([0, 1], [1.0])
    book.update([0], [float("nan")])  # NaN reward counts as 0, never poisons the score
    assert book.scores[0] == 0.0


def test_sync_resets_replaced_hotkeys_and_resizes():
    book = ScoreBook(alpha=0.5)
    assert book.sync(["a", "b"]) == [0, 1]
    book.update([0, 1], [1.0, 1.0])
    assert book.sync(["a", "c", "d"]) == [1, 2]
    np.testing.assert_allclose(book.scores, [0.5, 0.0, 0.0])
    assert book.sync(["a"]) == []
    assert len(book) == 1 and book.scores[0] == 0.5


def test_save_and_restore_roundtrip(tmp_path):
    path = tmp_path / "state" / "scores.json"
    book = ScoreBook(alpha=0.1)
    book.sync(["a", "b"])
    book.update([0, 1], [1.0, 0.0])
    book.save(path)
    again = ScoreBook.load(path, alpha=0.2)
    np.testing.assert_allclose(again.scores, book.scores)
    assert again.hotkeys == ["a", "b"] and again.step == 1
    assert again.alpha == 0.2  # configured alpha wins over the stored one
    assert [p.name for p in path.parent.iterdir()] == ["scores.json"]  # no temp files left behind


def test_load_missing_file_starts_fresh(tmp_path):
    book = ScoreBook.load(tmp_path / "nope.json")
    assert len(book) == 0 and book.step == 0


def test_corrupt_file_is_kept_aside_not_fatal(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text('{"format_version": 1, "scores": [0.5')  # truncated write by some other tool
    book = ScoreBook.load(path)
    assert len(book) == 0
    assert (tmp_path / "scores.json.corrupt").exists() and not path.exists()


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "scores.json"
    book = ScoreBook(alpha=0.1)
    book.sync(["a"])
    book.update([0], [1.0])
    book.save(path)
    before = path.read_bytes()
    book.update([0], [1.0])

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)  # the crash happens between write and rename
    with pytest.raises(OSError):
        book.save(path)
    assert path.read_bytes() == before
    assert json.loads(before)["scores"] == [pytest.approx(0.1)]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]
