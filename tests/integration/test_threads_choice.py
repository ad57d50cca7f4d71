"""A training run says how many threads it used and why (the bundle's environment.json)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, sentiment_rows, write_csv


def test_bundle_records_the_thread_choice_and_its_reason(tiny_model: Path, tmp_path: Path):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(60, seed=1))
    result = run_cli(
        "train",
        train,
        "--model",
        tiny_model,
        "--epochs",
        "1",
        "--threads",
        "1",
        "--quiet",
        "--output",
        tmp_path / "bundle",
    )
    assert result.code == 0, result
    env = json.loads((tmp_path / "bundle" / "environment.json").read_text())
    assert env["torch_threads"] == 1
    assert env["threads_reason"].startswith("1 thread: as requested (")
    assert "CPU" in env["threads_reason"]
