"""`tuneforge train chat.jsonl` with no --model fine-tunes the real default-chat base for
one step and the bundle chats. The ``slow`` tier (``pytest -m slow``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_train_default_chat_for_one_step_then_chat(tmp_path: Path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Describe venue {i}."},
                {"role": "assistant", "content": f"Venue {i} is a cheap pub by the river."},
            ]
        }
        for i in range(8)
    ]
    train = write_jsonl(tmp_path / "chat.jsonl", rows)
    bundle = tmp_path / "bundle"
    result = run_cli("train", train, "--output", bundle, "--epochs", "1", "--quiet")
    assert result.code == 0, result
    assert "task: generate" in result.stderr
    manifest = json.loads((bundle / "tuneforge.json").read_text())
    assert manifest["base_model"]["name"] == "default-chat" and manifest["method"] == "lora"
    assert "Apache" in (bundle / "README.md").read_text()
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"messages": [{"role": "user", "content": "Describe venue 3."}]}]
    )
    out = tmp_path / "out.jsonl"
    generated = run_cli(
        "generate", bundle, "--input", prompts, "--output", out, "--max-tokens", "8"
    )
    assert generated.code == 0, generated
    assert json.loads(out.read_text())["completion"].strip()
