"""Classification metrics as pure functions over class ids and probabilities.

Everything here takes numpy arrays and returns plain, JSON-serialisable values
(Python ``int``/``float``/``str``/``list``/``dict``/``None``), so a metrics dict
can go straight into ``eval.json``, the event log or the model card. Counting
is always over examples, never over batches: callers pass the predictions of a
whole split at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped to ``[LOG_LOSS_EPS, 1]`` before the log loss."""

DEFAULT_THRESHOLD = 0.5
"""Multi-label decision threshold of a label that ``tune_thresholds`` cannot tune."""

# Model-selection metrics: name -> (key in the metrics dict, sign so that higher is better).
_SELECTION: dict[str, tuple[str, float]] = {
    "macro_f1": ("macro_f1", 1.0),
    "accuracy": ("accuracy", 1.0),
    "micro_f1": ("micro_f1", 1.0),
    "weighted_f1": ("weighted_f1", 1.0),
    "log_loss": ("log_loss", -1.0),
    "subset_accuracy": ("subset_accuracy", 1.0),
}
# Accuracy of a multi-label prediction *is* subset accuracy (as in sklearn's
# ``accuracy_score`` on indicator matrices), and vice versa for single-label.
_SAME_METRIC = {"accuracy": "subset_accuracy", "subset_accuracy": "accuracy"}


def single_label_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    *,
    n_bins: int = 15,
) -> dict[str, Any]:
    """Metrics of a single-label classifier on one labelled split.

    Predictions are the argmax of ``probs``. Aggregate precision/recall/F1 follow
    scikit-learn's defaults: macro averages run over the labels that occur in
    ``y_true`` or in the predictions, so a class absent from the split and never
    predicted does not count as an F1 of 0 (it still gets a ``per_class`` row).

    Args:
        y_true: True class ids, shape (n,), values in ``[0, k)``.
        probs: Class probabilities, shape (n, k), rows summing to 1 (softmax
            outputs, not logits).
        labels: Label names in id order; ``len(labels) == k``.
        n_bins: Equal-width confidence bins over [0, 1] for the calibration error.

    Returns:
        A dict with ``n_examples``, ``accuracy`` (correct predictions / examples),
        ``macro_f1``, ``micro_f1``, ``weighted_f1``, ``macro_precision``,
        ``macro_recall``, ``log_loss``, ``per_class`` (label -> precision, recall,
        f1, support, for every label in order), ``confusion_matrix`` (``labels``
        and ``matrix``, rows true, columns predicted), ``ece`` (expected
        calibration error of the top-1 confidence) and, for two labels only,
        ``roc_auc`` (positive class id 1; None when ``y_true`` has one class).

    Raises:
        ValueError: Shapes disagree, ids are out of range, the split is empty or
            ``probs`` are not probabilities.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    k = _check_inputs(y_true, probs, labels, multi_label=False)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    sums = probs.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-4):
        worst = float(sums[np.argmax(np.abs(sums - 1.0))])
        raise ValueError(
            f"probs rows must sum to 1 (a row sums to {worst:.6g}); pass softmax "
            "probabilities, not logits"
        )

    ids = np.arange(k)
    y_true = y_true.astype(np.int64)
    y_pred = probs.argmax(axis=1)
    n = int(y_true.shape[0])

    def avg(score: Any, average: str) -> float:
        return float(score(y_true, y_pred, average=average, zero_division=0))

    result: dict[str, Any] = {
        "n_examples": n,
        "accuracy": int(np.count_nonzero(y_pred == y_true)) / n,
        "macro_f1": avg(skm.f1_score, "macro"),
        "micro_f1": avg(skm.f1_score, "micro"),
        "weighted_f1": avg(skm.f1_score, "weighted"),
        "macro_precision": avg(skm.precision_score, "macro"),
        "macro_recall": avg(skm.recall_score, "macro"),
        "log_loss": float(
            skm.log_loss(y_true, np.clip(probs, LOG_LOSS_EPS, 1.0), labels=ids.tolist())
        ),
        "per_class": _per_class(y_true, y_pred, labels, ids),
        "confusion_matrix": {
            "labels": list(labels),
            "matrix": skm.confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        },
        "ece": expected_calibration_error(y_true, probs, n_bins=n_bins),
    }
    if k == 2:
        two_classes = np.unique(y_true).size == 2
        result["roc_auc"] = float(skm.roc_auc_score(y_true, probs[:, 1])) if two_classes else None
    return result


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, *, n_bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence.

    The top-1 confidences are put into ``n_bins`` equal-width bins
    ``(lo, hi]`` over [0, 1] (a confidence of exactly 0 goes into the first);
    the result is the mean over examples of ``|accuracy(bin) - confidence(bin)|``
    of each example's bin, i.e. the bin gaps weighted by bin size.

    Args:
        y_true: True class ids, shape (n,).
        probs: Class probabilities, shape (n, k).
        n_bins: Number of bins.

    Returns:
        The ECE in [0, 1].
    """
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(
        np.bincount(bins, weights=correct, minlength=n_bins)
        - np.bincount(bins, weights=confidence, minlength=n_bins)
    )
    # Per bin |sum(correct) - sum(conf)| / n == |acc_b - conf_b| * n_b / n.
    return float(gap.sum() / count.sum())


def multi_label_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    thresholds: np.ndarray | float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Metrics of a multi-label classifier on one labelled split.

    A label is predicted when its probability is ``>=`` its threshold.

    Args:
        y_true: Multi-hot targets, shape (n, k), values in {0, 1}.
        probs: Per-label probabilities (sigmoid outputs), shape (n, k).
        labels: Label names in column order; ``len(labels) == k``.
        thresholds: One threshold for all labels or one per label, shape (k,).

    Returns:
        A dict with ``n_examples``, ``subset_accuracy`` (share of examples whose
        whole label set is right), ``micro_f1``, ``macro_f1``, ``weighted_f1``,
        ``micro_precision``, ``micro_recall``, ``hamming_loss``, ``per_class``
        (label -> precision, recall, f1, support = positives) and
        ``thresholds`` (one per label).

    Raises:
        ValueError: Shapes disagree, targets are not 0/1, probabilities are
            outside [0, 1] or the split is empty.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    k = _check_inputs(y_true, probs, labels, multi_label=True)
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim == 0:
        thr = np.full(k, float(thr))
    if thr.shape != (k,):
        raise ValueError(f"thresholds must be one number or {k} (one per label), got {thr.shape}")

    y_true = y_true.astype(np.int64)
    y_pred = (probs >= thr).astype(np.int64)

    def avg(score: Any, average: str) -> float:
        return float(score(y_true, y_pred, average=average, zero_division=0))

    return {
        "n_examples": int(y_true.shape[0]),
        "subset_accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "micro_f1": avg(skm.f1_score, "micro"),
        "macro_f1": avg(skm.f1_score, "macro"),
        "weighted_f1": avg(skm.f1_score, "weighted"),
        "micro_precision": avg(skm.precision_score, "micro"),
        "micro_recall": avg(skm.recall_score, "micro"),
        "hamming_loss": float(skm.hamming_loss(y_true, y_pred)),
        "per_class": _per_class(y_true, y_pred, labels, np.arange(k)),
        "thresholds": [float(t) for t in thr],
    }


def tune_thresholds(
    y_true: np.ndarray, probs: np.ndarray, grid: np.ndarray | None = None
) -> np.ndarray:
    """Per-label decision thresholds that maximise each label's F1.

    Tune on validation data, never on the test split. Among thresholds with the
    same best F1 the one closest to 0.5 wins (the lower one if two are equally
    close). A label without positives keeps ``DEFAULT_THRESHOLD``, since any
    threshold gives it an F1 of 0.

    Args:
        y_true: Multi-hot targets, shape (n, k).
        probs: Per-label probabilities, shape (n, k).
        grid: Candidate thresholds; default 0.05, 0.10, ..., 0.95.

    Returns:
        Thresholds, float array of shape (k,).
    """
    y_true = np.asarray(y_true).astype(bool)
    probs = np.asarray(probs, dtype=np.float64)
    if y_true.ndim != 2 or probs.shape != y_true.shape:
        raise ValueError(
            f"y_true and probs must both have shape (n, k); got {y_true.shape} and {probs.shape}"
        )
    grid = np.round(np.arange(1, 20) * 0.05, 2) if grid is None else np.asarray(grid, np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"grid must be a non-empty 1-D array, got shape {grid.shape}")

    # Sort candidates by distance to 0.5 (then by value) so that argmax, which
    # returns the first maximum, implements the tie-break.
    order = np.lexsort((grid, np.round(np.abs(grid - DEFAULT_THRESHOLD), 9)))
    candidates = grid[order]
    out = np.full(y_true.shape[1], DEFAULT_THRESHOLD)
    for j in range(y_true.shape[1]):
        positives = y_true[:, j]
        if not positives.any():
            continue
        predicted = probs[:, j, None] >= candidates[None, :]  # (n, len(grid))
        tp = np.count_nonzero(predicted & positives[:, None], axis=0)
        f1 = 2 * tp / (predicted.sum(axis=0) + positives.sum())  # 2tp / (2tp + fp + fn)
        out[j] = candidates[np.argmax(f1)]
    return out


def selection_metric_names() -> list[str]:
    """The names ``selection_score`` accepts (``train.selection_metric``)."""
    return list(_SELECTION)


def selection_score(metrics: dict[str, Any], name: str) -> float:
    """The number that picks the best checkpoint: higher is always better.

    ``log_loss`` is returned negated. ``accuracy`` and ``subset_accuracy`` are
    the same metric (scikit-learn's ``accuracy_score``), so either name works
    for single- and multi-label metrics.

    Args:
        metrics: A dict from ``single_label_metrics`` or ``multi_label_metrics``.
        name: One of ``macro_f1``, ``accuracy``, ``micro_f1``, ``weighted_f1``,
            ``log_loss``, ``subset_accuracy``.

    Raises:
        ValueError: Unknown name, or a metric these metrics do not have (log loss
            of a multi-label model).
    """
    if name not in _SELECTION:
        raise ValueError(f"unknown selection metric {name!r}; valid ones: {', '.join(_SELECTION)}")
    key = _selection_key(metrics, name)
    if key is None:
        have = [n for n in _SELECTION if _selection_key(metrics, n) is not None]
        raise ValueError(
            f"selection metric {name!r} is not available for these metrics; "
            f"choose one of: {', '.join(have)}"
        )
    return _SELECTION[name][1] * float(metrics[key])


def _selection_key(metrics: dict[str, Any], name: str) -> str | None:
    """The key in ``metrics`` that holds selection metric ``name``, or None."""
    key = _SELECTION[name][0]
    for candidate in (key, _SAME_METRIC.get(key)):
        if candidate is not None and metrics.get(candidate) is not None:
            return candidate
    return None


def _per_class(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], ids: np.ndarray
) -> dict[str, dict[str, Any]]:
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=ids, average=None, zero_division=0
    )
    return {
        str(name): {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    }


def _check_inputs(
    y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], *, multi_label: bool
) -> int:
    """Validate shapes and values; return the number of labels k."""
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (n, k), got {probs.shape}")
    n, k = probs.shape
    if n == 0:
        raise ValueError("no examples: metrics of an empty split are undefined")
    if k != len(labels):
        raise ValueError(f"probs has {k} columns but {len(labels)} labels were given")
    if len(set(labels)) != len(labels):
        raise ValueError("label names must be unique")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError("probs must be finite probabilities in [0, 1], not logits")
    expected = (n, k) if multi_label else (n,)
    if y_true.shape != expected:
        raise ValueError(f"y_true must have shape {expected} to match probs, got {y_true.shape}")
    if multi_label:
        if not np.isin(y_true, (0, 1)).all():
            raise ValueError("multi-label y_true must be multi-hot (values 0 or 1)")
    elif not np.issubdtype(y_true.dtype, np.integer) or y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"y_true must be integer class ids in [0, {k})")
    return k
