"""``tuneforge generate default-chat`` answers real questions (the ``slow`` tier: the real
SmolLM2-135M-Instruct, converted once into the cache on first use)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import run_cli_subprocess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_default_chat_answers_paris_for_the_capital_of_france(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
        {
            "messages": [
                {"role": "system", "content": "Answer with one word."},
                {"role": "user", "content": "Which city is the capital of France?"},
            ]
        },
    ]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run_cli_subprocess(
        "generate", "default-chat", "--input", prompts, "--output", out, "--max-tokens", "40",
        timeout=840,
    )  # fmt: skip
    assert result.code == 0, result
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["messages"] for w in written] == [r["messages"] for r in rows]
    for w in written:
        assert "Paris" in w["completion"], w
    assert written[1]["finish_reason"] == "stop"
