"""Every training setting the CLI offers is in the job API (or documented as not), with the
same names, defaults and ranges: the HTTP schema is built from the config dataclasses."""

from __future__ import annotations

import typing
from pathlib import Path

import pydantic
import pytest

from tuneforge.cli.train_options import cli_settings
from tuneforge.config import TOP_LEVEL, Setting, TrainConfig, all_settings
from tuneforge.jobs.spec import (
    NOT_IN_HYPERPARAMETERS,
    OPENAI_HYPERPARAMETERS,
    build_run_config,
    hyperparameter_settings,
    method_option_settings,
    method_types,
)
from tuneforge.methods import method_names
from tuneforge.server.schemas.jobs import Hyperparameters, Method, MethodParams

DOCS = Path(__file__).resolve().parents[3] / "docs" / "api.md"
HP = hyperparameter_settings()
OPTIONS = method_option_settings()


def _reachable() -> set[str]:
    return {s.key for s in [*HP.values(), *OPTIONS.values()]}


def test_every_cli_setting_is_in_the_api_or_in_the_table() -> None:
    cli = {s.key for s in cli_settings()} | set(TOP_LEVEL)
    missing = cli - _reachable() - set(NOT_IN_HYPERPARAMETERS)
    assert not missing, f"add to the job API or to NOT_IN_HYPERPARAMETERS: {missing}"
    known = {s.key for s in all_settings()} | set(TOP_LEVEL)
    assert set(NOT_IN_HYPERPARAMETERS) <= known  # no stale rows
    assert not set(NOT_IN_HYPERPARAMETERS) & _reachable()  # each setting in one place


def test_every_api_setting_is_a_train_flag() -> None:
    assert _reachable() <= {s.key for s in cli_settings()}


def test_the_not_in_api_table_is_in_the_docs() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for key, where in NOT_IN_HYPERPARAMETERS.items():
        assert f"`{key}`" in docs, f"docs/api.md must say where {key} is: {where}"


def test_schema_fields_match_the_dataclasses() -> None:
    for model, table, extra in (
        (Hyperparameters, HP, set()),
        (MethodParams, OPTIONS, {"hyperparameters"}),
    ):
        assert set(model.model_fields) == set(table) | extra
        for name, s in table.items():
            field = model.model_fields[name]
            assert field.description == s.help
            assert field.default == ("auto" if name in OPENAI_HYPERPARAMETERS else None)
    assert set(Method.model_fields) == {"type", *method_types()}
    assert set(method_types()) == {"supervised", *method_names()}


def _nearest_outside(s: Setting) -> list:
    out = []
    step = 1 if s.kinds == {int} else 1e-3
    for key, delta in (("ge", -step), ("gt", 0), ("le", step), ("lt", 0)):
        if key in s.meta:
            out.append(s.meta[key] + delta)
    return out


@pytest.mark.parametrize("name", list(HP) + list(OPTIONS))
def test_ranges_match_the_dataclasses(name: str) -> None:
    model, s = (Hyperparameters, HP[name]) if name in HP else (MethodParams, OPTIONS[name])
    for value in _nearest_outside(s):
        with pytest.raises(pydantic.ValidationError):
            model(**{name: value})
    if "choices" in s.meta:
        with pytest.raises(pydantic.ValidationError):
            model(**{name: "not-a-choice"})
    expected = list(s.default) if isinstance(s.default, tuple) else s.default
    assert getattr(model(**{name: s.default}), name) == expected  # the default is valid


# A non-default value for every setting the job API takes.
VALUES = {
    "train.epochs": 2.5,
    "train.batch_size": 8,
    "train.learning_rate": 1e-4,
    "train.learning_rate_multiplier": 0.5,
    "train.head_lr_multiplier": 4.0,
    "train.weight_decay": 0.1,
    "train.warmup_ratio": 0.2,
    "train.gradient_accumulation": 2,
    "train.max_grad_norm": 0.5,
    "train.patience": 5,
    "train.min_epochs": 0.5,
    "train.eval_every": 7,
    "train.evals_per_epoch": 3,
    "train.selection_metric": "accuracy",
    "train.precision": "fp32",
    "train.class_weights": True,
    "train.num_threads": 1,
    "train.checkpoint_every": 9,
    "train.keep_checkpoints": 2,
    "model.max_length": 64,
    "method.lora_r": 4,
    "method.lora_alpha": 8,
    "method.lora_dropout": 0.2,
    "method.target_modules": ["query"],
    "method.freeze_embeddings": False,
}


def test_every_api_setting_reaches_the_run_config() -> None:
    """A value for each setting, through the pydantic schema and ``build_run_config``."""
    new = sorted(_reachable() - set(VALUES))
    assert not new, f"add a non-default value for each new setting to VALUES: {new}"
    hp = {name: VALUES.get(s.key, s.default) for name, s in HP.items()}
    opts = {name: VALUES.get(s.key, s.default) for name, s in OPTIONS.items()}
    body = Method(type="lora", lora={"hyperparameters": hp, **opts})
    params = body.lora
    config = build_run_config(
        training_file="files/a.jsonl",
        validation_file=None,
        base_model="default",
        output="models/j",
        method_type="lora",
        method_options=params.model_dump(exclude_none=True, exclude={"hyperparameters"}),
        hyperparameters=params.hyperparameters.model_dump(exclude_none=True),
        seed=3,
    )
    raw = config.to_dict()
    for key, value in VALUES.items():
        section, name = key.split(".")
        expected = tuple(value) if isinstance(value, list) else value
        got = raw[section][name]
        assert (tuple(got) if isinstance(got, list) else got) == expected, key


def test_unknown_selection_metric_is_refused_at_job_creation() -> None:
    from tuneforge.errors import InputError

    with pytest.raises(InputError, match=r"train\.selection_metric: unknown metric 'f1'"):
        build_run_config(
            training_file="f",
            validation_file=None,
            base_model="m",
            output="o",
            method_type="supervised",
            method_options={},
            hyperparameters={"selection_metric": "f1"},
            seed=0,
        )


def test_the_data_object_matches_the_data_settings() -> None:
    """The job body's ``data`` object offers exactly the data settings the table sends
    there, with the run config's defaults and choices."""
    from tuneforge.config import section_settings
    from tuneforge.jobs.spec import DATA_OPTIONS
    from tuneforge.server.schemas.jobs import DataOptions

    data = {s.name: s for s in section_settings("data")}
    sent = {
        key.removeprefix("data.")
        for key, where in NOT_IN_HYPERPARAMETERS.items()
        if key.startswith("data.") and where == DATA_OPTIONS
    }
    assert set(DataOptions.model_fields) == sent
    for name in sent:
        field = DataOptions.model_fields[name]
        assert field.default == data[name].default, name
        if "choices" in data[name].meta:
            assert set(typing.get_args(field.annotation)) == set(data[name].meta["choices"])


API_CAPPED = [name for name, s in HP.items() if "api_le" in s.meta]


@pytest.mark.parametrize("name", API_CAPPED)
def test_the_api_caps_at_openai_limits_below_the_cli(name: str) -> None:
    s = HP[name]
    cap = s.meta["api_le"]
    assert cap < s.meta["le"]  # the CLI takes more than the API
    assert getattr(Hyperparameters(**{name: cap}), name) == cap
    with pytest.raises(pydantic.ValidationError):
        Hyperparameters(**{name: cap + 1})
    assert getattr(TrainConfig(**{s.name: cap + 1}), s.name) == cap + 1  # fine on the CLI


def test_openai_limits() -> None:
    assert {
        name: HP[name].meta.get("api_le", HP[name].meta.get("le"))
        for name in OPENAI_HYPERPARAMETERS
    } == {
        "n_epochs": 50,
        "batch_size": 256,
        "learning_rate_multiplier": 10,
    }
