"""``tuneforge train`` options derived from the config dataclasses; --config and --set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import pytest
import typer

import tuneforge.config as config_module
from conftest import run_cli, sentiment_rows, write_csv
from tuneforge.cli.main import app
from tuneforge.cli.train_options import (
    NOT_ON_CLI,
    cli_settings,
    resolve_run_config,
    train_parameters,
)
from tuneforge.config import TrainConfig, all_settings, setting
from tuneforge.errors import InputError

# The flags users rely on; each must keep working.
KNOWN_FLAGS = [
    "--epochs",
    "--batch-size",
    "--learning-rate",
    "--head-lr-multiplier",
    "--max-length",
    "--seed",
    "--text-column",
    "--label-column",
    "--multi-label",
    "--label-separator",
    "--precision",
    "--patience",
    "--eval-every",
    "--selection-metric",
    "--warmup-ratio",
    "--weight-decay",
    "--gradient-accumulation",
    "--class-weights",
    "--lora-r",
    "--lora-alpha",
    "--train-embeddings",
    "--threads",
    "--model",
    "--method",
    "--validation",
    "--test",
    "--output",
    "-o",
    "--overwrite",
    "--resume",
    "--quiet",
    "--config",
    "--set",
]


def _train_command():
    group = typer.main.get_command(app)
    return group.commands["train"]  # type: ignore[attr-defined]


def _flags() -> set[str]:
    names: set[str] = set()
    for param in _train_command().params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


def test_every_setting_and_every_known_flag_is_an_option() -> None:
    flags = _flags()
    assert set(KNOWN_FLAGS) <= flags, set(KNOWN_FLAGS) - flags
    for s in all_settings():
        if s.key in NOT_ON_CLI:
            continue
        assert set(s.flag.split("/")) <= flags, s.key


def test_help_explains_every_option() -> None:
    for param in _train_command().params:
        assert getattr(param, "help", None) or param.name == "train_file", param.name
    result = run_cli("train", "--help")
    assert result.code == 0
    for s in cli_settings():
        assert s.flag.split("/")[0][:14] in result.stdout, s.flag


def _resolve(tmp: Path, *, file: dict | None = None, sets=(), **flags):
    config = None
    if file is not None:
        config = tmp / "run.yaml"
        config.write_text(json.dumps(file) if tmp.name.endswith("json") else _yaml(file))
    fixed = {k: flags.pop(k, None) for k in ("train_file", "output", "overwrite", "resume")}
    return resolve_run_config(config=config, set_=list(sets), **fixed, flags=flags)


def _yaml(raw: dict) -> str:
    import yaml

    return yaml.safe_dump(raw)


def test_precedence_flag_over_set_over_file_over_default(tmp_path: Path) -> None:
    file = {
        "data": {"train": "from-file.csv"},
        "output": "out",
        "train": {"epochs": 5, "patience": 7, "seed": 1},
    }
    config = _resolve(
        tmp_path,
        file=file,
        sets=["train.epochs=4", "train.patience=6", "train.learning_rate=2e-5"],
        train__epochs="3",
    )
    assert config.data.train == "from-file.csv"  # TRAIN is optional when the file names it
    assert config.train.epochs == 3  # flag > --set
    assert config.train.patience == 6  # --set > file
    assert config.train.seed == 1  # file > default
    assert config.train.learning_rate == 2e-5
    assert config.train.warmup_ratio == 0.06  # default
    # bool flags: --no-x turns off what the file turned on
    config = _resolve(
        tmp_path,
        file={**file, "data": {"train": "t", "multi_label": True}},
        data__multi_label=False,
    )
    assert config.data.multi_label is False


def test_bad_selection_metric_fails_before_any_data_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist.csv"
    result = run_cli("train", missing, "-o", tmp_path / "out", "--selection-metric", "f1")
    assert result.code == 2, result
    assert result.stderr.startswith("error: train.selection_metric: unknown metric 'f1'")
    assert "macro_f1" in result.stderr and "not found" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "train.epoch=3"], "did you mean train.epochs"),
        (["--set", "train.warmup_ratio=1.5"], "train.warmup_ratio must be a number in [0, 1)"),
        (["--set", "method.name=prefix"], "method.name: unknown method 'prefix'"),
        (["--lora-r", "0"], "method.lora_r must be a whole number in [1, 1024], got 0"),
        (["--threads", "many"], "--threads must be a whole number in [1, 256]"),
        (["--set", "data.multi_label=true", "--selection-metric", "log_loss"], "multi-label"),
    ],
)
def test_invalid_settings_exit_2_before_reading_data(tmp_path: Path, args, needle) -> None:
    result = run_cli("train", tmp_path / "missing.csv", "-o", tmp_path / "out", *args)
    assert result.code == 2, result
    assert result.stderr.count("error:") == 1 and needle in result.stderr, result.stderr


def test_config_file_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  bogus: 1\ndata:\n  train: x.csv\noutput: o\n")
    result = run_cli("train", "--config", bad)
    assert result.code == 2 and "unknown train options: bogus" in result.stderr
    result = run_cli("train", "--config", tmp_path / "nope.yaml")
    assert result.code == 2 and "file not found" in result.stderr
    result = run_cli("train", "-o", tmp_path / "o")
    assert result.code == 2 and "Missing argument 'TRAIN'" in result.stderr


def test_a_bundles_run_config_reruns_the_run(tmp_path: Path, tiny_model: Path) -> None:
    train = write_csv(tmp_path / "train.csv", sentiment_rows(80))
    first = tmp_path / "first"
    args = ["--model", tiny_model, "--epochs", "1", "--threads", "1", "--quiet"]
    assert run_cli("train", train, "-o", first, *args, "--set", "train.patience=0").code == 0
    second = tmp_path / "second"
    result = run_cli("train", "--config", first / "run_config.json", "-o", second, "--quiet")
    assert result.code == 0, result
    a = json.loads((first / "run_config.json").read_text())
    b = json.loads((second / "run_config.json").read_text())
    assert a.pop("output") != b.pop("output")
    assert a == b
    assert a["train"]["patience"] == 0
    metrics = [json.loads((d / "eval.json").read_text()) for d in (first, second)]
    assert metrics[0]["test"]["accuracy"] == metrics[1]["test"]["accuracy"]


def test_a_field_added_to_a_config_dataclass_becomes_a_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No edit of the CLI: a new TrainConfig field is a flag with its docstring as help."""

    @dataclasses.dataclass(frozen=True)
    class NewTrainConfig(TrainConfig):
        """Optimisation and schedule.

        Attributes:
            min_steps: Optimizer steps before early stopping may fire.
            schedule: Learning-rate schedule after warmup.
        """

        min_steps: int = setting(10, ge=0)
        schedule: Literal["linear", "cosine"] = "linear"

        def __post_init__(self) -> None:
            config_module._validate(self, "train")

    monkeypatch.setitem(config_module.SECTIONS, "train", NewTrainConfig)
    monkeypatch.setattr(config_module, "TrainConfig", NewTrainConfig)
    params = {p.name: p for p in train_parameters()}
    assert "train__min_steps" in params and "train__schedule" in params
    option = params["train__min_steps"].annotation.__metadata__[0]
    assert "--min-steps" in (option.default, *(option.param_decls or ()))
    assert option.help == "Optimizer steps before early stopping may fire."
    config = resolve_run_config(
        train_file="t.csv",
        output="o",
        config=None,
        set_=["train.schedule=cosine"],
        overwrite=None,
        resume=None,
        flags={"train__min_steps": "25"},
    )
    assert config.train.min_steps == 25 and config.train.schedule == "cosine"  # type: ignore[attr-defined]
    with pytest.raises(InputError, match=r"train\.schedule must be one of linear, cosine"):
        resolve_run_config(
            train_file="t.csv",
            output="o",
            config=None,
            set_=["train.schedule=step"],
            overwrite=None,
            resume=None,
            flags={},
        )
