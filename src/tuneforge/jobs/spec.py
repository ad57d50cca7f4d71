"""Turn an OpenAI-style fine-tuning request into a tuneforge ``RunConfig``.

Paths in the stored run config are relative to the data directory so that a worker on
another machine with the same shared storage resolves them against its own mount.
"""

from __future__ import annotations

from typing import Any

from tuneforge.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig

# OpenAI's method types and tuneforge's methods; "supervised" is full fine-tuning.
METHOD_TYPES = {"supervised": "full", "full": "full", "head": "head", "lora": "lora", "ia3": "ia3"}
METHOD_OPTIONS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "freeze_embeddings")
# tuneforge extensions accepted beside n_epochs / batch_size / learning_rate_multiplier.
TRAIN_OPTIONS = (
    "learning_rate",
    "warmup_ratio",
    "weight_decay",
    "patience",
    "eval_every",
    "checkpoint_every",
    "precision",
    "class_weights",
    "num_threads",
)
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
        InputError: An option is out of range (the dataclasses validate).
    """
    train: dict[str, Any] = {"seed": seed, "keep_checkpoints": JOB_KEEP_CHECKPOINTS}
    if "n_epochs" in hyperparameters:
        train["epochs"] = hyperparameters["n_epochs"]
    if "batch_size" in hyperparameters:
        train["batch_size"] = hyperparameters["batch_size"]
    mult = hyperparameters.get("learning_rate_multiplier", "auto")
    if mult != "auto":
        train["learning_rate_multiplier"] = float(mult)
    for key in TRAIN_OPTIONS:
        if hyperparameters.get(key) is not None:
            train[key] = hyperparameters[key]
    model: dict[str, Any] = {"name": base_model}
    if hyperparameters.get("max_length") is not None:
        model["max_length"] = hyperparameters["max_length"]
    method = {k: v for k, v in method_options.items() if k in METHOD_OPTIONS and v is not None}
    return RunConfig(
        data=DataConfig(
            train=training_file,
            validation=validation_file,
            test=test_file,
            **{k: v for k, v in (data_options or {}).items() if v is not None},
        ),
        output=output,
        model=ModelConfig(**model),
        method=MethodConfig(name=METHOD_TYPES[method_type], **method),
        train=TrainConfig(**train),
    )


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
