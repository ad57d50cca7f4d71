"""The config dataclasses as the one declaration of every setting: help, range, defaults."""

from __future__ import annotations

import dataclasses

import pytest

from tuneforge.config import (
    SECTIONS,
    RunConfig,
    Setting,
    all_settings,
    merge_setting,
    parse_assignment,
    section_settings,
)
from tuneforge.errors import InputError
from tuneforge.evaluation.metrics import selection_metric_names
from tuneforge.methods import method_names

SETTINGS = list(all_settings())
RANGED = [s for s in SETTINGS if {"ge", "gt", "le", "lt"} & set(s.meta)]


def _build(s: Setting, value) -> object:
    required = {"train": "t.csv"} if s.section == "data" and s.name != "train" else {}
    return SECTIONS[s.section](**required, **{s.name: value})


def test_every_setting_has_help_text_from_the_docstring() -> None:
    missing = [s.key for s in SETTINGS if not s.help]
    assert not missing, f"document these fields in the class docstring's Attributes: {missing}"


@pytest.mark.parametrize("s", [s for s in SETTINGS if s.key != "data.train"], ids=str)
def test_every_default_is_valid(s: Setting) -> None:
    assert getattr(_build(s, s.default), s.name) == s.default


def _outside(s: Setting) -> list:
    bad = []
    for key, offset in (("ge", -1e-3), ("gt", 0.0), ("le", 1e-3), ("lt", 0.0)):
        if key in s.meta:
            bad.append(s.meta[key] + offset if s.kinds != {int} else s.meta[key] + (offset * 1000))
    return bad


@pytest.mark.parametrize("s", RANGED, ids=lambda s: s.key)
def test_values_out_of_range_name_the_field(s: Setting) -> None:
    for value in _outside(s):
        value = int(value) if s.kinds == {int} else value
        with pytest.raises(InputError, match=rf"^{s.key} must be .*got {value!r}"):
            _build(s, value)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("train.patience", 1.5, "train.patience must be a whole number, got 1.5"),
        ("train.class_weights", "yes", "train.class_weights must be true or false"),
        ("train.precision", "fp16", "one of auto, fp32, bf16, got 'fp16'"),
        ("model.max_length", "long", "model.max_length must be a whole number or 'auto'"),
        ("data.multi_label", 1, "data.multi_label must be true or false"),
    ],
)
def test_wrong_types_name_the_field(key: str, value, needle: str) -> None:
    s = next(s for s in SETTINGS if s.key == key)
    with pytest.raises(InputError) as info:
        _build(s, value)
    assert needle in str(info.value)


def test_docstrings_name_every_registered_method_and_selection_metric() -> None:
    """The help text lists names; the registries are the truth (checked at the edges)."""
    help_of = {s.key: s.help for s in SETTINGS}
    for name in method_names():
        assert f"``{name}``" in help_of["method.name"]
    for name in selection_metric_names():
        assert f"``{name}``" in help_of["train.selection_metric"]


def test_set_values_are_yaml_and_unknown_keys_suggest_the_right_one() -> None:
    assert parse_assignment("train.epochs=3") == ("train.epochs", 3)
    assert parse_assignment("train.learning_rate=2e-5") == ("train.learning_rate", 2e-5)
    assert parse_assignment("method.target_modules=[query, value]") == (
        "method.target_modules",
        ["query", "value"],
    )
    assert parse_assignment("data.label_separator=;") == ("data.label_separator", ";")
    with pytest.raises(InputError, match=r"did you mean train\.epochs"):
        parse_assignment("train.epoch=3")
    with pytest.raises(InputError, match=r"section\.key=value"):
        parse_assignment("train.epochs")


def test_a_merged_run_config_validates_like_the_dataclasses() -> None:
    raw: dict = {"data": {"train": "t.csv"}, "output": "o"}
    merge_setting(raw, "method.target_modules", ["query"])
    merge_setting(raw, "train.epochs", 2.5)
    config = RunConfig.from_dict(raw)
    assert config.method.target_modules == ("query",) and config.train.epochs == 2.5
    merge_setting(raw, "train.warmup_ratio", 2)
    with pytest.raises(InputError, match=r"train.warmup_ratio must be a number in \[0, 1\)"):
        RunConfig.from_dict(raw)


def test_sections_cover_every_dataclass_field() -> None:
    for name, cls in SECTIONS.items():
        assert [s.name for s in section_settings(name)] == [f.name for f in dataclasses.fields(cls)]
