"""A bundle's export report (``onnx/export.json``) and the backend choice it allows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.inference.backends import ONNX_DIR, onnx_path

EXPORT_REPORT = "export.json"


def read_export_report(bundle: Path) -> dict[str, Any] | None:
    """The bundle's ``onnx/export.json``, or None when it was never exported."""
    path = bundle / ONNX_DIR / EXPORT_REPORT
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def choose_backend(bundle: Path, max_accuracy_drop: float) -> str:
    """The fastest exported backend whose recorded accuracy drop is at most the bound.

    "Fastest" is the recorded batch-32 throughput (what a micro-batching server sees).
    Without an export, or when no export is within the bound, ``torch``.
    """
    report = read_export_report(bundle)
    if report is None:
        return "torch"
    best, best_speed = "torch", report["backends"].get("torch", {}).get("batch32_per_s", 0.0)
    for name, entry in report["backends"].items():
        if name == "torch" or not onnx_path(bundle, name).is_file():
            continue
        within = entry.get("accuracy_drop", 1.0) <= max_accuracy_drop + 1e-12
        if within and entry.get("batch32_per_s", 0.0) > best_speed:
            best, best_speed = name, entry["batch32_per_s"]
    return best
