"""ONNX export (fp32 and calibrated int8), the backend choice rule, and batch invariance:
a text's label and score do not depend on what it is batched with, for every backend."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import NEGATIVE, NEUTRAL, POSITIVE, run_cli, sentiment_rows, write_csv
from tuneforge.errors import InputError
from tuneforge.inference.export_report import choose_backend
from tuneforge.inference.predictor import Predictor
from tuneforge.recipes.export import export_bundle

# Documented bounds (docs/benchmarks.md): alone vs in a batch of 32 mixed-length texts.
SCORE_BOUND = {"torch": 1e-3, "onnx": 1e-3, "onnx-int8": 1e-3}


@pytest.fixture(scope="module")
def exported(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle trained to learn the sentiment cue words, exported fp32 + int8."""
    root = tmp_path_factory.mktemp("export")
    train = write_csv(root / "train.csv", sentiment_rows(240, seed=0))
    bundle = root / "bundle"
    result = run_cli(
        "train",
        train,
        "--model",
        tiny_model,
        "--epochs",
        "8",
        "--learning-rate",
        "2e-3",
        "--patience",
        "0",
        "--train-embeddings",
        "--threads",
        "1",
        "--quiet",
        "--output",
        bundle,
    )
    assert result.code == 0, result
    result = run_cli("export", bundle, "--int8", "--json")
    assert result.code == 0, result
    return bundle


def mixed_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = [*rng.sample(NEUTRAL, rng.randint(1, 18)), rng.choice(POSITIVE + NEGATIVE)]
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts


def test_export_writes_models_and_a_measured_report(exported: Path):
    assert (exported / "onnx" / "model.onnx").is_file()
    assert (exported / "onnx" / "model.int8.onnx").is_file()
    assert not list(exported.glob(".onnx*")), "no staging directory left behind"
    report = json.loads((exported / "onnx" / "export.json").read_text())
    backends = report["backends"]
    assert set(backends) == {"torch", "onnx", "onnx-int8"}
    assert report["validation"]["rows"] > 0
    assert backends["torch"]["accuracy"] >= 0.9, "the tiny model learns the cue words"
    assert backends["onnx"]["accuracy_drop"] == pytest.approx(0.0, abs=1e-9)
    assert backends["onnx"]["max_probability_diff"] < 1e-4
    assert backends["onnx-int8"]["accuracy_drop"] <= 0.05
    assert backends["onnx-int8"]["label_agreement"] >= 0.95
    for entry in backends.values():
        assert entry["batch1_ms_p50"] > 0 and entry["batch32_per_s"] > 0
    import onnx

    assert report["fused_attention"] is True, "a BERT's attention fuses into one kernel"
    fp32_ops = {n.op_type for n in onnx.load(str(exported / "onnx" / "model.onnx")).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= fp32_ops
    fp32_graph = onnx.load(str(exported / "onnx" / "model.onnx")).graph
    assert sum("first_token" in n.name for n in fp32_graph.node) == 2, "last layer: token 0"
    ops = {n.op_type for n in onnx.load(str(exported / "onnx" / "model.int8.onnx")).graph.node}
    assert {"QAttention", "MatMulIntegerToFloat", "QuantizeLinear"} <= ops, "int8 kernels"
    assert "MatMulInteger" not in ops, "every int8 MatMul uses the fused kernel"
    assert "DynamicQuantizeLinear" not in ops, "no per-batch activation scales"


def test_a_model_that_does_not_fuse_exports_the_plain_graph(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Architectures ONNX Runtime's optimizer does not recognise keep the plain graph; int8
    then leaves the activation x activation MatMuls in fp32 and stays batch-invariant."""
    import onnx

    import tuneforge.recipes.export as export

    def no_fusion(raw: Path, out: Path, **_: int) -> bool:
        shutil.copyfile(raw, out)
        return False

    monkeypatch.setattr(export, "fuse_transformer", no_fusion)
    bundle = tmp_path / "plain"
    shutil.copytree(exported, bundle, ignore=shutil.ignore_patterns("onnx"))
    report = export_bundle(bundle)
    assert report["fused_attention"] is False
    assert report["backends"]["onnx-int8"]["label_agreement"] >= 0.95
    graph = onnx.load(str(bundle / "onnx" / "model.int8.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert "Attention" not in ops and "DynamicQuantizeLinear" not in ops
    assert "MatMulIntegerToFloat" in ops and ops.count("MatMul") == 4, "QK^T, PV stay fp32"
    predictor = Predictor.load(bundle, backend="onnx-int8")
    texts = mixed_texts(32, seed=5)
    alone = np.vstack([predictor.probabilities([t]) for t in texts])
    batched = predictor.probabilities(texts, batch_size=32)
    assert np.abs(batched - alone).max() <= SCORE_BOUND["onnx-int8"]


@pytest.mark.parametrize("backend", ["torch", "onnx", "onnx-int8"])
def test_answers_do_not_depend_on_the_batch(exported: Path, backend: str):
    predictor = Predictor.load(exported, backend=backend, device="cpu")
    assert predictor.backend_name == backend
    texts = mixed_texts(64, seed=3)
    alone = np.vstack([predictor.probabilities([t]) for t in texts])
    for start in (0, 32):  # two batches of 32 texts of mixed lengths
        batched = predictor.probabilities(texts[start : start + 32], batch_size=32)
        ref = alone[start : start + 32]
        assert (batched.argmax(axis=1) == ref.argmax(axis=1)).all()
        assert np.abs(batched - ref).max() <= SCORE_BOUND[backend]
    # and against the exact torch reference, int8 stays close
    if backend != "torch":
        reference = Predictor.load(exported, backend="torch", device="cpu")
        agree = np.mean(reference.probabilities(texts).argmax(1) == alone.argmax(1))
        assert agree >= 0.95


def test_backend_choice_takes_the_fastest_within_the_accuracy_bound(exported: Path, tmp_path):
    bundle = tmp_path / "copy"
    shutil.copytree(exported, bundle)
    report_path = bundle / "onnx" / "export.json"
    report = json.loads(report_path.read_text())

    def set_numbers(**entries):
        for name, (drop, speed) in entries.items():
            report["backends"][name]["batch32_per_s"] = speed
            if name != "torch":
                report["backends"][name]["accuracy_drop"] = drop
        report_path.write_text(json.dumps(report))

    set_numbers(torch=(0, 100), onnx=(0.0, 300), **{"onnx-int8": (0.004, 900)})
    assert choose_backend(bundle, max_accuracy_drop=0.01) == "onnx-int8"
    assert choose_backend(bundle, max_accuracy_drop=0.001) == "onnx"  # int8 drop too big
    set_numbers(torch=(0, 100), onnx=(0.02, 300), **{"onnx-int8": (0.03, 900)})
    assert choose_backend(bundle, max_accuracy_drop=0.01) == "torch"
    set_numbers(torch=(0, 500), onnx=(0.0, 300), **{"onnx-int8": (0.0, 400)})
    assert choose_backend(bundle, max_accuracy_drop=0.01) == "torch"  # fastest is torch
    (bundle / "onnx" / "model.int8.onnx").unlink()
    set_numbers(torch=(0, 100), onnx=(0.0, 300), **{"onnx-int8": (0.0, 900)})
    assert choose_backend(bundle, max_accuracy_drop=0.01) == "onnx"  # missing file skipped
    assert Predictor.load(bundle, backend="auto").backend_name == "onnx"
    shutil.rmtree(bundle / "onnx")
    assert choose_backend(bundle, max_accuracy_drop=0.01) == "torch"  # never exported


def test_cli_predict_with_a_backend_and_clear_errors(exported: Path, tmp_path: Path):
    result = run_cli("predict", exported, "good film", "--backend", "onnx-int8")
    assert result.code == 0, result
    assert json.loads(result.stdout.splitlines()[0])["label"] in {"positive", "negative"}
    bare = tmp_path / "bare"
    shutil.copytree(exported, bare, ignore=shutil.ignore_patterns("onnx"))
    result = run_cli("predict", bare, "good film", "--backend", "onnx")
    assert result.code == 2 and "tuneforge export" in result.stderr
    result = run_cli("export", exported, "--format", "tflite")
    assert result.code == 2 and "--format onnx" in result.stderr


def test_export_needs_validation_data_when_the_source_is_gone(exported: Path, tmp_path: Path):
    bundle = tmp_path / "moved"
    shutil.copytree(exported, bundle, ignore=shutil.ignore_patterns("onnx"))
    splits = json.loads((bundle / "splits.json").read_text())
    splits["validation"]["source"] = str(tmp_path / "gone.csv")
    (bundle / "splits.json").write_text(json.dumps(splits))
    result = run_cli("export", bundle)
    assert result.code == 2 and "--validation" in result.stderr
    assert not (bundle / "onnx").exists()
    other = write_csv(tmp_path / "val.csv", sentiment_rows(40, seed=9))
    report = export_bundle(bundle, int8=False, validation_file=str(other))
    assert report["validation"] == {"source": str(other), "rows": 40}
    assert set(report["backends"]) == {"torch", "onnx"}


def test_predict_on_onnx_loads_neither_torch_nor_transformers(exported: Path):
    """``tuneforge predict`` on an exported bundle starts fast: no torch, no transformers."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from tuneforge.inference.predictor import Predictor\n"
        f"p = Predictor.load({str(exported)!r}, backend='onnx-int8', threads=1)\n"
        "pred = p.predict('a great film')\n"
        "heavy = ['torch', 'transformers', 'sklearn', 'onnx', 'peft']\n"
        "print(json.dumps([pred.label, pred.score, [m for m in heavy if m in sys.modules]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    label, score, heavy = json.loads(done.stdout.splitlines()[-1])
    assert heavy == []
    same = Predictor.load(exported, backend="onnx-int8", threads=1).predict("a great film")
    assert (label, score) == (same.label, pytest.approx(same.score, abs=1e-6))


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predictor_takes_threads_for_every_backend(exported: Path, backend: str):
    import torch

    before = torch.get_num_threads()
    try:
        one = Predictor.load(exported, backend=backend, threads=1)
        if backend == "torch":
            assert torch.get_num_threads() == 1  # process-wide
        else:
            assert one.backend.session.get_session_options().intra_op_num_threads == 1
        default = Predictor.load(exported, backend=backend)  # the default choice
        assert default.predict("a great film").label == one.predict("a great film").label
        with pytest.raises(InputError, match="threads"):
            Predictor.load(exported, backend=backend, threads=0)
    finally:
        torch.set_num_threads(before)
