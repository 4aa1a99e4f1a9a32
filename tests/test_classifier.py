"""bologan.classifier: CaloChallenge's classifier recipe; AUC, isotonic calibration, JSD in numpy."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bologan import classifier as cls


def test_auc_counts_pairs_and_halves_ties():
    labels = np.array([0, 0, 1, 1])
    assert cls.roc_auc(labels, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)   # 3 of 4 pairs ordered
    assert cls.roc_auc(labels, [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert cls.roc_auc(labels, [0.1, 0.2, 0.3, 0.4]) == 1.0
    with pytest.raises(ValueError):
        cls.roc_auc([1, 1], [0.2, 0.3])


def test_isotonic_calibration_pools_adjacent_violators():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.4, 0.9])
    labels = np.array([0, 1, 0, 1, 0, 1])
    cal = cls.IsotonicCalibration.fit(scores, labels)
    # Equal scores first averaged (0.4 -> 0.5, weight 2); then 0.2 (1) and 0.3 (0) violate and pool
    # into 0.5, which ties with 0.4's 0.5; ends clipped to [1e-6, 1 - 1e-6].
    assert cal.knots.tolist() == [0.1, 0.2, 0.3, 0.4, 0.9]
    assert cal.values == pytest.approx([1e-6, 0.5, 0.5, 0.5, 1 - 1e-6])
    assert cal(np.array([0.0, 0.15, 2.0])) == pytest.approx([1e-6, 0.25 + 0.5e-6, 1 - 1e-6])
    assert (np.diff(cal(np.linspace(0, 1, 50))) >= 0).all()


def test_bce_and_jsd():
    assert cls.binary_cross_entropy([0.5, 0.5], [0, 1]) == pytest.approx(math.log(2))
    assert cls.jsd_from_bce(math.log(2)) == pytest.approx(0.0)
    assert cls.jsd_from_bce(cls.binary_cross_entropy([1e-6, 1 - 1e-6], [0, 1])) == pytest.approx(1.0, abs=1e-5)
    assert cls.binary_cross_entropy([0.0], [1]) == pytest.approx(100.0)     # log floored as torch does


def test_split_is_60_20_20_of_the_smaller_sample():
    gen, ref = np.zeros((103, 2)), np.ones((100, 2))
    s = cls.train_test_validation(gen, ref, seed=0)
    assert [len(y) for _, y in (s.train, s.test, s.validation)] == [120, 40, 40]
    for x, y in (s.train, s.test, s.validation):
        assert y.sum() == len(y) / 2 and (x[:, 0] == y).all()


def test_low_level_inputs_apply_the_threshold():
    x = cls.low_level_inputs(np.array([100.0]), np.array([[50.0, 0.9, -1.0, 1.0]]))
    assert x.tolist() == [[2.0, 0.5, 0.0, 0.0, 0.01]]


def test_network_is_the_calochallenge_shape():
    net = cls.build_network(30, seed=0)
    dense = [w for w in net.get_weights() if w.ndim == 2]
    assert [w.shape for w in dense] == [(30, 2048), (2048, 2048), (2048, 2048), (2048, 1)]
    assert all(w.dtype == np.float64 for w in net.get_weights())
    assert np.abs(dense[0]).max() <= 1 / math.sqrt(30) and np.abs(dense[1]).max() <= 1 / math.sqrt(2048)


def test_training_separates_separable_samples_and_not_identical_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 4)), rng.normal(size=(500, 4))
    apart = cls.train_classifier(a, b + 2.0, "high", epochs=3, seed=1)
    assert apart.auc > 0.95 and apart.jsd > 0.5 and 1 <= apart.best_epoch <= apart.epochs_run <= 3
    same = cls.train_classifier(a, b, "high", epochs=1, seed=1)
    assert abs(same.auc - 0.5) < 0.15 and same.jsd < 0.1
