"""The public surface: a cheap ``import tuneforge``, the exported names and ``--help``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import tuneforge
from conftest import run_cli, run_cli_subprocess

HEAVY = ("torch", "transformers", "peft", "sklearn", "matplotlib", "safetensors", "pyarrow")
PUBLIC = [
    "Predictor",
    "Prediction",
    "finetune_classifier",
    "evaluate_bundle",
    "RunConfig",
    "DataConfig",
    "ModelConfig",
    "MethodConfig",
    "TrainConfig",
    "InputError",
    "TuneforgeError",
    "Generator",
    "Completion",
]
# The train options the README and docs/cli.md promise.
TRAIN_CONTRACT = [
    "--validation",
    "--test",
    "--model",
    "--method",
    "--epochs",
    "--batch-size",
    "--learning-rate",
    "--max-length",
    "--seed",
    "--text-column",
    "--label-column",
    "--multi-label",
    "--output",
    "--overwrite",
]
SUBCOMMAND_OPTIONS = {
    ("train",): [
        *TRAIN_CONTRACT,
        "--resume",
        "--precision",
        "--patience",
        "--train-embeddings",
        "--threads",
    ],
    ("eval",): ["--json", "--text-column", "--label-column"],
    ("predict",): ["--input", "--output", "--top-k", "--threshold", "--text-column"],
    ("data",): ["check"],
    ("data", "check"): ["--validation", "--test", "--model", "--json", "--multi-label"],
}


def test_import_tuneforge_loads_no_heavy_library() -> None:
    code = (
        "import json, sys, tuneforge\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(proc.stdout))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_public_names_resolve() -> None:
    assert set(PUBLIC) <= set(tuneforge.__all__)
    for name in tuneforge.__all__:
        assert getattr(tuneforge, name) is not None, name
    from tuneforge.inference.predictor import Predictor
    from tuneforge.recipes.finetune_classifier import finetune_classifier

    assert tuneforge.Predictor is Predictor
    assert tuneforge.finetune_classifier is finetune_classifier
    assert issubclass(tuneforge.InputError, tuneforge.TuneforgeError)
    assert isinstance(tuneforge.__version__, str)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tuneforge.nope  # noqa: B018


def test_configs_are_usable_from_the_top_level() -> None:
    config = tuneforge.RunConfig(
        data=tuneforge.DataConfig(train="train.csv"),
        output="runs/x",
        method=tuneforge.MethodConfig(name="lora"),
        train=tuneforge.TrainConfig(epochs=2),
    )
    assert tuneforge.RunConfig.from_dict(config.to_dict()) == config
    with pytest.raises(tuneforge.InputError):
        tuneforge.TrainConfig(precision="fp16")


def test_top_level_help() -> None:
    result = run_cli("--help")
    assert result.code == 0, result
    for command in ("train", "eval", "predict", "data"):
        assert command in result.stdout


@pytest.mark.parametrize("command", list(SUBCOMMAND_OPTIONS), ids=" ".join)
def test_subcommand_help_lists_its_options(command: tuple[str, ...]) -> None:
    result = run_cli(*command, "--help")
    assert result.code == 0, result
    assert result.stderr == ""
    for option in SUBCOMMAND_OPTIONS[command]:
        assert option in result.stdout, f"{option} missing from `tuneforge {' '.join(command)}`"


def test_help_in_a_fresh_interpreter() -> None:
    """``python -m tuneforge`` runs the console script's ``main``."""
    result = run_cli_subprocess("train", "--help", env={"COLUMNS": "200"})
    assert result.code == 0, result
    for option in TRAIN_CONTRACT:
        assert option in result.stdout
