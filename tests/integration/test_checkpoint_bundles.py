"""``keep_checkpoints``: the last N checkpoints become loadable sub-bundles of the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import sentiment_rows, write_csv
from tuneforge.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from tuneforge.inference.predictor import Predictor
from tuneforge.recipes.checkpoint_bundles import checkpoint_bundle, checkpoint_steps
from tuneforge.recipes.finetune_classifier import finetune_classifier
from tuneforge.training.events import read_events

TEXTS = ["a good film", "the plot was awful", "it is nice and happy", "ugly sad story"]


def _train(tmp: Path, model: Path, method: str, keep: int) -> Path:
    train = write_csv(tmp / "train.csv", sentiment_rows(80, seed=0))
    config = RunConfig(
        data=DataConfig(train=str(train)),
        output=str(tmp / "bundle"),
        model=ModelConfig(name=str(model)),
        method=MethodConfig(name=method),
        train=TrainConfig(
            epochs=3,
            batch_size=16,
            seed=0,
            num_threads=1,
            patience=0,
            evals_per_epoch=2,
            keep_checkpoints=keep,
            precision="fp32",
        ),
    )
    return finetune_classifier(config).bundle


@pytest.mark.parametrize("method", ["full", "lora"])
def test_the_last_checkpoints_are_bundles_with_their_own_weights(
    tmp_path: Path, tiny_model: Path, method: str
):
    bundle = _train(tmp_path, tiny_model, method, keep=2)
    events = read_events(bundle / "events.jsonl")
    saved = [e["step"] for e in events if e["type"] == "checkpoint"]
    assert len(saved) >= 3, saved  # more checkpoints were saved than are kept
    steps = checkpoint_steps(bundle)
    assert steps == sorted(set(saved), reverse=True)[:2]

    evals = {e["step"]: e["metrics"] for e in events if e["type"] == "eval"}
    outputs = {}
    for step in steps:
        sub = checkpoint_bundle(bundle, step)
        assert sub is not None
        info = json.loads((sub / "checkpoint.json").read_text())
        assert info["step"] == step
        assert info["metrics"]["macro_f1"] == evals[step]["macro_f1"]
        assert info["metrics"]["log_loss"] == evals[step]["log_loss"]
        manifest = json.loads((sub / "tuneforge.json").read_text())
        final = json.loads((bundle / "tuneforge.json").read_text())
        assert manifest["labels"] == final["labels"] and manifest["method"] == method
        weights = "adapter" if method == "lora" else "model"
        assert (sub / weights).is_dir() and not list(sub.rglob("*.bin"))
        outputs[step] = Predictor.load(sub, backend="torch").probabilities(TEXTS)
    # two checkpoints, two sets of weights
    assert not np.allclose(outputs[steps[0]], outputs[steps[1]])
    # the last checkpoint holds the weights of the last step: its trainable tensors are
    # those the loop saved, so its answers equal a model loaded from them
    if method == "full":
        last = load_file(checkpoint_bundle(bundle, steps[0]) / "model" / "model.safetensors")
        head = last["classifier.weight"]
        other = load_file(checkpoint_bundle(bundle, steps[1]) / "model" / "model.safetensors")
        assert not np.allclose(head.numpy(), other["classifier.weight"].numpy())
    best_step = next(e["best_step"] for e in events if e["type"] == "summary")
    if best_step in outputs:  # the best checkpoint's weights are the bundle's
        final_probs = Predictor.load(bundle, backend="torch").probabilities(TEXTS)
        np.testing.assert_allclose(outputs[best_step], final_probs, atol=1e-6)


def test_no_checkpoints_are_kept_by_default(tmp_path: Path, tiny_model: Path):
    bundle = _train(tmp_path, tiny_model, "full", keep=0)
    assert checkpoint_steps(bundle) == []
    assert not (bundle / "checkpoints").exists()
