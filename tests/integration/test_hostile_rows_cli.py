"""A hostile row through the CLI (``train`` and ``data check``): a JSONL line nested past the
parser's depth, a lone surrogate in a text or a label. Each is exit 2 with one message naming
the file and the line, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CliResult, run_cli, sentiment_rows
from tuneforge.bundle import staging_dir

DEEP = '{"text": ' + "[" * 50_000 + "]" * 50_000 + ', "label": "negative"}'
SURROGATE_TEXT = json.dumps({"text": "a bad \ud800 film", "label": "negative"})
SURROGATE_LABEL = json.dumps({"text": "a bad film", "label": "neg\udc00ative"})
CASES = {
    "nested": (DEEP, "nested too deeply"),
    "surrogate-text": (SURROGATE_TEXT, "surrogate"),
    "surrogate-label": (SURROGATE_LABEL, "surrogate"),
}


def hostile_file(tmp: Path, line: str) -> tuple[Path, int]:
    """60 good rows with ``line`` as line 31; (path, that line's number)."""
    rows = [json.dumps({"text": t, "label": lab}) for t, lab in sentiment_rows(60)]
    rows.insert(30, line)
    path = tmp / "train.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path, 31


def assert_one_clear_error(result: CliResult, *needles: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("error:") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in {result.stderr!r}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_exits_2_naming_file_and_line_and_writes_nothing(
    case: str, tmp_path: Path, tiny_model: Path
) -> None:
    line, needle = CASES[case]
    train, number = hostile_file(tmp_path, line)
    output = tmp_path / "out"
    result = run_cli(
        "train", train, "--model", tiny_model, "--output", output, "--epochs", "1", "--quiet"
    )
    assert_one_clear_error(result, f"{train}:{number}:", needle)
    assert not output.exists()
    assert not staging_dir(output).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_data_check_exits_2_naming_file_and_line(case: str, tmp_path: Path) -> None:
    line, needle = CASES[case]
    train, number = hostile_file(tmp_path, line)
    assert_one_clear_error(run_cli("data", "check", train), f"{train}:{number}:", needle)
