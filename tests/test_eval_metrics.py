"""bitmind.metrics: known values, degenerate inputs, temperature fitting."""

import numpy as np
import pytest
import torch

from bitmind.metrics import compute_metrics, expected_calibration_error, format_metrics_table

# Six images: real scored 0.1, 0.4, 0.8 (the last one wrong), fake 0.3 (wrong), 0.7, 0.9.
LABELS = [0, 0, 0, 1, 1, 1]
PROBS = [0.1, 0.4, 0.8, 0.3, 0.7, 0.9]
SOURCES = ["real/a", "real/a", "real/b", "fake/x", "fake/x", "fake/x"]


def test_known_values_by_hand():
    m = compute_metrics(LABELS, PROBS)
    assert m["n"] == 6 and m["n_real"] == 3 and m["n_fake"] == 3
    assert m["confusion"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 2}
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["real_accuracy"] == pytest.approx(2 / 3)
    assert m["fake_accuracy"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    # MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (4 - 1) / 9
    assert m["mcc"] == pytest.approx(1 / 3)
    # AUC: of the 9 (fake, real) pairs, the fake scores higher in 6.
    assert m["roc_auc"] == pytest.approx(6 / 9)
    # AP: ranking F(0.9) R(0.8) F(0.7) R(0.4) F(0.3) R(0.1): precisions at the fakes 1, 2/3, 3/5.
    assert m["ap"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    brier = ((0.1) ** 2 + 0.4 ** 2 + 0.8 ** 2 + 0.7 ** 2 + 0.3 ** 2 + 0.1 ** 2) / 6
    assert m["brier"] == pytest.approx(brier)
    assert m["threshold"] == 0.5
    assert "per_source" not in m


def test_agrees_with_sklearn_on_random_data():
    from sklearn.metrics import accuracy_score, average_precision_score, balanced_accuracy_score, matthews_corrcoef, roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.25), 0, 1)
    m = compute_metrics(y, p)
    pred = p > 0.5
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    assert m["ap"] == pytest.approx(average_precision_score(y, p))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))


def test_per_source_and_single_class_sources():
    m = compute_metrics(LABELS, PROBS, SOURCES)
    ps = m["per_source"]
    assert list(ps) == ["fake/x", "real/a", "real/b"]
    assert ps["real/a"]["n"] == 2 and ps["real/a"]["accuracy"] == 1.0
    assert ps["real/b"]["accuracy"] == 0.0 and ps["real/b"]["fake_accuracy"] is None
    assert ps["fake/x"]["accuracy"] == pytest.approx(2 / 3) and ps["fake/x"]["real_accuracy"] is None
    for s in ps.values():  # one class only: no ranking metric, MCC undefined
        assert s["ap"] is None and s["roc_auc"] is None and s["mcc"] is None
    assert ps["real/b"]["brier"] == pytest.approx(0.8 ** 2)
    assert format_metrics_table(m).splitlines()[0].split()[:3] == ["source", "n", "acc"]
    assert "real/b" in format_metrics_table(m)


def test_degenerate_inputs():
    empty = compute_metrics([], [])
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["ap"] is None
    allfake = compute_metrics([1, 1], [0.9, 0.2])
    assert allfake["accuracy"] == 0.5 and allfake["fake_accuracy"] == 0.5 and allfake["real_accuracy"] is None
    assert allfake["ap"] is None and allfake["roc_auc"] is None
    # Both classes, every prediction "real": MCC's denominator is 0 -> 0 by convention.
    assert compute_metrics([0, 1], [0.1, 0.2])["mcc"] == 0.0
    # Torch tensors are accepted.
    assert compute_metrics(torch.tensor([0, 1]), torch.tensor([0.2, 0.9]))["accuracy"] == 1.0
    with pytest.raises(ValueError):
        compute_metrics([0, 1], [0.5])
    with pytest.raises(ValueError):
        compute_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError):
        compute_metrics([0, 1], [0.5, float("nan")])
    with pytest.raises(ValueError):
        compute_metrics([0, 1], [0.5, 0.5], sources=["a"])


def test_threshold_is_strictly_greater():
    # The miner's answer 0.5 is "not AI-generated": p > 0.5 is the fake prediction.
    assert compute_metrics([0], [0.5])["accuracy"] == 1.0
    assert compute_metrics([1], [0.5])["accuracy"] == 0.0


def test_ece():
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == pytest.approx(0.0)
    # One bin holding probs 0.9, 0.9 with one fake out of two: |0.5 - 0.9| = 0.4.
    assert expected_calibration_error([1, 0], [0.9, 0.9]) == pytest.approx(0.4)


def test_platt_temperature_recovers_known_scale():
    from bitmind.calibration import apply_calibration, fit_platt

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)  # labels drawn from sigmoid(z): calibrated at T=1
    t, b = fit_platt(3.0 * z, y, fit_bias=False, class_balanced=False)  # an overconfident model: logits 3x too large
    assert t == pytest.approx(3.0, rel=0.05) and b == 0.0

    def nll(temp):
        return float(torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(3.0 * z / temp), torch.tensor(y, dtype=torch.float64)))

    # It is the minimum of the NLL.
    assert nll(t) <= nll(t * 1.1) and nll(t) <= nll(t / 1.1) and nll(t) < nll(1.0)
    # Dividing by T keeps the decision of every image.
    assert ((apply_calibration(3 * z, t) > 0.5) == (3 * z > 0)).all()


def test_platt_bounds_and_degenerate_input():
    from bitmind.calibration import fit_platt

    assert fit_platt([], []) == (1.0, 0.0)
    assert fit_platt([1.0, 2.0], [1, 1]) == (1.0, 0.0)  # one class: nothing to calibrate against
    # Perfectly separated: the NLL keeps falling as T -> 0 (clamped at 0.05): very sharp.
    t, _ = fit_platt([-2.0, 3.0], [0, 1], fit_bias=False)
    assert 0.05 <= t < 0.2


def test_calibration_record_schema_and_keep_rule():
    from bitmind.calibration import RECORD_METRICS, calibrate_logits

    rng = np.random.default_rng(1)
    z = np.r_[rng.normal(3.0, 1.0, 500), rng.normal(1.0, 1.0, 500)]  # shifted: reals mostly called fake
    y = np.r_[np.ones(500), np.zeros(500)]
    rec = calibrate_logits(z, y, split="val", seeds=[0])
    assert rec["kept"] and rec["method"] == "class-balanced Platt scaling" and rec["n"] == 1000 and rec["split"] == "val"
    assert {f"val_{k}_{w}" for k in RECORD_METRICS for w in ("before", "after")} <= set(rec)
    assert rec["val_balanced_brier_after"] < rec["val_balanced_brier_before"] and rec["logit_bias"] < -1.0
    assert rec["val_real_accuracy_after"] > rec["val_real_accuracy_before"]


def test_real_target_puts_the_boundary_at_that_share_of_validation_real_photos():
    """The shipped rule: the Platt temperature stays, the bias moves so that ``real_target``
    of the validation real photos are called real (a real photo of an unseen camera is
    called real less often than a known one: docs/Generalisation.md)."""
    import pytest

    from bitmind.calibration import apply_calibration, calibrate_logits, real_target_bias

    rng = np.random.default_rng(2)
    z = np.r_[rng.normal(2.0, 1.5, 600), rng.normal(-2.0, 1.5, 400)]
    y = np.r_[np.ones(600), np.zeros(400)]
    platt = calibrate_logits(z, y, keep_if_better=False)
    rec = calibrate_logits(z, y, keep_if_better=False, real_target=0.95)
    assert rec["temperature"] == platt["temperature"] and rec["platt_bias"] == platt["logit_bias"]
    assert rec["real_target"] == 0.95 and rec["method"].startswith(platt["method"]) and "0.95" in rec["method"]
    p_real = apply_calibration(z[y == 0], rec["temperature"], rec["logit_bias"])
    assert abs(np.mean(p_real <= 0.5) - 0.95) <= 1 / 400 + 1e-9
    assert abs(rec["val_real_accuracy_after"] - 0.95) <= 1 / 400 + 1e-9
    assert rec["logit_bias"] < platt["logit_bias"]  # Platt called fewer than 0.95 of these reals real
    assert rec["val_fake_accuracy_after"] < platt["val_fake_accuracy_after"]
    with pytest.raises(ValueError):
        real_target_bias(z, y, 1.0, 1.0)
    with pytest.raises(ValueError):
        real_target_bias(z[y == 1], y[y == 1], 1.0, 0.9)


def test_class_balanced_platt_ignores_the_validation_pools_class_ratio():
    # 9 fakes per real photo, logits symmetric around 0: the unweighted fit learns the
    # pool's prior (a bias towards "fake"); the class-balanced one, what validators send (50/50)
    import numpy as np

    from bitmind.calibration import balanced_brier, fit_platt

    rng = np.random.default_rng(0)
    z = np.r_[rng.normal(1.0, 1.0, 9000), rng.normal(-1.0, 1.0, 1000)]
    y = np.r_[np.ones(9000), np.zeros(1000)]
    _, b_plain = fit_platt(z, y, class_balanced=False)
    _, b_bal = fit_platt(z, y)
    assert b_plain > 1.5 and abs(b_bal) < 0.15  # log(9) = 2.2; the balanced optimum is 0
    assert balanced_brier([0, 0, 1], [0.0, 0.2, 0.5]) == pytest.approx(0.5 * (0.02 + 0.25))


def test_a_fit_not_kept_over_raw_logits_is_not_called_platt_scaling(monkeypatch):
    """Where the Platt fit does worse than the raw logits (identity calibration) and is not
    kept, the record says no Platt scaling is in force (model_info prints the method), not
    "class-balanced Platt scaling"; a fit not kept over a stored calibration says that one stays."""
    from bitmind import calibration

    rng = np.random.default_rng(3)
    z = np.r_[rng.normal(2.0, 1.0, 300), rng.normal(-2.0, 1.0, 300)]
    y = np.r_[np.ones(300), np.zeros(300)]
    monkeypatch.setattr(calibration, "fit_platt", lambda *a, **k: (50.0, 2.0))  # a fit far worse than the logits
    rec = calibration.calibrate_logits(z, y)
    assert not rec["kept"] and (rec["temperature"], rec["logit_bias"]) == (1.0, 0.0)
    assert rec["method"].startswith("none") and "Platt scaling" not in rec["method"]
    stored = calibration.calibrate_logits(z, y, current=(0.9, 0.1))
    assert not stored["kept"] and stored["method"].startswith("the calibration in place")


def test_the_trainer_calibration_line_shows_the_score_that_decides():
    """The keep rule is the class-balanced Brier; the line printed the plain one alone, which
    can rise while the deciding one falls (a kept fit that looked worse)."""
    from bitmind.calibration import calibrate_logits
    from bitmind.training.trainer import calibration_line

    rng = np.random.default_rng(1)
    z = np.r_[rng.normal(3.0, 1.0, 500), rng.normal(1.0, 1.0, 500)]
    y = np.r_[np.ones(500), np.zeros(500)]
    rec = calibrate_logits(z, y)
    line = calibration_line(rec)
    assert "class-balanced brier" in line and "new Platt fit kept" in line
    assert f"{rec['val_balanced_brier_before']:.4f} -> {rec['val_balanced_brier_after']:.4f}" in line
    assert "boundary" not in line
    # --calibration_real_target: the line said nothing of the boundary that moved the accuracy (operator audit)
    moved = calibrate_logits(z, y, real_target=0.85)
    line = calibration_line(moved)
    assert "boundary where 0.85 of validation real photos pass" in line
    # the Platt step's Brier and the boundary move's, apart: the move may raise what the fit lowered
    assert (f"{moved['val_balanced_brier_platt']:.4f} (Platt) -> {moved['val_balanced_brier_after']:.4f} (boundary moved)"
            in line)
