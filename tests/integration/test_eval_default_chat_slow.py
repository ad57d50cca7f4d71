"""``tuneforge eval default-chat`` on five E2E validation prompts (the ``slow`` tier: the
real SmolLM2-135M-Instruct): the replies are English about the restaurant, so BLEU is
above zero."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import run_cli_subprocess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# the public e2e_nlg set beside the repository (a checkout's ../shared/data), when present
VALIDATION = next(
    (
        d / "e2e_nlg" / "validation_refs.jsonl"
        for d in (
            Path(__file__).resolve().parents[2].parent / "shared/data",
            Path("/work/shared/data"),
        )
        if (d / "e2e_nlg" / "validation_refs.jsonl").is_file()
    ),
    Path("/nonexistent"),
)


@pytest.mark.skipif(not VALIDATION.is_file(), reason="the E2E NLG data set is not here")
def test_default_chat_scores_above_zero_bleu_on_five_validation_prompts(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = run_cli_subprocess(
        "eval", "default-chat", VALIDATION, "--limit", "5", "--max-tokens", "80",
        "--json", out, timeout=840,
    )  # fmt: skip
    assert result.code == 0, result
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["metrics"]["examples"] == 5
    assert report["metrics"]["bleu"] > 0
    assert 0 < report["metrics"]["rouge_l"] <= 100
    assert 0 <= report["metrics"]["slot_coverage"] <= 1
    assert all(e["output"].strip() for e in report["examples"])
