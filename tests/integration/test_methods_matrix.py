"""Every fine-tuning method x single-/multi-label through ``finetune_classifier``.

The tiny random BERT barely learns with ``head``/``lora``/``ia3`` in two epochs, so these
tests check mechanics: the bundle layout, which weights moved and which did not, and that
a reloaded ``Predictor`` reproduces the recipe's own test metrics.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import multilabel_rows, sentiment_rows, write_csv, write_jsonl
from tuneforge import (
    DataConfig,
    InputError,
    MethodConfig,
    ModelConfig,
    Predictor,
    RunConfig,
    TrainConfig,
    evaluate_bundle,
    finetune_classifier,
)

# peft asks transformers about gradient checkpointing through a deprecated name.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

METHODS = ["full", "head", "lora", "ia3"]
TASKS = ["single", "multi"]


def _data(root: Path, task: str) -> tuple[Path, Path]:
    if task == "single":
        train = write_csv(root / "train.csv", sentiment_rows(120, seed=0))
        test = write_csv(root / "test.csv", sentiment_rows(40, seed=1))
    else:
        train = write_jsonl(root / "train.jsonl", multilabel_rows(120, seed=0))
        test = write_jsonl(root / "test.jsonl", multilabel_rows(40, seed=1))
    return train, test


def _config(train: Path, test: Path, output: Path, model: Path, method: str, multi: bool):
    return RunConfig(
        data=DataConfig(train=str(train), test=str(test), multi_label=multi),
        output=str(output),
        model=ModelConfig(name=str(model)),
        method=MethodConfig(name=method),
        train=TrainConfig(epochs=2, seed=0, num_threads=1, patience=0),
    )


@pytest.fixture(scope="module")
def runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """Train each (method, task) once, lazily; tests share the bundles."""
    cache: dict[tuple[str, str], dict] = {}

    def get(method: str, task: str) -> dict:
        if (method, task) not in cache:
            root = tmp_path_factory.mktemp(f"{method}-{task}")
            train, test = _data(root, task)
            config = _config(train, test, root / "bundle", tiny_model, method, task == "multi")
            result = finetune_classifier(config)
            cache[method, task] = {"result": result, "bundle": root / "bundle", "test": test}
        return cache[method, task]

    return get


def _base_weights(tiny_model: Path) -> dict[str, torch.Tensor]:
    return load_file(tiny_model / "model.safetensors")


def _bundle_encoder(bundle: Path) -> dict[str, torch.Tensor]:
    """The bundle model's encoder weights, named as in the base checkpoint."""
    weights = load_file(bundle / "model" / "model.safetensors")
    return {k.removeprefix("bert."): v for k, v in weights.items() if k.startswith("bert.")}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("method", METHODS)
def test_bundle_manifest_and_layout(runs, method: str, task: str) -> None:
    run = runs(method, task)
    bundle: Path = run["bundle"]
    manifest = json.loads((bundle / "tuneforge.json").read_text())
    assert manifest["method"] == method
    assert manifest["task"] == ("multi_label" if task == "multi" else "single_label")
    expected = ["negative", "positive"] if task == "single" else ["money", "sports"]
    assert manifest["labels"] == expected
    adapter = method in {"lora", "ia3"}
    assert manifest["adapter"] is adapter
    if adapter:
        assert (bundle / "adapter" / "adapter_model.safetensors").is_file()
        assert (bundle / "adapter" / "adapter_config.json").is_file()
        assert not (bundle / "model").exists()
    else:
        assert (bundle / "model" / "model.safetensors").is_file()
        assert not (bundle / "adapter").exists()
    assert not list(bundle.rglob("*.bin")) and not list(bundle.rglob("*.pt"))
    assert not (bundle.parent / f".{bundle.name}.partial").exists()

    evals = json.loads((bundle / "eval.json").read_text())
    if task == "multi":
        assert len(manifest["thresholds"]) == len(expected)
        assert all(0 < t < 1 for t in manifest["thresholds"])
        for split in ("validation", "test"):
            assert {"subset_accuracy", "hamming_loss", "micro_f1", "macro_f1"} <= set(evals[split])
            assert evals[split]["thresholds"] == manifest["thresholds"]
        assert not (bundle / "confusion_matrix_test.png").exists()  # none for multi-label
    else:
        assert manifest["thresholds"] is None
        assert {"accuracy", "macro_f1", "log_loss", "confusion_matrix"} <= set(evals["test"])
        assert (bundle / "confusion_matrix_test.png").is_file()
    assert evals["test"]["n_examples"] == 40
    assert run["result"].metrics == evals


@pytest.mark.parametrize("task", TASKS)
def test_head_keeps_the_encoder_frozen(runs, tiny_model: Path, task: str) -> None:
    base = _base_weights(tiny_model)
    encoder = _bundle_encoder(runs("head", task)["bundle"])
    frozen = [k for k in base if not k.startswith("pooler.")]
    assert frozen
    for key in frozen:
        assert torch.equal(encoder[key], base[key]), f"{key} changed under method head"
    assert not torch.equal(encoder["pooler.dense.weight"], base["pooler.dense.weight"])


@pytest.mark.parametrize("task", TASKS)
def test_full_trains_the_encoder_but_not_the_word_embeddings(
    runs, tiny_model: Path, task: str
) -> None:
    base = _base_weights(tiny_model)
    encoder = _bundle_encoder(runs("full", task)["bundle"])
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(encoder[key], base[key])  # frozen by default (--train-embeddings off)
    changed = [k for k in base if k != key and not torch.equal(encoder[k], base[k])]
    assert "encoder.layer.0.attention.self.query.weight" in changed
    assert "encoder.layer.1.output.dense.weight" in changed


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_adapter_weights_moved_and_head_is_saved(runs, method: str, task: str) -> None:
    weights = load_file(runs(method, task)["bundle"] / "adapter" / "adapter_model.safetensors")
    assert any("classifier" in k for k in weights), sorted(weights)
    if method == "lora":
        lora_b = [v for k, v in weights.items() if "lora_B" in k]
        assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # initialised at zero
    else:
        vectors = [v for k, v in weights.items() if "ia3_l" in k]
        assert vectors and any(not torch.equal(v, torch.ones_like(v)) for v in vectors)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("method", METHODS)
def test_predictor_reproduces_the_recipe_test_metrics(runs, method: str, task: str) -> None:
    run = runs(method, task)
    recorded = json.loads((run["bundle"] / "eval.json").read_text())["test"]
    predictor = Predictor.load(run["bundle"], device="cpu")
    again = evaluate_bundle(run["bundle"], run["test"], predictor=predictor)
    if task == "multi":
        np.testing.assert_array_equal(predictor.thresholds, recorded["thresholds"])
        for key in ("subset_accuracy", "hamming_loss", "micro_f1", "macro_f1"):
            assert again[key] == pytest.approx(recorded[key], abs=1e-9), key
    else:
        assert again["accuracy"] == recorded["accuracy"]
        assert again["confusion_matrix"] == recorded["confusion_matrix"]
        assert again["log_loss"] == pytest.approx(recorded["log_loss"], abs=1e-5)
    assert again["n_examples"] == recorded["n_examples"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merged_adapter_gives_the_unmerged_probabilities(
    runs, tiny_model: Path, method: str, task: str
) -> None:
    """The predictor folds the adapter into the weights; that must not change the outputs."""
    from peft import PeftModel

    from tuneforge.models.classifier import build_classifier
    from tuneforge.models.forward import sigmoid, softmax

    run = runs(method, task)
    predictor = Predictor.load(run["bundle"], device="cpu")
    texts = ["good film", "the team and the bank", "awful music", "price of the match"]
    merged = predictor.probabilities(texts)
    model = build_classifier(tiny_model, predictor.labels, multi_label=task == "multi")
    model = PeftModel.from_pretrained(model, run["bundle"] / "adapter").eval()
    tokens = predictor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**tokens).logits.numpy()
    unmerged = sigmoid(logits) if task == "multi" else softmax(logits)
    np.testing.assert_allclose(merged, unmerged, atol=1e-5, rtol=0)


def test_adapter_bundle_refuses_a_changed_base_model(tiny_model: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    train, test = _data(tmp_path, "single")
    config = _config(train, test, tmp_path / "bundle", base, "lora", multi=False)
    config = RunConfig(**{**config.__dict__, "train": TrainConfig(epochs=1, num_threads=1)})
    finetune_classifier(config)
    Predictor.load(tmp_path / "bundle", device="cpu")  # loads while the base is unchanged

    weights = load_file(base / "model.safetensors")
    key = next(k for k in weights if k.endswith("query.weight"))
    weights[key] = weights[key] + 1e-3
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match="sha256") as info:
        Predictor.load(tmp_path / "bundle", device="cpu")
    assert "install the same base model" in str(info.value)
