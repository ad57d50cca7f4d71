"""Predictions out to CSV/JSONL, safe to open in a spreadsheet (texts come in through
``tuneforge.data.tables.read_texts``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from tuneforge.bundle import atomic_write_text
from tuneforge.inference.predictor import Prediction

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """Prefix a cell that a spreadsheet would run as a formula with a quote."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def write_predictions(path: Path, texts: Sequence[str], preds: Sequence[Prediction]) -> None:
    """Write predictions atomically: CSV ``text,label,score`` or JSON lines."""
    if path.suffix.lower() == ".jsonl":
        lines = [
            json.dumps({"text": t, **p.to_dict()}, ensure_ascii=False)
            for t, p in zip(texts, preds, strict=True)
        ]
        atomic_write_text(path, "\n".join(lines) + "\n")
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label", "score"])
    for text, pred in zip(texts, preds, strict=True):
        label = "|".join(pred.labels) if len(pred.labels) > 1 else (pred.label or "")
        writer.writerow([neutralise_cell(text), neutralise_cell(label), f"{pred.score:.6f}"])
    atomic_write_text(path, buf.getvalue())
