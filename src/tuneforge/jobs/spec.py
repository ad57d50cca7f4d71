"""Turn an OpenAI-style fine-tuning request into a tuneforge ``RunConfig``.

The job body's settings map onto the config dataclasses here, once: OpenAI's three
hyperparameters by their OpenAI names, every other ``TrainConfig`` field (and
``model.max_length``) by its own name in ``hyperparameters``, every ``MethodConfig`` field
beside ``hyperparameters`` in ``method.<type>``. The HTTP schema is built from the same
tables, so a new dataclass field is a new API field. Settings the job body does not take
are listed in ``NOT_IN_HYPERPARAMETERS`` with where they are, or why not.

Paths in the stored run config are relative to the data directory so that a worker on
another machine with the same shared storage resolves them against its own mount.
"""

from __future__ import annotations

from typing import Any

from tuneforge.config import RunConfig, Setting, all_settings, merge_setting, section_settings
from tuneforge.errors import InputError
from tuneforge.methods import method_names
from tuneforge.recipes.run_checks import check_run_config

# OpenAI's hyperparameter names -> tuneforge settings ("auto" keeps the default).
OPENAI_HYPERPARAMETERS = {
    "n_epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "learning_rate_multiplier": "train.learning_rate_multiplier",
}
# The job body's ``data`` object (``DataOptions``) holds these data settings.
DATA_OPTIONS = "the job body's data object"
# Settings that are not in ``hyperparameters`` / ``method.<type>``: where the job body
# has them, or why the API does not offer them.
NOT_IN_HYPERPARAMETERS = {
    "data.train": "training_file",
    "data.validation": "validation_file",
    "data.test": "test_file",
    "data.text_column": DATA_OPTIONS,
    "data.label_column": DATA_OPTIONS,
    "data.multi_label": DATA_OPTIONS,
    "data.label_separator": DATA_OPTIONS,
    "data.quality_checks": DATA_OPTIONS,
    "data.task": "not offered: jobs train classifiers; `tuneforge train --task generate` "
    "fine-tunes a chat model",
    "data.validation_fraction": "not offered: upload a validation_file to choose the split",
    "data.test_fraction": "not offered: the server carves the default 10% test split",
    "model.name": "model",
    "method.name": "method.type ('supervised' is full)",
    "train.seed": "seed",
    "output": "the server names each job's bundle",
    "overwrite": "the server owns its data directory",
    "resume": "a worker resumes an interrupted job on its own",
}


def method_types() -> dict[str, str]:
    """Job ``method.type`` -> tuneforge method (OpenAI's ``supervised`` is ``full``)."""
    return {"supervised": "full", **{name: name for name in method_names()}}


def hyperparameter_settings() -> dict[str, Setting]:
    """Name in ``method.<type>.hyperparameters`` -> the setting it sets."""
    by_key = {s.key: s for s in all_settings()}
    table = {name: by_key[key] for name, key in OPENAI_HYPERPARAMETERS.items()}
    taken = set(OPENAI_HYPERPARAMETERS.values()) | set(NOT_IN_HYPERPARAMETERS)
    for s in [*section_settings("train"), by_key["model.max_length"]]:
        if s.key not in taken:
            table[s.name] = s
    return table


def method_option_settings() -> dict[str, Setting]:
    """Name beside ``hyperparameters`` in ``method.<type>`` -> the setting it sets."""
    return {s.name: s for s in section_settings("method") if s.key not in NOT_IN_HYPERPARAMETERS}


# Checkpoints a job keeps as models (``fine_tuned_model_checkpoint``), as OpenAI does.
JOB_KEEP_CHECKPOINTS = 3


def build_run_config(
    *,
    training_file: str,
    validation_file: str | None,
    base_model: str,
    output: str,
    method_type: str,
    method_options: dict[str, Any],
    hyperparameters: dict[str, Any],
    seed: int,
    test_file: str | None = None,
    data_options: dict[str, Any] | None = None,
) -> RunConfig:
    """A run config for a job (paths as given: relative to the data directory).

    Raises:
        InputError: An unknown option or method, or a value out of range (the dataclasses
            validate).
    """
    types = method_types()
    if method_type not in types:
        raise InputError(f"unknown method type {method_type!r}; choose one of: {', '.join(types)}")
    raw: dict[str, Any] = {
        "data": {
            "train": training_file,
            "validation": validation_file,
            "test": test_file,
            **{k: v for k, v in (data_options or {}).items() if v is not None},
        },
        "output": output,
        "model": {"name": base_model},
        "method": {"name": types[method_type]},
        "train": {"seed": seed, "keep_checkpoints": JOB_KEEP_CHECKPOINTS},
    }
    for given, table in (
        (hyperparameters, hyperparameter_settings()),
        (method_options, method_option_settings()),
    ):
        for name, value in given.items():
            if name not in table:
                raise InputError(f"unknown option {name!r}")
            if value is None or (name in OPENAI_HYPERPARAMETERS and value == "auto"):
                continue  # not given: the dataclass default
            merge_setting(raw, table[name].key, value)
    return check_run_config(RunConfig.from_dict(raw))


def resolve_paths(raw: dict[str, Any], root: str) -> dict[str, Any]:
    """A stored run config with its data-directory-relative paths made absolute."""
    from pathlib import Path

    out = {**raw, "data": dict(raw["data"])}
    base = Path(root)
    for key in ("train", "validation", "test"):
        if out["data"].get(key):
            out["data"][key] = str(base / out["data"][key])
    out["output"] = str(base / raw["output"])
    return out
