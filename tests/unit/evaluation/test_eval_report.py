"""Evaluation reports: JSON round trip, Markdown content, PNG image, atomic writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tuneforge.evaluation.metrics import multi_label_metrics, single_label_metrics
from tuneforge.evaluation.report import metrics_markdown, plot_confusion_matrix, write_eval_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _single(k: int = 3, n: int = 40, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = ["neg|ative", "neutral", "positive"] if k == 3 else [f"class_{i}" for i in range(k)]
    return single_label_metrics(y, probs, labels)


def _multi() -> dict:
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    probs = np.array([[0.9, 0.2, 0.6], [0.3, 0.8, 0.1], [0.7, 0.4, 0.2]])
    return multi_label_metrics(y, probs, ["sports", "money", "tech"], np.array([0.5, 0.3, 0.5]))


def test_single_label_report_files(tmp_path: Path) -> None:
    m = _single()
    write_eval_report(
        m, tmp_path / "eval.json", tmp_path / "eval.md", tmp_path / "cm.png", title="Test split"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "eval.json", "eval.md"]

    text = (tmp_path / "eval.json").read_text()
    assert "NaN" not in text and json.loads(text) == m

    png = (tmp_path / "cm.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5_000

    md = (tmp_path / "eval.md").read_text()
    assert md.startswith("# Test split\n")
    assert f"| Accuracy | {m['accuracy']:.4f} |" in md
    assert f"| Log loss | {m['log_loss']:.4f} |" in md
    assert f"| Examples | {m['n_examples']} |" in md
    for label, row in m["per_class"].items():
        escaped = label.replace("|", "\\|")
        expected = (
            f"| {escaped} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} "
            f"| {row['support']} |"
        )
        assert expected in md
        counts = m["confusion_matrix"]["matrix"][list(m["per_class"]).index(label)]
        assert f"| {escaped} | " + " | ".join(map(str, counts)) + " |" in md


def test_binary_markdown_has_roc_auc() -> None:
    m = _single(k=2)
    assert f"| ROC-AUC | {m['roc_auc']:.4f} |" in metrics_markdown(m)
    m["roc_auc"] = None  # one class in the split
    assert "| ROC-AUC | n/a |" in metrics_markdown(m)


def test_many_classes_skip_markdown_matrix_but_plot(tmp_path: Path) -> None:
    m = _single(k=25, n=200)
    md = metrics_markdown(m)
    assert "| class_24 |" in md and "too many for a table" in md
    plot_confusion_matrix(m, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").read_bytes().startswith(PNG_MAGIC)


def test_multi_label_report_writes_no_png(tmp_path: Path) -> None:
    m = _multi()
    write_eval_report(m, tmp_path / "eval.json", tmp_path / "eval.md", tmp_path / "cm.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "eval.md"]
    assert json.loads((tmp_path / "eval.json").read_text()) == m
    md = (tmp_path / "eval.md").read_text()
    assert f"| Subset accuracy | {m['subset_accuracy']:.4f} |" in md
    assert "| money | 1.0000 | 1.0000 | 1.0000 | 2 | 0.3000 |" in md  # threshold column
    assert "Confusion matrix" not in md
    with pytest.raises(ValueError, match="no confusion matrix"):
        plot_confusion_matrix(m, tmp_path / "cm.png")


def test_json_has_no_nan(tmp_path: Path) -> None:
    m = {"accuracy": float("nan"), "log_loss": float("inf"), "n_examples": np.int64(3)}
    write_eval_report(m, tmp_path / "eval.json")
    text = (tmp_path / "eval.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"accuracy": None, "log_loss": None, "n_examples": 3}


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    write_eval_report({"accuracy": 0.5}, out)
    with pytest.raises(TypeError):
        write_eval_report({"accuracy": object()}, out)
    assert json.loads(out.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, tuneforge.evaluation.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
