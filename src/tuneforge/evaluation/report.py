"""Evaluation reports: metrics as JSON, a Markdown summary and a confusion-matrix image.

Takes the dicts made by ``tuneforge.evaluation.metrics``. Every file is written
atomically (temp file in the same directory, then ``os.replace``), so a reader
never sees half a report. matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.bundle import atomic_write_bytes, atomic_write_json, atomic_write_text

MAX_MATRIX_CLASSES = 20
"""Above this many classes the Markdown omits the confusion matrix and the plot its counts."""

_SUMMARY = (
    ("accuracy", "Accuracy"),
    ("subset_accuracy", "Subset accuracy"),
    ("macro_f1", "Macro F1"),
    ("micro_f1", "Micro F1"),
    ("weighted_f1", "Weighted F1"),
    ("macro_precision", "Macro precision"),
    ("macro_recall", "Macro recall"),
    ("micro_precision", "Micro precision"),
    ("micro_recall", "Micro recall"),
    ("hamming_loss", "Hamming loss"),
    ("log_loss", "Log loss"),
    ("ece", "ECE (top-1 calibration error)"),
    ("roc_auc", "ROC-AUC"),
)


def write_eval_report(
    metrics: dict[str, Any],
    out_json: Path,
    out_markdown: Path | None = None,
    out_png: Path | None = None,
    *,
    title: str = "Evaluation",
) -> None:
    """Write the metrics as JSON and, optionally, Markdown and a confusion-matrix PNG.

    Multi-label metrics have no confusion matrix: for them ``out_png`` is
    ignored and no image is written.

    Args:
        metrics: A dict from ``single_label_metrics`` or ``multi_label_metrics``.
        out_json: JSON path (indent 2; NaN and infinities become ``null``).
        out_markdown: Markdown path, or None for no Markdown.
        out_png: PNG path, or None for no image.
        title: Heading of the Markdown and title of the plot.
    """
    atomic_write_json(Path(out_json), _json_safe(metrics))
    if out_markdown is not None:
        atomic_write_text(Path(out_markdown), metrics_markdown(metrics, title=title))
    if out_png is not None and "confusion_matrix" in metrics:
        plot_confusion_matrix(metrics, Path(out_png), title=title)


def metrics_markdown(metrics: dict[str, Any], title: str = "Evaluation") -> str:
    """Markdown report: summary table, per-class table and (<= 20 classes) confusion matrix.

    Args:
        metrics: A dict from ``single_label_metrics`` or ``multi_label_metrics``.
        title: Top-level heading.

    Returns:
        The Markdown text, ending in a newline.
    """
    lines = [f"# {title}", "", "| metric | value |", "|---|---:|"]
    for key, name in _SUMMARY:
        if key in metrics:
            lines.append(f"| {name} | {_fmt(metrics[key])} |")
    lines.append(f"| Examples | {metrics.get('n_examples', 'n/a')} |")

    per_class = metrics.get("per_class") or {}
    thresholds = metrics.get("thresholds")
    if per_class:
        extra = " threshold |" if thresholds else ""
        lines += [
            "",
            "## Per class",
            "",
            "| label | precision | recall | F1 | support |" + extra,
            "|---|---:|---:|---:|---:|" + ("---:|" if thresholds else ""),
        ]
        for i, (label, row) in enumerate(per_class.items()):
            cells = [_cell(label), *(_fmt(row[m]) for m in ("precision", "recall", "f1"))]
            cells.append(str(row["support"]))
            if thresholds:
                cells.append(_fmt(thresholds[i]))
            lines.append("| " + " | ".join(cells) + " |")

    cm = metrics.get("confusion_matrix")
    if cm:
        names, matrix = cm["labels"], cm["matrix"]
        lines += ["", "## Confusion matrix", ""]
        if len(names) <= MAX_MATRIX_CLASSES:
            lines.append("Rows are true labels, columns predicted labels.")
            lines += [
                "",
                "| true \\ predicted | " + " | ".join(_cell(n) for n in names) + " |",
                "|---|" + "---:|" * len(names),
            ]
            for name, row in zip(names, matrix, strict=True):
                lines.append(f"| {_cell(name)} | " + " | ".join(str(c) for c in row) + " |")
        else:
            lines.append(
                f"{len(names)} classes are too many for a table; see the image or the JSON."
            )
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(
    metrics: dict[str, Any], out_png: Path, *, title: str = "Confusion matrix"
) -> None:
    """Draw the confusion matrix as a PNG heat map.

    Colours are row-normalised (the share of each true class predicted as each
    label), so rare classes are as readable as common ones; cells carry the raw
    counts when there are at most 20 classes. Tick fonts shrink with many labels.
    Rendering uses matplotlib's Agg canvas on a standalone ``Figure``: no display
    is needed and the process-wide pyplot backend and state are left untouched.

    Args:
        metrics: Single-label metrics (with ``confusion_matrix``).
        out_png: PNG path.
        title: Plot title.

    Raises:
        ValueError: The metrics have no confusion matrix (multi-label metrics).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = metrics.get("confusion_matrix")
    if not cm:
        raise ValueError(
            "these metrics have no confusion matrix (multi-label metrics have none); "
            "plot single-label metrics"
        )
    names = [str(n) for n in cm["labels"]]
    counts = np.asarray(cm["matrix"], dtype=np.int64).reshape(len(names), len(names))
    k = len(names)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)

    side = min(4.0 + 0.45 * k, 30.0)
    # ~0.4 of a cell's height in points, so labels stay legible until cells get tiny.
    font = float(np.clip(0.4 * side * 72 / max(k, 1), 3, 10))
    fig = Figure(figsize=(side + 1.5, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=font)
    ax.set_yticks(range(k), names, fontsize=font)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    n = metrics.get("n_examples", int(counts.sum()))
    accuracy = metrics.get("accuracy")
    subtitle = f"n={n}" + (f", accuracy={accuracy:.3f}" if accuracy is not None else "")
    ax.set_title(f"{title}\n{subtitle}")
    if k <= MAX_MATRIX_CLASSES:
        for (i, j), count in np.ndenumerate(counts):
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=font)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(Path(out_png), buffer.getvalue())


def _json_safe(value: Any) -> Any:
    """Plain JSON values: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _cell(text: Any) -> str:
    """A label as a Markdown table cell (pipes escaped, line breaks flattened)."""
    return str(text).replace("|", "\\|").replace("\n", " ")
