"""Settings and data that used to crash ``tuneforge train`` after it started: infinite or
overflowing numbers, a batch larger than the data, a one-class file, a text that cannot be
encoded. Each is exit 2 with one message, before training, with nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CliResult, run_cli, sentiment_rows, write_csv, write_jsonl
from tuneforge.bundle import staging_dir


def _train(tmp: Path, tiny_model: Path, train: Path, *args: str) -> tuple[CliResult, Path]:
    output = tmp / "out"
    result = run_cli(
        "train", train, "--output", output, "--model", tiny_model, "--quiet", "--threads", "1",
        *args,
    )  # fmt: skip
    return result, output


def _assert_one_error_nothing_left(result: CliResult, output: Path, *needles: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("error:") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in {result.stderr!r}"
    assert not output.exists()
    assert not staging_dir(output).exists(), "a half-written .partial directory was left"


BAD_SETTINGS = {
    "--epochs inf": (["--epochs", "inf"], "--epochs"),
    "--epochs 1e309 (inf)": (["--epochs", "1e309"], "train.epochs"),
    "--epochs 1e12": (["--epochs", "1e12"], "train.epochs"),
    "--set train.epochs=.inf": (["--set", "train.epochs=.inf"], "train.epochs"),
    "--set train.epochs=.nan": (["--set", "train.epochs=.nan"], "train.epochs"),
    "--batch-size 10**22": (["--batch-size", str(10**22)], "train.batch_size"),
    "--learning-rate-multiplier 1e300": (
        ["--learning-rate-multiplier", "1e300"],
        "train.learning_rate_multiplier",
    ),
    "--learning-rate-multiplier inf": (
        ["--learning-rate-multiplier", "inf"],
        "train.learning_rate_multiplier",
    ),
    "--weight-decay 1e309": (["--weight-decay", "1e309"], "train.weight_decay"),
    "--max-grad-norm inf": (["--max-grad-norm", "inf"], "train.max_grad_norm"),
    "--min-epochs inf": (["--min-epochs", "inf"], "train.min_epochs"),
    "--gradient-accumulation 2**63": (
        ["--gradient-accumulation", str(2**63)],
        "train.gradient_accumulation",
    ),
    "--learning-rate 1 with multiplier 10": (
        ["--learning-rate", "1", "--learning-rate-multiplier", "10"],
        "learning_rate_multiplier",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS), ids=list(BAD_SETTINGS))
def test_non_finite_or_huge_settings_exit_2(case: str, tmp_path: Path, tiny_model: Path):
    args, needle = BAD_SETTINGS[case]
    train = write_csv(tmp_path / "train.csv", sentiment_rows(60))
    result, output = _train(tmp_path, tiny_model, train, *args)
    _assert_one_error_nothing_left(result, output, needle)


def test_a_batch_larger_than_the_training_rows_exits_2(tmp_path: Path, tiny_model: Path):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(60))  # 48 training rows
    result, output = _train(tmp_path, tiny_model, train, "--batch-size", "49")
    _assert_one_error_nothing_left(result, output, "train.batch_size", "48 training rows")


def test_a_one_class_file_exits_2_before_training(tmp_path: Path, tiny_model: Path):
    train = write_csv(tmp_path / "one.csv", [(text, "positive") for text, _ in sentiment_rows(60)])
    result, output = _train(tmp_path, tiny_model, train, "--epochs", "1")
    _assert_one_error_nothing_left(result, output, str(train), "2 classes", "'positive'")
    assert "loss" not in result.stderr and result.stdout == ""  # stopped before training


def test_a_text_that_is_not_utf8_encodable_exits_2_naming_the_line(
    tmp_path: Path, tiny_model: Path
):
    rows = [{"text": text, "label": label} for text, label in sentiment_rows(60)]
    rows[4]["text"] = "great film \ud800 really"  # a lone surrogate: valid JSON, not UTF-8
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    result, output = _train(tmp_path, tiny_model, train, "--epochs", "1")
    _assert_one_error_nothing_left(result, output, f"{train}:5:")
