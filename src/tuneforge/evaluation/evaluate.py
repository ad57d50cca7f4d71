"""Metrics for a model's logits on a labelled split (single- or multi-label)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tuneforge.evaluation.metrics import multi_label_metrics, single_label_metrics
from tuneforge.models.forward import sigmoid, softmax


def evaluate_logits(
    logits: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    *,
    multi_label: bool,
    thresholds: np.ndarray | float = 0.5,
) -> dict[str, Any]:
    """Metrics of logits against targets.

    Args:
        logits: (n, k) raw model outputs.
        targets: Class ids (n,) for single-label, multi-hot (n, k) for multi-label.
        labels: Label names in id order.
        multi_label: Sigmoid + thresholds instead of softmax + argmax.
        thresholds: Per-label (or one) decision thresholds for multi-label.
    """
    if multi_label:
        return multi_label_metrics(targets.astype(int), sigmoid(logits), labels, thresholds)
    return single_label_metrics(targets.astype(int), softmax(logits), labels)
