"""Metrics agree with scikit-learn, count over examples, and handle awkward labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from tuneforge.evaluation.metrics import (
    expected_calibration_error,
    multi_label_metrics,
    selection_score,
    single_label_metrics,
    tune_thresholds,
)

SINGLE_KEYS = {
    "n_examples", "accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision",
    "macro_recall", "log_loss", "per_class", "confusion_matrix", "ece",
}  # fmt: skip


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _single_label_case(seed: int, k: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Noisy but informative probabilities; for k >= 3 label k-1 has no support and
    label 1 is never predicted."""
    rng = np.random.default_rng(seed)
    present = k - 1 if k >= 3 else k
    y = rng.integers(0, present, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    if k >= 3:
        logits[:, 1] -= 20.0
    return y, _softmax(logits)


@pytest.mark.parametrize("k", [2, 3, 7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_label_matches_sklearn(seed: int, k: int) -> None:
    y, probs = _single_label_case(seed, k)
    labels = [f"c{i}" for i in range(k)]
    pred = probs.argmax(axis=1)
    if k >= 3:  # the constructed awkward labels really are there
        assert not (y == k - 1).any() and not (pred == 1).any()

    m = single_label_metrics(y, probs, labels)

    assert set(m) == SINGLE_KEYS | ({"roc_auc"} if k == 2 else set())
    json.dumps(m, allow_nan=False)  # plain Python types, no NaN
    assert m["n_examples"] == len(y)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    for avg in ("macro", "micro", "weighted"):
        expected = skm.f1_score(y, pred, average=avg, zero_division=0)
        assert m[f"{avg}_f1"] == pytest.approx(expected)
    assert m["macro_precision"] == pytest.approx(
        skm.precision_score(y, pred, average="macro", zero_division=0)
    )
    assert m["macro_recall"] == pytest.approx(
        skm.recall_score(y, pred, average="macro", zero_division=0)
    )
    p, r, f, s = skm.precision_recall_fscore_support(
        y, pred, labels=list(range(k)), zero_division=0
    )
    assert list(m["per_class"]) == labels
    for i, name in enumerate(labels):
        row = m["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert row["support"] == s[i] and type(row["support"]) is int
    assert m["confusion_matrix"] == {
        "labels": labels,
        "matrix": skm.confusion_matrix(y, pred, labels=list(range(k))).tolist(),
    }
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, probs, labels=list(range(k))))
    if k == 2:
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    if k >= 3:
        assert m["per_class"][labels[-1]]["support"] == 0
        assert m["per_class"][labels[1]]["precision"] == 0.0


def test_accuracy_is_over_examples_not_batches() -> None:
    # 10 examples, 7 right. Per-batch accuracies for batches of 4 would be
    # [0.25, 1, 1] (mean 0.75), so dividing by batches gives the wrong answer.
    y = np.zeros(10, dtype=int)
    probs = np.tile([0.9, 0.1], (10, 1))
    probs[:3] = [0.2, 0.8]
    m = single_label_metrics(y, probs, ["a", "b"])
    assert m["accuracy"] == 0.7
    assert m["n_examples"] == 10
    assert m["roc_auc"] is None  # only one class in y_true
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_macro_skips_labels_absent_from_truth_and_predictions() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]])
    m = single_label_metrics(y, probs, ["a", "b", "c"])
    # "c" is neither true nor predicted: it gets a row but does not drag the macro to 0.
    assert m["per_class"]["c"]["support"] == 0
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, probs.argmax(1), average="macro"))
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_log_loss_clips_zero_probabilities() -> None:
    y = np.array([0, 1])
    probs = np.array([[1.0, 0.0], [1.0, 0.0]])  # the second example gets p=0 for its class
    m = single_label_metrics(y, probs, ["a", "b"])
    assert m["log_loss"] == pytest.approx(-np.log(1e-15) / 2)


def test_ece_hand_computed() -> None:
    # 5 bins (lo, hi]; top-1 confidences 0.9 (right), 0.7 (wrong), 0.7 (right), 0.55 (right).
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.3, 0.7], [0.55, 0.45]])
    # bins: (0.8,1]: |1-0.9|*1, (0.6,0.8]: |0.5-0.7|*2, (0.4,0.6]: |1-0.55|*1; over 4 examples.
    expected = (0.1 + 0.4 + 0.45) / 4
    assert expected_calibration_error(y, probs, n_bins=5) == pytest.approx(expected)
    assert single_label_metrics(y, probs, ["a", "b"], n_bins=5)["ece"] == pytest.approx(expected)


def test_ece_perfectly_calibrated_is_zero() -> None:
    y = np.array([0] * 8 + [1] * 2)  # confidence 0.8, 80% right
    probs = np.tile([0.8, 0.2], (10, 1))
    assert expected_calibration_error(y, probs) == pytest.approx(0.0, abs=1e-12)

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, size=100_000)
    y = (rng.uniform(size=conf.size) > conf).astype(int)  # class 0 is right with prob conf
    probs = np.stack([conf, 1 - conf], axis=1)
    assert expected_calibration_error(y, probs) < 0.01


def test_single_label_rejects_bad_input() -> None:
    y = np.array([0, 1])
    with pytest.raises(ValueError, match="logits"):
        single_label_metrics(y, np.array([[2.0, -1.0], [0.5, 3.0]]), ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        single_label_metrics(y, np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        single_label_metrics(np.array([0, 2]), np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        single_label_metrics(np.zeros(0, int), np.zeros((0, 2)), ["a", "b"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_label_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=(50, 5)) < 0.4).astype(int)
    y[:, 4] = 0  # a label without positives
    probs = np.clip(0.35 * y + rng.uniform(0, 0.7, size=y.shape), 0, 1)
    pred = (probs >= 0.5).astype(int)
    labels = list("abcde")

    m = multi_label_metrics(y, probs, labels)

    json.dumps(m, allow_nan=False)
    assert m["n_examples"] == 50
    assert m["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(y, pred))
    for avg in ("micro", "macro", "weighted"):
        expected = skm.f1_score(y, pred, average=avg, zero_division=0)
        assert m[f"{avg}_f1"] == pytest.approx(expected)
    assert m["micro_precision"] == pytest.approx(skm.precision_score(y, pred, average="micro"))
    assert m["micro_recall"] == pytest.approx(skm.recall_score(y, pred, average="micro"))
    assert [m["per_class"][c]["support"] for c in labels] == y.sum(axis=0).tolist()
    assert m["thresholds"] == [0.5] * 5


def test_per_label_thresholds_change_predictions() -> None:
    y = np.array([[1, 0], [1, 0]])
    probs = np.array([[0.3, 0.3], [0.2, 0.6]])
    assert multi_label_metrics(y, probs, ["a", "b"])["subset_accuracy"] == 0.0
    # label a fires from 0.2 (>= is inclusive), label b only from 0.7
    m = multi_label_metrics(y, probs, ["a", "b"], np.array([0.2, 0.7]))
    assert m["subset_accuracy"] == 1.0 and m["hamming_loss"] == 0.0
    assert m["thresholds"] == [0.2, 0.7]
    with pytest.raises(ValueError, match="one per label"):
        multi_label_metrics(y, probs, ["a", "b"], np.array([0.5, 0.5, 0.5]))


def test_tune_thresholds_finds_separating_thresholds() -> None:
    pos = np.array([1, 1, 1, 0, 0, 0])
    y = np.stack([pos, pos, np.zeros(6, int), pos], axis=1)
    probs = np.array(
        [
            # separable anywhere in (0.35, 0.6]  -> 0.5 (closest to 0.5)
            [0.6, 0.7, 0.9, 0.1, 0.2, 0.35],
            # separable only in (0.12, 0.2]       -> 0.2
            [0.2, 0.25, 0.3, 0.05, 0.1, 0.12],
            # no positives                        -> 0.5
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
            # separable only in (0.85, 0.92]      -> 0.9
            [0.92, 0.95, 0.99, 0.7, 0.8, 0.85],
        ]
    ).T
    thresholds = tune_thresholds(y, probs)
    assert thresholds == pytest.approx([0.5, 0.2, 0.5, 0.9])
    m = multi_label_metrics(y, probs, list("abcd"), thresholds)
    assert [m["per_class"][c]["f1"] for c in "abd"] == [1.0, 1.0, 1.0]


def test_tune_thresholds_tie_breaks() -> None:
    y = np.array([[1], [0]])
    probs = np.array([[0.9], [0.1]])
    # every candidate separates: equally close to 0.5 -> the lower one
    assert tune_thresholds(y, probs, grid=np.array([0.7, 0.3]))[0] == 0.3
    assert tune_thresholds(y, probs, grid=np.array([0.2, 0.65, 0.8]))[0] == 0.65


def test_selection_score() -> None:
    y, probs = _single_label_case(0, 3)
    single = single_label_metrics(y, probs, ["a", "b", "c"])
    multi = multi_label_metrics(np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.2], [0.6, 0.7]]),
                                ["a", "b"])  # fmt: skip
    for name in ("macro_f1", "accuracy", "micro_f1", "weighted_f1"):
        assert selection_score(single, name) == single[name]
    assert selection_score(single, "log_loss") == -single["log_loss"]
    assert selection_score(single, "subset_accuracy") == single["accuracy"]
    assert selection_score(multi, "subset_accuracy") == multi["subset_accuracy"] == 0.5
    assert selection_score(multi, "accuracy") == 0.5  # accuracy of label sets
    with pytest.raises(ValueError, match=r"macro_f1.*accuracy.*log_loss"):
        selection_score(single, "f2")
    with pytest.raises(ValueError, match="not available"):
        selection_score(multi, "log_loss")
