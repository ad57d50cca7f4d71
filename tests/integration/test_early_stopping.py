"""Early stopping fires, and the bundle holds the weights of the best evaluation, not the last.

The validation file has the training file's cue words with the labels swapped, so the better
the model learns the training data, the worse it scores on validation: the evaluations stop
improving once the model has learnt something, and patience runs out well before the planned
epochs, whatever minimum amount of training comes first. The selection metric is the log loss,
which moves with every step (macro-F1 ties while the model predicts one class). Runs in fp32
so that the evaluations during training and the re-evaluation of the bundle compute the same
numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli, sentiment_rows, write_csv

EPOCHS = 12
FLIP = {"positive": "negative", "negative": "positive"}


def _events(bundle: Path) -> list[dict]:
    lines = (bundle / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e.get("type", e.get("event")) == kind]


@pytest.fixture(scope="module")
def run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("early-stop")
    train = write_csv(root / "train.csv", sentiment_rows(240, seed=0))
    flipped = [(text, FLIP[label]) for text, label in sentiment_rows(60, seed=1)]
    validation = write_csv(root / "validation.csv", flipped)
    bundle = root / "bundle"
    result = run_cli(
        "train", train, "--validation", validation, "--model", tiny_model,
        "--epochs", EPOCHS, "--batch-size", "8", "--learning-rate", "2e-3",
        "--eval-every", "25", "--selection-metric", "log_loss",
        "--patience", "2", "--train-embeddings", "--precision", "fp32", "--threads", "1",
        "--seed", "0", "--quiet", "--output", bundle,
    )  # fmt: skip
    assert result.code == 0, result
    events = _events(bundle)
    return {"bundle": bundle, "validation": validation, "events": events}


def test_early_stopping_fires_before_the_planned_steps(run: dict) -> None:
    events = run["events"]
    stops = _of(events, "early_stop")
    assert len(stops) == 1, [e.get("type", e.get("event")) for e in events]
    summary = _of(events, "summary")[-1]
    assert summary["stopped_early"] is True
    planned = max(e.get("total_steps", 0) for e in events)
    assert planned > 0, "no step event says how many steps were planned"
    assert summary["steps"] < planned, (summary["steps"], planned)
    evals = _of(events, "eval")
    # patience 2: the last two evaluations did not improve, the one before them was best
    assert [e["improved"] for e in evals[-2:]] == [False, False]
    assert stops[0]["best_step"] == summary["best_step"] < evals[-1]["step"]


def test_the_bundle_holds_the_best_steps_weights(run: dict) -> None:
    """Re-evaluating the bundle gives the best evaluation's metrics, not the last one's."""
    events, bundle = run["events"], run["bundle"]
    summary = _of(events, "summary")[-1]
    evals = {e["step"]: e for e in _of(events, "eval")}
    best, last = evals[summary["best_step"]], evals[max(evals)]
    assert best["step"] != last["step"]
    best_loss, last_loss = best["metrics"]["log_loss"], last["metrics"]["log_loss"]
    assert abs(best_loss - last_loss) > 1e-3, "the last step must differ from the best"

    report = bundle.parent / "reeval.json"
    result = run_cli("eval", bundle, run["validation"], "--json", report)
    assert result.code == 0, result
    measured = json.loads(report.read_text())
    measured = measured.get("metrics", measured)
    assert measured["log_loss"] == pytest.approx(best_loss, abs=1e-4)
    assert measured["accuracy"] == pytest.approx(best["metrics"]["accuracy"], abs=1e-9)
    assert abs(measured["log_loss"] - last_loss) > 5e-4
    # and the bundle's own record agrees
    recorded = json.loads((bundle / "eval.json").read_text())["validation"]
    assert recorded["log_loss"] == pytest.approx(best_loss, abs=1e-4)
