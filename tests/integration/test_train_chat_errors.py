"""Bad input to a generative `tuneforge train`, and a classifier bundle given to the chat
commands: exit 2 with one clear message, nothing written. A file of labels still trains a
classifier under --task auto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli, write_jsonl


def _chat(q: str, a: str, weight: int | None = None) -> dict:
    reply: dict = {"role": "assistant", "content": a}
    if weight is not None:
        reply["weight"] = weight
    return {"messages": [{"role": "user", "content": q}, reply]}


def _free_text(tmp_path: Path, weight: int | None = None) -> Path:
    rows = [_chat(f"question {i}?", f"a different answer number {i}", weight) for i in range(6)]
    return write_jsonl(tmp_path / "chat.jsonl", rows)


def _one_error(result) -> str:
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


def test_a_file_without_a_trained_reply_is_refused(tmp_path: Path, tiny_llama: Path):
    train = _free_text(tmp_path, weight=0)
    out = tmp_path / "out"
    result = run_cli("train", train, "--task", "generate", "--model", tiny_llama, "-o", out)
    message = _one_error(result)
    assert "chat.jsonl:1:" in message and "weight 0" in message and "task:" not in message
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


@pytest.mark.parametrize(
    "flag",
    [("--multi-label",), ("--class-weights",), ("--label-column", "label"),
     ("--selection-metric", "accuracy")],
)  # fmt: skip
def test_a_classifier_setting_with_generate_is_refused(tmp_path: Path, tiny_llama: Path, flag):
    train = _free_text(tmp_path)
    out = tmp_path / "out"
    result = run_cli("train", train, "--model", tiny_llama, "-o", out, *flag)
    message = _one_error(result)
    assert flag[0] in message and "--task classify" in message
    assert not out.exists()


def test_a_classifier_base_with_generate_is_refused(tmp_path: Path, tiny_model: Path):
    train = _free_text(tmp_path)
    out = tmp_path / "out"
    result = run_cli("train", train, "--model", tiny_model, "-o", out, "--quiet")
    message = _one_error(result)
    assert "task: generate" in result.stderr
    assert "ForCausalLM" in message
    assert not out.exists()


def test_the_default_model_of_generate_is_default_chat_not_the_classifier(tmp_path: Path):
    """`--model default` names the classifier base: a generative run refuses it and says
    which names work (with no --model, default-chat is used)."""
    train = _free_text(tmp_path)
    result = run_cli("train", train, "--model", "default", "-o", tmp_path / "out", "--quiet")
    message = _one_error(result)
    assert "default-chat" in message


def test_a_label_file_still_trains_a_classifier_under_auto(tmp_path: Path, tiny_model: Path):
    rows = [_chat(f"good film {i}", ["positive", "negative"][i % 2]) for i in range(40)]
    train = write_jsonl(tmp_path / "labels.jsonl", rows)
    out = tmp_path / "out"
    result = run_cli(
        "train", train, "--model", tiny_model, "-o", out, "--epochs", "1", "--quiet",
        "--export", "none", "--threads", "1",
    )  # fmt: skip
    assert result.code == 0, result
    assert "task: classify (2 distinct final replies among 40 examples" in result.stderr
    manifest = json.loads((out / "tuneforge.json").read_text())
    assert manifest["task"] == "single_label" and manifest["labels"] == ["negative", "positive"]
    assert "generation" not in manifest
    first = json.loads((out / "events.jsonl").read_text().splitlines()[0])
    assert first["type"] == "task" and first["task"] == "classify"


def test_a_classifier_bundle_given_to_generate_is_refused(tmp_path: Path, tiny_model: Path):
    from conftest import sentiment_rows, write_csv

    train = write_csv(tmp_path / "train.csv", sentiment_rows(40))
    bundle = tmp_path / "clf"
    trained = run_cli(
        "train", train, "--model", tiny_model, "-o", bundle, "--epochs", "1", "--quiet",
        "--export", "none", "--threads", "1",
    )  # fmt: skip
    assert trained.code == 0, trained
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    result = run_cli("generate", bundle, "--input", prompts, "--output", tmp_path / "o.jsonl")
    message = _one_error(result)
    assert "classifier bundle" in message and "tuneforge predict" in message
    assert not (tmp_path / "o.jsonl").exists()
