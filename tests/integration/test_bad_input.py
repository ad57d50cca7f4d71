"""Bad input through the CLI: exit code 2, one clear message on stderr, nothing written.

The cases run the real entry point (``tuneforge.cli.main:main``) in-process, which saves
importing torch in a fresh interpreter per case; one case runs ``python -m tuneforge``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import (
    CliResult,
    multilabel_rows,
    run_cli,
    run_cli_subprocess,
    sentiment_rows,
    write_csv,
    write_jsonl,
)
from tuneforge.bundle import staging_dir
from tuneforge.training.device import cpu_has_fast_bf16


def assert_one_clear_error(result: CliResult, *needles: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("error:") == 1, result.stderr
    assert result.stdout == ""
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in {result.stderr!r}"


def _good(tmp: Path) -> Path:
    return write_csv(tmp / "train.csv", sentiment_rows(60))


def _write(tmp: Path, name: str, text: str | bytes) -> Path:
    path = tmp / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _missing(tmp: Path):
    _good(tmp)
    train = tmp / "trian.csv"
    return [train], [f"{train}: file not found", "did you mean", "train.csv"]


def _directory(tmp: Path):
    folder = tmp / "data"
    folder.mkdir()
    write_csv(folder / "train.csv", sentiment_rows(20))
    return [folder], ["is a directory, not a file", "train.csv"]


def _empty(tmp: Path):
    return [_write(tmp, "train.csv", "")], ["the file is empty"]


def _header_only(tmp: Path):
    return [_write(tmp, "train.csv", "text,label\n")], ["the file has a header but no records"]


def _no_text_column(tmp: Path):
    train = write_csv(tmp / "train.csv", sentiment_rows(20), header=("body", "label"))
    return [train], ["no text column found", "the columns present are: 'body', 'label'"]


def _no_label_column(tmp: Path):
    train = write_csv(tmp / "train.csv", sentiment_rows(20), header=("text", "tag"))
    return [train], ["no label column found", "'text', 'tag'", "--label-column"]


def _empty_cells(tmp: Path):
    rows = sentiment_rows(20)
    rows[1] = ("  ", rows[1][1])  # line 3
    rows[3] = (rows[3][0], "")  # line 5
    train = write_csv(tmp / "train.csv", rows)
    return [train], [f"{train}:3: column 'text': empty text", f"{train}:5: column 'label'"]


def _ragged(tmp: Path):
    lines = ["text,label", "good film,positive", "bad film,negative", "a,b,c", "ok,positive"]
    train = _write(tmp, "train.csv", "\n".join(lines) + "\n")
    return [train], [f"{train}:4:", "the row has 3 field(s), the header has 2"]


def _latin1(tmp: Path):
    body = "text,label\ngood,positive\nbad,negative\ncaf\xe9 good,positive\n"
    train = _write(tmp, "train.csv", body.encode("latin-1"))
    return [train], [f"{train}:4:", "byte 0xe9", "not valid UTF-8", "iconv -f latin1 -t utf-8"]


def _bad_jsonl(tmp: Path):
    rows = [json.dumps({"text": t, "label": y}) for t, y in sentiment_rows(20)]
    rows[1] = '{"text": "good film", "label": positive}'  # line 2
    train = _write(tmp, "train.jsonl", "\n".join(rows) + "\n")
    return [train], [f"{train}:2:", "invalid JSON"]


def _unseen_validation_label(tmp: Path):
    validation = write_csv(tmp / "val.csv", [("good", "positive"), ("meh", "neutral")])
    args = [_good(tmp), "--validation", validation]
    return args, [
        f"{validation}:3:",
        "validation label 'neutral'",
        "does not occur in the training",
    ]


def _tiny_class(tmp: Path):
    train = write_csv(
        tmp / "train.csv", [*sentiment_rows(40), ("meh", "neutral"), ("so so", "neutral")]
    )
    return [train], ["class 'neutral' has 2 example(s); 3 are needed", "--validation/--test"]


def _too_few(tmp: Path):
    train = write_csv(tmp / "train.csv", sentiment_rows(6))
    return [train], ["only 6 training example(s); at least 10 are needed"]


def _unknown_method(tmp: Path):
    args = [_good(tmp), "--method", "prefix"]
    return args, ["unknown method 'prefix'; choose one of: full, head, ia3, lora"]


def _no_model_dir(tmp: Path):
    return [_good(tmp), "--model", tmp / "no-such-model"], ["does not exist or is not a directory"]


def _hub_id_offline(tmp: Path):
    args = [_good(tmp), "--model", "some-org/some-model-that-is-not-cached"]
    needles = ["'some-org/some-model-that-is-not-cached'", "offline mode", "download it once"]
    return args, needles


def _incomplete_model_dir(tmp: Path, tiny_model: Path):
    model = tmp / "model"
    model.mkdir()
    shutil.copy(tiny_model / "config.json", model)
    shutil.copy(tiny_model / "model.safetensors", model)
    return [_good(tmp), "--model", model], ["has no tokenizer files", "save_pretrained"]


def _unknown_architecture(tmp: Path, tiny_model: Path):
    model = tmp / "model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "not-a-model"}))
    return [_good(tmp), "--model", model], ["could not load a classifier", "not-a-model"]


def _epochs_abc(tmp: Path):
    return [_good(tmp), "--epochs", "abc"], ["--epochs must be a", "or 'auto', got 'abc'"]


def _batch_size_zero(tmp: Path):
    return [_good(tmp), "--batch-size", "0"], ["batch_size must be a positive number"]


def _precision_fp16(tmp: Path):
    return [_good(tmp), "--precision", "fp16"], ["precision must be one of auto, fp32, bf16"]


CASES: dict[str, Callable] = {
    "missing-file": _missing,
    "directory": _directory,
    "empty-file": _empty,
    "header-only": _header_only,
    "no-text-column": _no_text_column,
    "no-label-column": _no_label_column,
    "empty-text-and-label": _empty_cells,
    "ragged-rows": _ragged,
    "not-utf8": _latin1,
    "invalid-jsonl-line": _bad_jsonl,
    "validation-label-not-in-train": _unseen_validation_label,
    "class-too-small-to-stratify": _tiny_class,
    "fewer-than-10-examples": _too_few,
    "unknown-method": _unknown_method,
    "model-path-missing": _no_model_dir,
    "hub-id-offline": _hub_id_offline,
    "epochs-abc": _epochs_abc,
    "batch-size-0": _batch_size_zero,
    "precision-fp16": _precision_fp16,
}
MODEL_CASES: dict[str, Callable] = {
    "model-dir-without-tokenizer": _incomplete_model_dir,
    "model-of-unknown-architecture": _unknown_architecture,
}


def _train(tmp: Path, output: Path, tiny_model: Path, args: list) -> CliResult:
    extra = [] if "--model" in args else ["--model", tiny_model]
    return run_cli("train", *args, *extra, "--output", output, "--epochs", "1", "--quiet")


def _assert_nothing_written(output: Path) -> None:
    assert not output.exists()
    assert not staging_dir(output).exists()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_train_input_exits_2(
    case: str, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args, needles = CASES[case](tmp_path)
    output = tmp_path / "out"
    # --epochs abc must win over the helper's --epochs 1: put the case's args last.
    extra = [] if "--model" in args else ["--model", tiny_model]
    result = run_cli("train", "--output", output, "--epochs", "1", "--quiet", *extra, *args)
    assert_one_clear_error(result, *needles)
    _assert_nothing_written(output)


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_broken_model_dir_exits_2_and_leaves_no_staging_dir(
    case: str, tmp_path: Path, tiny_model: Path
) -> None:
    args, needles = MODEL_CASES[case](tmp_path, tiny_model)
    output = tmp_path / "out"
    result = _train(tmp_path, output, tiny_model, args)
    assert_one_clear_error(result, *needles)
    _assert_nothing_written(output)


def test_all_problems_of_all_files_are_reported_at_once(tmp_path: Path, tiny_model: Path) -> None:
    rows = sentiment_rows(20)
    rows[2] = ("", "positive")  # line 4
    train = write_csv(tmp_path / "train.csv", rows)
    test = _write(tmp_path, "test.csv", "text,label\nok,positive,extra\n")
    output = tmp_path / "out"
    result = _train(tmp_path, output, tiny_model, [train, "--test", test])
    assert_one_clear_error(result, f"{train}:4:", f"{test}:2:", "2 problem(s)")
    _assert_nothing_written(output)


def test_non_empty_output_without_overwrite(tmp_path: Path, tiny_model: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("precious")
    result = _train(tmp_path, output, tiny_model, [_good(tmp_path)])
    assert_one_clear_error(result, f"--output {output} is not empty", "--overwrite")
    assert [p.name for p in output.iterdir()] == ["keep.txt"]
    assert (output / "keep.txt").read_text() == "precious"
    assert not staging_dir(output).exists()


def test_output_that_is_a_file(tmp_path: Path, tiny_model: Path) -> None:
    output = _write(tmp_path, "out", "a file")
    result = _train(tmp_path, output, tiny_model, [_good(tmp_path)])
    assert_one_clear_error(result, "is a file; pass a directory path")
    assert output.read_text() == "a file"


@pytest.mark.skipif(
    cpu_has_fast_bf16() or torch.cuda.is_available(), reason="this hardware has fast bf16"
)
def test_bf16_on_a_cpu_without_bf16(tmp_path: Path, tiny_model: Path) -> None:
    output = tmp_path / "out"
    result = _train(tmp_path, output, tiny_model, [_good(tmp_path), "--precision", "bf16"])
    assert_one_clear_error(result, "bf16 was requested", "--precision auto or fp32")
    _assert_nothing_written(output)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "Missing option '--output'"),
        (("--output", "o", "--no-such-option"), "No such option: --no-such-option"),
        (("--output", "o", "--seed", "abc"), "Invalid value for '--seed'"),
    ],
)
def test_usage_errors_exit_2(args: tuple, needle: str, tmp_path: Path) -> None:
    result = run_cli("train", _good(tmp_path), *args)
    assert result.code == 2, result
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_bad_input_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """The real process: exit status 2, one line, no traceback."""
    output = tmp_path / "out"
    result = run_cli_subprocess("train", "missing.csv", "--output", output, cwd=tmp_path)
    assert_one_clear_error(result, "missing.csv: file not found")
    _assert_nothing_written(output)


def test_duplicates_are_a_warning_not_an_error(tmp_path: Path, tiny_model: Path) -> None:
    rows = sentiment_rows(60) + sentiment_rows(60)[:20]
    train = write_csv(tmp_path / "train.csv", rows)
    validation = write_csv(tmp_path / "val.csv", [*sentiment_rows(20, seed=5), rows[0]])
    test = write_csv(tmp_path / "test.csv", sentiment_rows(20, seed=6))
    result = run_cli("data", "check", train, validation, test, "--model", tiny_model, "--json")
    assert result.code == 0, result
    report = json.loads(result.stdout)
    assert report["duplicates"]["train"]["exact"] == len(rows) - len({t for t, _ in rows})
    assert report["duplicates"]["train"]["exact"] >= 20
    assert report["leakage"]["train/validation"]  # rows[0] is in both
    assert any("duplicate" in w for w in report["warnings"])

    output = tmp_path / "out"
    result = _train(tmp_path, output, tiny_model, [train, "--threads", "1"])
    assert result.code == 0, result
    assert (output / "tuneforge.json").is_file()


def test_data_check_good_data(tmp_path: Path, tiny_model: Path) -> None:
    train = _good(tmp_path)
    test = write_csv(tmp_path / "test.csv", sentiment_rows(20, seed=3))
    result = run_cli("data", "check", train, "--test", test, "--model", tiny_model, "--json")
    assert result.code == 0, result
    report = json.loads(result.stdout)
    assert {"classes", "duplicates", "leakage", "token_lengths"} <= set(report)
    assert report["classes"]["positive"]["test"] == report["classes"]["negative"]["test"] == 10
    assert report["splits"]["validation"]["carved"] and not report["splits"]["test"]["carved"]
    assert report["token_lengths"]

    result = run_cli("data", "check", train, "--model", tiny_model)  # tables, not JSON
    assert result.code == 0, result
    assert "positive" in result.stdout


def test_data_check_multi_label_jsonl(tmp_path: Path, tiny_model: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", multilabel_rows(60))
    result = run_cli("data", "check", train, "--multi-label", "--model", tiny_model, "--json")
    assert result.code == 0, result
    assert set(json.loads(result.stdout)["classes"]) == {"money", "sports"}


@pytest.mark.parametrize("case", ["header-only", "ragged-rows", "fewer-than-10-examples"])
def test_data_check_bad_data_exits_2(case: str, tmp_path: Path, tiny_model: Path) -> None:
    args, needles = CASES[case](tmp_path)
    result = run_cli("data", "check", *args, "--model", tiny_model, "--json")
    assert_one_clear_error(result, *needles)


def test_data_check_too_many_files(tmp_path: Path, tiny_model: Path) -> None:
    train = _good(tmp_path)
    result = run_cli("data", "check", train, train, train, train, "--model", tiny_model)
    assert_one_clear_error(result, "at most 3 files")
