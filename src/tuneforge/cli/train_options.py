"""The ``train`` command's options, derived from the config dataclasses.

Every field of ``DataConfig``, ``ModelConfig``, ``MethodConfig`` and ``TrainConfig`` becomes
a flag (``--field-name``, or the ``cli`` name given to ``setting()``) whose help is the
field's docstring entry: a field added to a dataclass shows up here without an edit.
Values are resolved as flag > ``--set section.key=value`` > ``--config FILE`` > default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tuneforge.config import (
    RunConfig,
    Setting,
    all_settings,
    merge_setting,
    parse_assignment,
    read_config_file,
)
from tuneforge.errors import InputError

PANELS = {"data": "Data", "model": "Model", "method": "Method", "train": "Training"}
# What `train --export` writes after training (a step of the command, not of the run: the
# recipe trains; `tuneforge export` is the same step on its own).
EXPORT_CHOICES = ("int8", "fp32", "none")
# Settings the command line does not offer, with the reason (shown nowhere else).
NOT_ON_CLI = {
    "data.train": "the TRAIN argument",
}
_P = inspect.Parameter


def cli_settings() -> list[Setting]:
    """The settings that get a flag, in declaration order."""
    return [s for s in all_settings() if s.key not in NOT_ON_CLI]


def _param_name(s: Setting) -> str:
    return f"{s.section}__{s.name}"


def _option(name: str, annotation: Any, option: Any) -> inspect.Parameter:
    return _P(name, _P.KEYWORD_ONLY, default=None, annotation=Annotated[annotation, option])


def _metavar(s: Setting) -> str:
    kinds = s.kinds
    if "choices" in s.meta:
        return "[" + "|".join(s.meta["choices"]) + "]"
    word = "INTEGER" if kinds == {int} else "NUMBER" if kinds <= {int, float} else "TEXT"
    if kinds and kinds <= {tuple, list}:
        word = "NAME,..."
    return word + ("|auto" if s.allows_auto else "")


def _shown_default(s: Setting) -> str | bool:
    if s.default is None:
        return False
    if s.kinds == {bool}:
        return s.flag.split("/")[0 if s.default else 1]
    return str(s.default)


def setting_parameter(s: Setting) -> inspect.Parameter:
    """A typer option for one setting; None when not given (so lower layers decide)."""
    common: dict[str, Any] = {
        "help": s.help.replace("``", "'"),
        "rich_help_panel": PANELS.get(s.section, s.section),
        "show_default": _shown_default(s),
    }
    if s.kinds == {bool}:
        return _option(_param_name(s), bool | None, typer.Option(s.flag, **common))
    return _option(_param_name(s), str | None, typer.Option(s.flag, metavar=_metavar(s), **common))


def parse_flag(s: Setting, text: str) -> Any:
    """A flag's text as the setting's type ('auto', a number, a comma-separated list)."""
    if text == "auto" and s.allows_auto:
        return "auto"
    kinds = s.kinds
    try:
        if kinds == {int}:
            return int(text)
        if kinds == {float}:
            return float(text)
        if kinds == {int, float}:
            return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        flag = s.flag.split("/")[0]
        raise InputError(
            f"Invalid value for '{flag}': {flag} must be {s.requirement()}, got {text!r}"
        ) from None
    if kinds and kinds <= {tuple, list}:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def train_parameters() -> list[inspect.Parameter]:
    """All parameters of ``tuneforge train``: TRAIN, the run options, then every setting."""
    run = "Run"
    fixed = [
        _P(
            "train_file",
            _P.POSITIONAL_OR_KEYWORD,
            default=None,
            annotation=Annotated[
                str | None,
                typer.Argument(
                    metavar="[TRAIN]",
                    help="Training file: CSV, TSV, JSONL, OpenAI chat JSONL or Parquet "
                    "(optional when --config names data.train).",
                    show_default=False,
                ),
            ],
        ),
        _option(
            "output",
            str | None,
            typer.Option(
                "--output",
                "-o",
                help="Directory to write the model bundle to.",
                rich_help_panel=run,
            ),
        ),
        _option(
            "config",
            Path | None,
            typer.Option(
                "--config",
                help="Run config file (YAML or JSON, the shape of a bundle's run_config.json; "
                "that file holds the resolved values, so it reproduces the run).",
                rich_help_panel=run,
                metavar="FILE",
            ),
        ),
        _option(
            "set_",
            list[str] | None,
            typer.Option(
                "--set",
                help="Override one setting, e.g. --set train.epochs=3 (value read as YAML); "
                "repeatable. Flags win over --set, --set over --config.",
                rich_help_panel=run,
                metavar="SECTION.KEY=VALUE",
            ),
        ),
        _option(
            "overwrite",
            bool | None,
            typer.Option(
                "--overwrite", help="Replace a non-empty output directory.", rich_help_panel=run
            ),
        ),
        _option(
            "resume",
            bool | None,
            typer.Option(
                "--resume",
                help="Continue an interrupted run from its last checkpoint.",
                rich_help_panel=run,
            ),
        ),
        _option(
            "quiet",
            bool | None,
            typer.Option("--quiet", "-q", help="No progress bar.", rich_help_panel=run),
        ),
        _P(
            "export",
            _P.KEYWORD_ONLY,
            default=EXPORT_CHOICES[0],
            annotation=Annotated[
                str,
                typer.Option(
                    "--export",
                    help="After training, export the bundle to ONNX Runtime and measure it on "
                    "the validation split: 'int8' (fp32 and calibrated int8), 'fp32', or "
                    "'none'. Predict and serve then pick the fastest backend within the "
                    "accuracy bound, and start in well under a second (`tuneforge export` "
                    "does the same later).",
                    rich_help_panel=run,
                    metavar="[" + "|".join(EXPORT_CHOICES) + "]",
                ),
            ],
        ),
    ]
    return fixed + [setting_parameter(s) for s in cli_settings()]


def resolve_run_config(
    *,
    train_file: str | None,
    output: str | None,
    config: Path | None,
    set_: list[str] | None,
    overwrite: bool | None,
    resume: bool | None,
    flags: dict[str, Any],
) -> RunConfig:
    """The run config: flags > ``--set`` > ``--config`` file > defaults; validated.

    Args:
        flags: The generated options by parameter name (None: not given).

    Raises:
        InputError: A file, key or value is invalid (nothing has been read but the config).
    """
    return RunConfig.from_dict(
        given_run_config(
            train_file=train_file,
            output=output,
            config=config,
            set_=set_,
            overwrite=overwrite,
            resume=resume,
            flags=flags,
        )
    )


def with_task_defaults(raw: dict[str, Any], task: str) -> RunConfig:
    """The run config of ``raw`` (what the user gave) with the defaults of ``task``: a
    generative run that names no model or method gets ``default-chat`` and ``lora``, and
    LoRA r 16, alpha 32, dropout 0.05 unless given (``GENERATIVE_LORA``).

    Raises:
        InputError: A key or value is invalid.
    """
    if task == "generate":
        from tuneforge.recipes.finetune_chat import (
            DEFAULT_CHAT_METHOD,
            DEFAULT_CHAT_MODEL,
            GENERATIVE_LORA,
        )

        raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
        model, method = raw.setdefault("model", {}), raw.setdefault("method", {})
        if isinstance(model, dict):
            model.setdefault("name", DEFAULT_CHAT_MODEL)
        if isinstance(method, dict):
            method.setdefault("name", DEFAULT_CHAT_METHOD)
            for key, value in GENERATIVE_LORA.items():
                method.setdefault(key, value)
    return RunConfig.from_dict(raw)


def given_run_config(
    *,
    train_file: str | None,
    output: str | None,
    config: Path | None,
    set_: list[str] | None,
    overwrite: bool | None,
    resume: bool | None,
    flags: dict[str, Any],
) -> dict[str, Any]:
    """The settings the user gave (flags > ``--set`` > ``--config``), as a run-config dict
    without defaults; ``RunConfig.from_dict`` validates it.

    Raises:
        InputError: No training file or output, or a bad file, key or flag value.
    """
    raw: dict[str, Any] = read_config_file(config) if config else {}
    for assignment in set_ or []:
        merge_setting(raw, *parse_assignment(assignment))
    given: dict[str, Any] = {"output": output, "overwrite": overwrite, "resume": resume}
    given["data.train"] = train_file
    for s in cli_settings():
        text = flags.get(_param_name(s))
        if text is not None:
            given[s.key] = text if isinstance(text, bool) else parse_flag(s, text)
    for key, value in given.items():
        if value is not None:
            merge_setting(raw, key, value)
    if not (raw.get("data") or {}).get("train"):
        raise InputError(
            "Missing argument 'TRAIN': give the training file (or a --config that names data.train)"
        )
    if not raw.get("output"):
        raise InputError(
            "Missing option '--output': give the bundle directory (or a --config that names output)"
        )
    return raw


def with_parameters(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``func(**values)`` the generated signature (typer reads ``__signature__``)."""
    func.__signature__ = inspect.Signature(train_parameters())  # type: ignore[attr-defined]
    return func
