"""Small, frozen, validated configuration dataclasses; JSON/YAML are their serialisation.

Only ``recipes/``, ``cli/`` and ``server/`` see ``RunConfig``; library modules take
explicit arguments or the one small config they are about.

Every training setting is declared once, here: its type (the annotation), default and range
(``setting()``) and help text (the class docstring's ``Attributes:`` entry). The edges derive
from these declarations through ``all_settings()``: the ``train`` command's flags, ``--set``
keys, the job API's hyperparameters and method options. Which methods and selection metrics
exist is checked where those registries live (``recipes/run_checks.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tuneforge.errors import InputError

Auto = Literal["auto"]
PRECISIONS = ("auto", "fp32", "bf16")
RANGE_KEYS = ("ge", "gt", "le", "lt")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    api_le: float | None = None,
    choices: tuple[str, ...] | None = None,
    cli: str | None = None,
) -> Any:
    """A config field with its range; its help text is the ``Attributes:`` entry of the
    class docstring, its type the annotation. Numbers are always finite (no inf or nan).

    Args:
        default: The default value.
        ge: Numbers must be >= this (likewise ``gt``, ``le``, ``lt``).
        gt: Numbers must be > this.
        le: Numbers must be <= this.
        lt: Numbers must be < this.
        api_le: A tighter upper bound for the job API (OpenAI's limits on a shared
            server); the command line takes values up to ``le``.
        choices: The allowed strings.
        cli: The command-line flag when it is not ``--field-name`` (a boolean field may
            name its on and off flags, ``--on/--off``).
    """
    meta = {
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "api_le": api_le,
        "choices": choices,
        "cli": cli,
    }
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


@dataclass(frozen=True)
class Setting:
    """One user-facing setting as the edges (CLI, HTTP schema, docs) see it.

    Attributes:
        section: ``data``, ``model``, ``method`` or ``train``.
        name: The field name.
        type: The resolved annotation (e.g. ``int | Literal['auto']``).
        default: The default value (``dataclasses.MISSING`` when required).
        help: The field's entry in the class docstring.
        meta: Range and flag metadata given to ``setting()``.
    """

    section: str
    name: str
    type: Any
    default: Any
    help: str
    meta: Mapping[str, Any]

    @property
    def key(self) -> str:
        """``section.name``, as in ``--set train.epochs=3``."""
        return f"{self.section}.{self.name}"

    @property
    def flag(self) -> str:
        """The command-line flag (for a boolean: ``--on/--off``)."""
        if "cli" in self.meta:
            return self.meta["cli"]
        flag = "--" + self.name.replace("_", "-")
        return f"{flag}/--no-{flag[2:]}" if self.kinds == {bool} else flag

    @property
    def kinds(self) -> set[Any]:
        """The value types allowed besides ``'auto'`` and None (a ``Literal`` counts as its
        values' type)."""
        members = [k for k in _members(self.type) if k not in ("auto", None)]
        return {k if isinstance(k, type) else type(k) for k in members}

    @property
    def allows_auto(self) -> bool:
        return "auto" in _members(self.type)

    @property
    def allows_none(self) -> bool:
        return None in _members(self.type)

    def requirement(self) -> str:
        """What a valid value is, in words (for error messages and help)."""
        return _requirement(self)


def _members(tp: Any) -> list[Any]:
    """The flat members of a union: types, ``'auto'`` for ``Literal['auto']``, None."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    if origin is Literal:
        return list(typing.get_args(tp))
    if tp is type(None):
        return [None]
    return [origin or tp]


def _docstring_help(cls: type) -> dict[str, str]:
    """Field name -> its ``Attributes:`` entry in a Google-style class docstring."""
    import inspect

    out: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").split("Attributes:", 1)[-1].splitlines()
    entries = [line for line in lines if line.strip()]
    indent = len(entries[0]) - len(entries[0].lstrip()) if entries else 0
    name = None
    for line in entries:
        depth = len(line) - len(line.lstrip())
        head, sep, rest = line.strip().partition(": ")
        if depth < indent:
            break
        if depth == indent and sep and head.isidentifier():
            name = head
            out[name] = rest.strip()
        elif name:
            out[name] += " " + line.strip()
    return out


def section_settings(section: str) -> tuple[Setting, ...]:
    """The settings of one section of ``RunConfig``, in declaration order."""
    return _settings_of(SECTIONS[section], section)


@functools.cache
def _settings_of(cls: type, section: str) -> tuple[Setting, ...]:
    hints = typing.get_type_hints(cls)
    docs = _docstring_help(cls)
    return tuple(
        Setting(
            section=section,
            name=f.name,
            type=hints[f.name],
            default=f.default if f.default_factory is dataclasses.MISSING else f.default_factory(),
            help=docs.get(f.name, ""),
            meta=_with_literal_choices(hints[f.name], f.metadata),
        )
        for f in dataclasses.fields(cls)
    )


def _with_literal_choices(tp: Any, meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """A ``Literal['a', 'b']`` annotation (besides ``'auto'``) means ``choices=('a', 'b')``."""
    literals = tuple(m for m in _members(tp) if isinstance(m, str) and m != "auto")
    return {**meta, "choices": literals} if literals and "choices" not in meta else meta


def all_settings() -> Iterator[Setting]:
    """Every setting of every section."""
    for section in SECTIONS:
        yield from section_settings(section)


def _requirement(s: Setting) -> str:
    kinds = s.kinds
    m = s.meta
    if "choices" in m:
        text = "one of " + ", ".join(m["choices"])
    elif kinds == {bool}:
        text = "true or false"
    elif kinds <= {int, float} and kinds:
        noun = "a whole number" if kinds == {int} else "a number"
        if m.get("gt") == 0 and "lt" not in m:
            text = "a positive number" + (f" <= {m['le']}" if "le" in m else "")
        elif ("ge" in m or "gt" in m) and ("le" in m or "lt" in m):
            low = f"[{m['ge']}" if "ge" in m else f"({m['gt']}"
            high = f"{m['le']}]" if "le" in m else f"{m['lt']})"
            text = f"{noun} in {low}, {high}"
        elif "ge" in m:
            text = f"{noun} >= {m['ge']}"
        elif "gt" in m:
            text = f"{noun} > {m['gt']}"
        else:
            text = noun
    elif kinds and kinds <= {tuple, list}:
        text = "a list of names"
    else:
        text = "text"
    if s.allows_auto:
        text += " or 'auto'"
    return text


def _type_ok(s: Setting, value: Any) -> bool:
    if value == "auto" and s.allows_auto:
        return True
    if value is None:
        return s.allows_none
    if isinstance(value, bool):
        return bool in s.kinds
    if isinstance(value, int):
        return bool({int, float} & s.kinds)
    if isinstance(value, float):
        return float in s.kinds
    if isinstance(value, str):
        return str in s.kinds
    if isinstance(value, tuple | list):
        return bool({tuple, list} & s.kinds) and all(isinstance(v, str) for v in value)
    return False


def _in_range(s: Setting, value: Any) -> bool:
    m = s.meta
    if "choices" in m and value not in m["choices"]:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (
            (isinstance(value, int) or math.isfinite(value))
            and ("ge" not in m or value >= m["ge"])
            and ("gt" not in m or value > m["gt"])
            and ("le" not in m or value <= m["le"])
            and ("lt" not in m or value < m["lt"])
        )
    return True


class SettingError(InputError):
    """A setting's value is refused.

    Args:
        key: The setting, ``section.name`` (``train.batch_size``), so that an edge can name
            its own field (the job API's ``param``).
        message: What is wrong and what to do; it names ``key``.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _validate(obj: object, section: str) -> None:
    """Type, range and choices of every field; the error names ``section.field``."""
    cls: type = type(obj)
    for s in _settings_of(cls, section):
        value = getattr(obj, s.name)
        if isinstance(value, list) and tuple in s.kinds:
            value = tuple(value)
            object.__setattr__(obj, s.name, value)
        if (value == "auto" and s.allows_auto) or (value is None and s.allows_none):
            continue
        if not _type_ok(s, value) and s.kinds == {int}:
            auto = " or 'auto'" if s.allows_auto else ""
            raise SettingError(s.key, f"{s.key} must be a whole number{auto}, got {value!r}")
        if not (_type_ok(s, value) and _in_range(s, value)):
            raise SettingError(s.key, f"{s.key} must be {s.requirement()}, got {value!r}")


QUALITY_CHECKS = ("warn", "error", "off")
TASKS = ("auto", "classify", "generate")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise InputError(message)


@dataclass(frozen=True)
class DataConfig:
    """Which files to read and how.

    Attributes:
        train: Training file (CSV, TSV, JSONL, OpenAI chat JSONL or Parquet).
        validation: Validation file; carved from ``train`` (stratified) when absent.
        test: Held-out test file; carved from ``train`` (stratified) when absent.
        text_column: Column holding the text (auto-detected when None).
        label_column: Column holding the label(s) (auto-detected when None).
        multi_label: Rows may carry several labels.
        label_separator: Separator of several labels in one CSV/TSV/Parquet cell.
        validation_fraction: Share of ``train`` carved for validation when needed.
        test_fraction: Share of ``train`` carved for test when needed.
        quality_checks: What a training run does about duplicates, leakage between
            splits and texts with conflicting labels (the checks of ``tuneforge data
            check``, run on the splits before training): ``warn`` (a warning each),
            ``error`` (stop before training, nothing written) or ``off``.
        task: What to train: ``classify`` (a text classifier), ``generate`` (a chat model
            fine-tuned on the assistant replies of a chat file), or ``auto``: a chat file
            whose final replies are a few short, repeated values is a classification set,
            any other chat file a generation set; other files are classification sets.
            The default model and method follow the task (``default`` and ``full`` for
            classify, ``default-chat`` and ``lora`` for generate).
    """

    train: str
    validation: str | None = None
    test: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    multi_label: bool = False
    label_separator: str = "|"
    validation_fraction: float = setting(0.1, gt=0, lt=0.5)
    test_fraction: float = setting(0.1, gt=0, lt=0.5)
    quality_checks: str = setting("warn", choices=QUALITY_CHECKS)
    task: str = setting("auto", choices=TASKS)

    def __post_init__(self) -> None:
        _validate(self, "data")
        _check(bool(self.label_separator), "data.label_separator must not be empty")


@dataclass(frozen=True)
class ModelConfig:
    """The base model.

    Attributes:
        name: ``default`` (all-MiniLM-L6-v2, shipped on PyPI), a local directory, or a hub id.
        max_length: Longest input in tokens; ``auto`` picks the 99th percentile of the
            training texts (rounded up to a multiple of 8), capped by the model's limit.
    """

    name: str = setting("default", cli="--model")
    max_length: int | Auto = setting("auto", ge=8, le=8192)

    def __post_init__(self) -> None:
        _validate(self, "model")


@dataclass(frozen=True)
class MethodConfig:
    """How the model is fine-tuned.

    Attributes:
        name: A registered fine-tuning method (``full``, ``head``, ``lora``, ``ia3``, ...).
        lora_r: LoRA rank (method ``lora``).
        lora_alpha: LoRA scaling numerator (method ``lora``).
        lora_dropout: Dropout on the LoRA path (method ``lora``).
        target_modules: Module names to adapt, comma-separated on the command line
            (None: the method's default for the model type).
        freeze_embeddings: Keep the word-embedding matrix fixed in ``full`` fine-tuning
            (faster; half the optimizer work for small encoders); ``--train-embeddings``
            trains it too.
    """

    name: str = setting("full", cli="--method")
    lora_r: int = setting(8, ge=1, le=1024)
    lora_alpha: int = setting(16, ge=1, le=4096)
    lora_dropout: float = setting(0.1, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = None
    freeze_embeddings: bool = setting(True, cli="--freeze-embeddings/--train-embeddings")

    def __post_init__(self) -> None:
        _validate(self, "method")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and schedule.

    Attributes:
        epochs: Passes over the training split (a fraction such as 1.5 ends mid-epoch),
            or ``auto`` (from the data size); at most 1000 (50 in the job API).
        batch_size: Examples per optimizer step (before accumulation), or ``auto``; at
            most the training rows and 4096 (256 in the job API).
        learning_rate: Peak learning rate, or ``auto`` (from the method and batch size).
        learning_rate_multiplier: Scales the learning rate (auto or given); the OpenAI
            API's ``learning_rate_multiplier``.
        head_lr_multiplier: The new head's learning rate over ``learning_rate``, or
            ``auto`` (20 for ``full`` with 10 or more labels, else 1).
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm).
        warmup_ratio: Share of steps with linear warmup; linear decay after.
        gradient_accumulation: Batches per optimizer step.
        max_grad_norm: Gradient clipping norm (0 disables).
        seed: Seed for splits, shuffling, dropout and head initialisation.
        patience: Evaluations without improvement before stopping early (0 disables).
            A small validation split gives noisy scores (the standard error of an
            accuracy is sqrt(p(1-p)/n): 0.09 at 20 examples, 0.02 at 400), so below
            400 validation examples the patience is multiplied by sqrt(400 / n), the
            ratio of the standard errors, rounded up (3 becomes 14 at 20 examples).
        min_epochs: Early stopping never fires before this much training, in epochs
            (a fraction is allowed), or ``auto``: one epoch and at least 100 optimizer
            steps (the warmup and the first large moves of a small encoder), never more
            than the planned run. On a 200-row file that is half of the run; on large
            data it is the first epoch.
        eval_every: Evaluate every N optimizer steps; None evaluates
            ``evals_per_epoch`` times per epoch.
        evals_per_epoch: Validation passes per epoch when ``eval_every`` is None.
        selection_metric: Validation metric that picks the best checkpoint (``macro_f1``,
            ``accuracy``, ``micro_f1``, ``weighted_f1``, ``log_loss``, ``subset_accuracy``).
        precision: ``auto`` (bf16 autocast where the hardware has fast bf16), ``fp32``, ``bf16``.
        class_weights: Weight the loss by inverse class frequency (single-label).
        num_threads: CPU threads for torch (None: the CPUs this process may use, from its
            affinity and the CPU quota of its container; the plan says what was chosen).
        checkpoint_every: Save a resumable checkpoint every N optimizer steps (None: at
            every evaluation).
        keep_checkpoints: Write the last N checkpoints into the bundle as loadable
            sub-bundles (``checkpoints/step-<N>/``); 0 keeps none.
    """

    # Upper bounds keep every run finite (no overflow, no inf); the job API caps epochs and
    # batch size at OpenAI's limits (``api_le``), and its total steps at a server setting.
    epochs: int | float | Auto = setting("auto", gt=0, le=1000, api_le=50)
    batch_size: int | Auto = setting("auto", gt=0, le=4096, api_le=256)
    learning_rate: float | Auto = setting("auto", gt=0, le=1)
    learning_rate_multiplier: float = setting(1.0, gt=0, le=10)
    head_lr_multiplier: float | Auto = setting("auto", gt=0, le=1000)
    weight_decay: float = setting(0.01, ge=0, le=1)
    warmup_ratio: float = setting(0.06, ge=0, lt=1)
    gradient_accumulation: int = setting(1, ge=1, le=1024)
    max_grad_norm: float = setting(1.0, ge=0, le=1000)
    seed: int = setting(42, ge=0, le=2**31 - 1)
    patience: int = setting(3, ge=0, le=10_000)
    min_epochs: float | Auto = setting("auto", ge=0, le=1000)
    eval_every: int | None = setting(None, ge=1, le=1_000_000)
    evals_per_epoch: int = setting(2, ge=1, le=1000)
    selection_metric: str = "macro_f1"
    precision: str = setting("auto", choices=PRECISIONS)
    class_weights: bool = False
    num_threads: int | None = setting(None, ge=1, le=256, cli="--threads")
    checkpoint_every: int | None = setting(None, ge=1, le=1_000_000)
    keep_checkpoints: int = setting(0, ge=0, le=100)

    def __post_init__(self) -> None:
        _validate(self, "train")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs."""

    data: DataConfig
    output: str
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    overwrite: bool = False
    resume: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the bundle's ``run_config.json``)."""
        return dataclasses.asdict(self)

    def __post_init__(self) -> None:
        _check(isinstance(self.output, str) and bool(self.output), "output must be a path")
        for name in ("overwrite", "resume"):
            _check(isinstance(getattr(self, name), bool), f"{name} must be true or false")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunConfig:
        """Inverse of ``to_dict``; unknown keys are an InputError naming them."""
        _check(isinstance(raw, Mapping), "a run config is a mapping of sections")
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "model" and isinstance(value, Mapping):
                value = _without_legacy_model_keys(value)
            if key in SECTIONS:
                _check(isinstance(value, Mapping), f"{key} must be a mapping of options")
                known = {f.name for f in dataclasses.fields(SECTIONS[key])}
                unknown = set(value) - known
                _check(not unknown, f"unknown {key} options: {', '.join(sorted(unknown))}")
                if key == "data":
                    _check("train" in value, "data.train (the training file) is required")
                kwargs[key] = SECTIONS[key](**value)
            elif key in TOP_LEVEL:
                kwargs[key] = value
            else:
                raise InputError(f"unknown run config key: {key!r}")
        _check("data" in kwargs, "data.train (the training file) is required")
        _check("output" in kwargs, "output (the bundle directory) is required")
        return cls(**kwargs)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "method": MethodConfig,
    "train": TrainConfig,
}
TOP_LEVEL = ("output", "overwrite", "resume")


def load_yaml(text: str) -> Any:
    """YAML (or JSON) with YAML 1.2 floats: ``2e-5`` is a number, as in JSON."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    exponent_float = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent_float, list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # a SafeLoader subclass: no objects


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A run config (or part of one) from a YAML or JSON file, e.g. a bundle's
    ``run_config.json``.

    Raises:
        InputError: The file is missing or not a mapping.
    """
    import yaml  # JSON is YAML too

    p = Path(path)
    try:
        raw = load_yaml(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--config {p}: file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"--config {p}: not readable YAML or JSON ({exc})") from None
    if raw is None:
        return {}
    _check(isinstance(raw, dict), f"--config {p}: expected a mapping of sections at the top")
    return raw


def parse_assignment(text: str) -> tuple[str, Any]:
    """``section.key=value`` -> (``section.key``, value parsed as a YAML scalar or list).

    Raises:
        InputError: Not ``key=value``, or an unknown key.
    """
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    _check(bool(sep) and bool(key), f"--set takes section.key=value, got {text!r}")
    known = {s.key for s in all_settings()} | set(TOP_LEVEL)
    if key not in known:
        import difflib

        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise InputError(
            f"--set {key}: unknown setting; {hint}keys are section.field "
            f"({', '.join(SECTIONS)}) or {', '.join(TOP_LEVEL)}"
        )
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def merge_setting(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``section.key`` (or a top-level key) in a run-config dict, in place."""
    section, _, name = key.partition(".")
    if not name:
        raw[section] = value
        return
    part = raw.setdefault(section, {})
    _check(isinstance(part, dict), f"{section} must be a mapping of options")
    part[name] = value


def _without_legacy_model_keys(model: Mapping[str, Any]) -> Mapping[str, Any]:
    """Older bundles record ``trust_remote_code: false``; drop it, refuse ``true``."""
    if "trust_remote_code" not in model:
        return model
    _check(
        model["trust_remote_code"] is False,
        "model.trust_remote_code is no longer supported: tuneforge never runs code from a "
        "checkpoint; remove the key and use a model class built into transformers",
    )
    return {k: v for k, v in model.items() if k != "trust_remote_code"}
