"""train -> eval -> predict through the ``tuneforge`` CLI with the tiny random BERT.

One bundle is trained per module (through the real entry point, in-process) and every
test reads it; one test runs ``python -m tuneforge`` in a fresh interpreter.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import PRECISIONS, run_cli, run_cli_subprocess, sentiment_rows, write_csv

BUNDLE_FILES = [
    "tuneforge.json",
    "model/model.safetensors",
    "model/config.json",
    "tokenizer/tokenizer_config.json",
    "run_config.json",
    "events.jsonl",
    "eval.json",
    "data.json",
    "splits.json",
    "environment.json",
    "README.md",
    "eval_test.md",
    "confusion_matrix_test.png",
]
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz"}
FORMULAS = ['=HYPERLINK("http://evil.example","click")', "+1", "-2", "@x"]


@pytest.fixture(scope="module", params=PRECISIONS)
def trained(request, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train once per training precision through the CLI; return the paths and the result."""
    precision = request.param
    root = tmp_path_factory.mktemp(f"e2e-{precision}")
    train = write_csv(root / "train.csv", sentiment_rows(200, seed=0))
    test = write_csv(root / "test.csv", sentiment_rows(60, seed=1))
    bundle = root / "runs" / "sentiment"
    result = run_cli(
        "train",
        train,
        "--test",
        test,
        "--model",
        tiny_model,
        "--epochs",
        "10",
        "--learning-rate",
        "1e-3",
        "--patience",
        "0",
        "--train-embeddings",
        "--threads",
        "1",
        "--precision",
        precision,
        "--quiet",
        "--output",
        bundle,
    )
    return {
        "root": root,
        "train": train,
        "test": test,
        "bundle": bundle,
        "result": result,
        "precision": precision,
    }


@pytest.fixture(scope="module")
def predictor(trained: dict):
    """The bundle as ``tuneforge eval`` loads it: torch, fp32 (the reference)."""
    from tuneforge import Predictor

    return Predictor.load(trained["bundle"])


@pytest.fixture(scope="module")
def served(trained: dict):
    """The bundle as ``tuneforge predict`` loads it: the fastest backend within the bound."""
    from tuneforge import Predictor

    return Predictor.load(trained["bundle"], backend="auto")


def test_train_exits_0_and_prints_where_the_bundle_is(trained: dict) -> None:
    result = trained["result"]
    assert result.code == 0, result
    assert "Traceback" not in result.stderr
    assert str(trained["bundle"]) in result.stdout
    assert "tuneforge predict" in result.stdout


def test_bundle_layout_is_complete_and_safetensors_only(trained: dict) -> None:
    bundle: Path = trained["bundle"]
    for name in BUNDLE_FILES:
        assert (bundle / name).is_file(), f"missing {name}"
    assert any((bundle / "tokenizer").iterdir())
    assert not (bundle / "adapter").exists()
    for path in bundle.rglob("*"):
        if not path.is_file():
            continue
        assert path.suffix.lower() not in PICKLE_SUFFIXES, f"pickle-capable file {path}"
        head = path.read_bytes()[:4]
        assert not head.startswith(b"PK\x03\x04"), f"{path} is a zip (torch.save) file"
        assert not (len(head) > 1 and head[0] == 0x80 and head[1] <= 5), f"{path} is a pickle"
    # Nothing of the run is left beside the bundle: no staging dir, no temp files.
    siblings = sorted(p.name for p in bundle.parent.iterdir())
    assert siblings == [bundle.name], siblings
    assert not list(bundle.rglob("*.tmp")) and not list(bundle.rglob(".tmp-*"))


def test_manifest_and_metadata_files(trained: dict, tiny_model: Path) -> None:
    bundle: Path = trained["bundle"]
    manifest = json.loads((bundle / "tuneforge.json").read_text())
    assert manifest["format"] == "tuneforge-bundle"
    assert manifest["method"] == "full" and manifest["adapter"] is False
    assert manifest["task"] == "single_label"
    assert sorted(manifest["labels"]) == ["negative", "positive"]
    assert manifest["base_model"]["source"] == "local"
    assert len(manifest["base_model"]["sha256"]) == 64

    evals = json.loads((bundle / "eval.json").read_text())
    assert set(evals) == {"validation", "test"}
    assert evals["test"]["n_examples"] == 60  # the --test file, held out whole
    assert evals["test"]["accuracy"] >= 0.9, evals["test"]
    assert "confusion_matrix" in evals["test"]

    data = json.loads((bundle / "data.json").read_text())
    assert data["splits"]["test"]["rows"] == 60
    assert data["splits"]["test"]["carved_from_train"] is False
    assert data["splits"]["validation"]["carved_from_train"] is True
    assert data["splits"]["train"]["rows"] + data["splits"]["validation"]["rows"] == 200
    splits = json.loads((bundle / "splits.json").read_text())
    assert len(splits["test"]["row_hashes"]) == 60
    for name in ("train", "validation", "test"):
        assert len(splits[name]["row_hashes"]) == data["splits"][name]["rows"]

    env = json.loads((bundle / "environment.json").read_text())
    assert env["seed"] == 42
    assert env["precision"] == trained["precision"]
    run_config = json.loads((bundle / "run_config.json").read_text())
    assert run_config["train"]["epochs"] == 10
    assert run_config["method"]["freeze_embeddings"] is False
    assert (bundle / "confusion_matrix_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (bundle / "README.md").read_text()
    assert "accuracy" in card.lower()


def test_events_file(trained: dict) -> None:
    lines = (trained["bundle"] / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line is valid JSON
    assert all("type" in e and "time" in e for e in events)
    steps = [e for e in events if e["type"] == "step"]
    assert steps
    for e in steps:
        assert {"step", "loss", "lr", "examples_per_s"} <= set(e), e
    assert [e["step"] for e in steps] == list(range(1, len(steps) + 1))
    evals = [e for e in events if e["type"] == "eval"]
    assert evals and all(e["metrics"] and "accuracy" in e["metrics"] for e in evals)
    # The plan (and any data warnings) come before training starts.
    assert next(e for e in events if e["type"] not in ("plan", "warning"))["type"] == "start"
    assert [e["type"] for e in events].index("plan") < [e["type"] for e in events].index("start")
    assert events[-1]["type"] == "summary"
    summary = events[-1]
    assert summary["steps"] == len(steps)
    assert summary["test"]["accuracy"] >= 0.9


def test_eval_command_matches_predictor(trained: dict, predictor) -> None:
    out = trained["root"] / "reports" / "eval.json"  # parent does not exist yet
    result = run_cli("eval", trained["bundle"], trained["test"], "--json", out)
    assert result.code == 0, result
    assert out.is_file() and out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()
    metrics = json.loads(out.read_text())
    rows = list(csv.DictReader(trained["test"].open(encoding="utf-8")))
    preds = predictor.predict([r["text"] for r in rows])
    correct = sum(p.label == r["label"] for p, r in zip(preds, rows, strict=True))
    assert metrics["accuracy"] == pytest.approx(correct / len(rows), abs=1e-12)
    assert metrics["n_examples"] == len(rows)
    # Same bundle, same file: the CLI's eval equals the training run's test metrics, whatever
    # the training precision (the final evaluation runs in fp32, as the bundle is served).
    # Only batch composition differs (padding, batch size): fp32 rounding, ~1e-7.
    trained_test = json.loads((trained["bundle"] / "eval.json").read_text())["test"]
    assert metrics["accuracy"] == trained_test["accuracy"]
    assert metrics["log_loss"] == pytest.approx(trained_test["log_loss"], abs=1e-6)
    assert metrics["ece"] == pytest.approx(trained_test["ece"], abs=1e-6)
    assert "Accuracy" in out.with_suffix(".md").read_text()


def test_predict_texts_top_k(trained: dict) -> None:
    texts = ["i love this film", "this was awful"]
    result = run_cli("predict", trained["bundle"], *texts, "--top-k", "2")
    assert result.code == 0, result
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == ["positive", "negative"]
    for r in rows:
        assert set(r) >= {"label", "score", "top_k"}
        assert "probabilities" not in r
        assert len(r["top_k"]) == 2
        assert r["top_k"][0]["label"] == r["label"]
        assert r["top_k"][0]["score"] == pytest.approx(r["score"])
        assert r["top_k"][0]["score"] >= r["top_k"][1]["score"]
        assert r["top_k"][0]["score"] + r["top_k"][1]["score"] == pytest.approx(1.0)


def test_predict_in_a_fresh_interpreter(trained: dict) -> None:
    """``python -m tuneforge`` works and prints only JSON lines on stdout."""
    result = run_cli_subprocess("predict", trained["bundle"], "good good", cwd=trained["root"])
    assert result.code == 0, result
    assert "Traceback" not in result.stderr
    (line,) = result.stdout.splitlines()
    row = json.loads(line)
    assert row["label"] == "positive" and "top_k" not in row


def test_train_exports_onnx_backends_by_default(trained: dict) -> None:
    """``train`` ends with an ONNX export measured on validation, so ``predict`` and
    ``serve`` start on the fastest backend within the accuracy bound."""
    from tuneforge.inference.export_report import choose_backend, read_export_report

    report = read_export_report(trained["bundle"])
    assert report is not None and set(report["backends"]) == {"torch", "onnx", "onnx-int8"}
    assert (
        report["validation"]["rows"]
        == json.loads((trained["bundle"] / "data.json").read_text())["splits"]["validation"]["rows"]
    )
    assert choose_backend(trained["bundle"], 0.01) in {"onnx", "onnx-int8"}
    assert "exported, batch-1 p50" in trained["result"].stderr


def test_train_export_none_and_a_failed_export(tmp_path: Path, tiny_model: Path, monkeypatch):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(120, seed=3))
    common = ["--model", tiny_model, "--epochs", "1", "--threads", "1", "--quiet"]
    result = run_cli("train", train, *common, "--export", "none", "--output", tmp_path / "a")
    assert result.code == 0, result
    assert not (tmp_path / "a" / "onnx").exists()

    # A failed export warns and leaves the complete bundle (served by torch).
    import tuneforge.recipes.export as export

    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export, "export_bundle", broken)
    result = run_cli("train", train, *common, "--output", tmp_path / "b")
    assert result.code == 0, result
    assert "ONNX export skipped (RuntimeError: exporter crashed)" in " ".join(result.stderr.split())
    assert (tmp_path / "b" / "tuneforge.json").is_file()
    assert not (tmp_path / "b" / "onnx").exists()

    result = run_cli("train", train, *common, "--export", "fp16", "--output", tmp_path / "c")
    assert result.code == 2 and "--export must be one of int8, fp32, none" in result.stderr
    assert not (tmp_path / "c").exists()


def test_predict_file_to_csv_neutralises_formulas(trained: dict, served) -> None:
    root: Path = trained["root"]
    texts = ["i love this film", *FORMULAS, "a plain bad text"]
    source = write_csv(root / "in.csv", [(t,) for t in texts], header=("text",))
    out = root / "out.csv"
    result = run_cli("predict", trained["bundle"], "--input", source, "--output", out)
    assert result.code == 0, result
    with out.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["text", "label", "score"]
        rows = list(reader)
    assert len(rows) == len(texts)
    expected = served.predict(texts)
    for (text, label, score), original, pred in zip(rows, texts, expected, strict=True):
        if original in FORMULAS:
            assert text == "'" + original
        else:
            assert text == original
        assert label == pred.label
        assert float(score) == pytest.approx(pred.score, abs=1e-6)


def test_predict_file_to_jsonl(trained: dict, served) -> None:
    root: Path = trained["root"]
    texts = ["great story", "=1+1", "ugly ending"]
    source = root / "in.txt"
    source.write_text("\n".join(texts) + "\n\n", encoding="utf-8")  # blank lines skipped
    out = root / "out.jsonl"
    result = run_cli("predict", trained["bundle"], "--input", source, "--output", out)
    assert result.code == 0, result
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == texts  # JSON is not a spreadsheet: kept as is
    for row, pred in zip(rows, served.predict(texts), strict=True):
        assert row["label"] == pred.label
        assert row["probabilities"] == pytest.approx(pred.probabilities)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)


def test_threshold_abstains_on_uncertain_texts(trained: dict, served) -> None:
    root: Path = trained["root"]
    texts = ["good", "bad", "the", "movie was the plot", "i love this film", "and but"]
    probs = [p.score for p in served.predict(texts)]
    assert min(probs) < 0.99, probs
    # A cut between the least and the most confident text exercises both sides.
    for threshold in (0.99, (min(probs) + max(probs)) / 2):
        abstained = served.predict(texts, threshold=threshold)
        for text, pred, score in zip(texts, abstained, probs, strict=True):
            assert pred.score == score
            if score < threshold:
                assert pred.label is None and pred.labels == [], (text, threshold)
            else:
                assert pred.label is not None and pred.labels == [pred.label], (text, threshold)
    assert any(s >= (min(probs) + max(probs)) / 2 for s in probs)

    source = write_csv(root / "uncertain.csv", [(t,) for t in texts], header=("text",))
    out = root / "uncertain-out.csv"
    result = run_cli(
        "predict", trained["bundle"], "--input", source, "--output", out, "--threshold", "0.99"
    )
    assert result.code == 0, result
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    for row, score in zip(rows, probs, strict=True):
        assert (row["label"] == "") == (score < 0.99), (row, score)
        assert float(row["score"]) == pytest.approx(score, abs=1e-6)

    uncertain = [t for t, s in zip(texts, probs, strict=True) if s < 0.99]
    result = run_cli("predict", trained["bundle"], *uncertain, "--threshold", "0.99")
    assert result.code == 0, result
    assert all(json.loads(line)["label"] is None for line in result.stdout.splitlines())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "either TEXT arguments or --input"),
        (("x", "--threshold", "1.5"), "--threshold must be between 0 and 1"),
        (("x", "--output", "preds.xlsx"), "use a .csv or .jsonl"),
    ],
)
def test_predict_bad_options_exit_2(trained: dict, args: tuple, message: str) -> None:
    result = run_cli("predict", trained["bundle"], *args)
    assert result.code == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_on_a_directory_that_is_not_a_bundle(tmp_path: Path) -> None:
    result = run_cli("predict", tmp_path, "some text")
    assert result.code == 2, result
    assert "not a tuneforge bundle" in result.stderr


def test_eval_on_labels_the_model_does_not_know(trained: dict) -> None:
    root: Path = trained["root"]
    data = write_csv(root / "other.csv", [("good", "positive"), ("meh", "neutral")])
    out = root / "other-eval.json"
    result = run_cli("eval", trained["bundle"], data, "--json", out)
    assert result.code == 2, result
    assert f"{data}:3:" in result.stderr and "'neutral' is not one the model" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
