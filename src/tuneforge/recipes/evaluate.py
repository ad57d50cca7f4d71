"""Evaluate a trained bundle on any labelled file (``tuneforge eval``): the evaluate workflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.data.labels import LabelMap
from tuneforge.data.tables import read_table
from tuneforge.errors import InputError, Problem
from tuneforge.evaluation.metrics import multi_label_metrics, single_label_metrics
from tuneforge.inference.predictor import Predictor


def evaluate_bundle(
    bundle: str | Path,
    data_file: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    label_separator: str = "|",
    predictor: Predictor | None = None,
) -> dict[str, Any]:
    """Metrics of a bundle on a labelled file.

    Args:
        bundle: The bundle directory.
        data_file: A labelled CSV/TSV/JSONL/chat JSONL/Parquet file.
        text_column: Text column (auto-detected when None).
        label_column: Label column (auto-detected when None).
        label_separator: Separator of several labels in one cell (multi-label bundles).
        predictor: An already loaded predictor for ``bundle`` (saves loading twice).

    Raises:
        InputError: Bad file, or labels the model was not trained on.
    """
    predictor = predictor or Predictor.load(bundle)
    table = read_table(
        data_file,
        text_column=text_column,
        label_column=label_column,
        multi_label=predictor.multi_label,
        label_separator=label_separator,
    )
    known = set(predictor.labels)
    problems = []
    for line, labels in zip(table.lines, table.labels, strict=True):
        unknown = [lab for lab in labels if lab not in known]
        if unknown:
            problems.append(
                Problem(
                    file=str(data_file),
                    line=line,
                    column=label_column or "label",
                    message=f"label {unknown[0]!r} is not one the model was trained on",
                    fix="evaluate only on the model's labels: "
                    + ", ".join(predictor.labels[:10])
                    + (" …" if len(known) > 10 else ""),
                )
            )
            if len(problems) >= 20:
                break
    if problems:
        raise InputError(f"{data_file}: labels the model does not know", problems)
    label_map = LabelMap(tuple(predictor.labels))
    probs = predictor.probabilities(table.texts)
    if predictor.multi_label:
        return multi_label_metrics(
            label_map.encode_multi(table.labels).astype(int),
            probs,
            predictor.labels,
            np.asarray(predictor.thresholds),
        )
    return single_label_metrics(label_map.encode_single(table.labels), probs, predictor.labels)
