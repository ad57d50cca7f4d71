"""``auto`` hyperparameters, chosen from the data size the way OpenAI's fine-tuning does:
aim for a fixed number of passes, with more epochs for small data sets and fewer for large
ones so that the total work stays bounded; early stopping trims what is not needed."""

from __future__ import annotations

import math
from dataclasses import dataclass

TARGET_EPOCHS = 3
# Small data sets get more epochs (a small encoder needs on the order of a thousand
# optimizer steps to settle, whatever the data size) ...
MIN_TARGET_EXAMPLES = 30_000
MAX_TARGET_EXAMPLES = 90_000  # ... and large ones fewer, so the total work stays bounded
MAX_EPOCHS = 20


def auto_epochs(n_train: int) -> float:
    """Passes over ``n_train`` examples: 3 by default, up to 20 for small data sets, and
    for large ones as many as fit in ``MAX_TARGET_EXAMPLES`` (at least one), which may be
    a fraction such as 1.5."""
    if n_train * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return float(min(MAX_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / max(1, n_train))))
    if n_train * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1.0, round(MAX_TARGET_EXAMPLES / n_train, 2))
    return float(TARGET_EPOCHS)


# A chat model (supervised fine-tuning of a causal LM) follows OpenAI's own rule: each
# conversation carries many trained tokens, so far fewer passes are needed than an encoder's.
SFT_MIN_TARGET_EXAMPLES = 100
SFT_MAX_TARGET_EXAMPLES = 25_000
SFT_MAX_EPOCHS = 25


def auto_sft_epochs(n_train: int) -> float:
    """Passes over ``n_train`` conversations, as OpenAI's ``n_epochs: auto``: 3, more for
    small files so that at least 100 conversations are seen (at most 25 epochs), fewer for
    large ones so that at most 25,000 are (at least one; a fraction such as 1.5 ends
    mid-epoch)."""
    if n_train * TARGET_EPOCHS < SFT_MIN_TARGET_EXAMPLES:
        return float(min(SFT_MAX_EPOCHS, math.ceil(SFT_MIN_TARGET_EXAMPLES / max(1, n_train))))
    if n_train * TARGET_EPOCHS > SFT_MAX_TARGET_EXAMPLES:
        return max(1.0, round(SFT_MAX_TARGET_EXAMPLES / n_train, 2))
    return float(TARGET_EPOCHS)


def auto_batch_size(n_train: int) -> int:
    """16 for small data sets (more updates per epoch), 32 otherwise."""
    return 16 if n_train < 1_000 else 32


def steps_per_epoch(n_examples: int, batch_size: int, accumulation: int) -> int:
    """Optimizer steps in one epoch (megabatch remainders can add a few short batches)."""
    return math.ceil(math.ceil(n_examples / batch_size) / accumulation)


@dataclass(frozen=True)
class Schedule:
    """How long a run is, every ``auto`` resolved.

    Attributes:
        batch_size: Examples per batch.
        epochs: Passes over the training split (may be a fraction).
        steps_per_epoch: Optimizer steps per pass.
        total_steps: Optimizer steps of the whole run.
        max_steps: Where a fractional last epoch stops (None: whole epochs).
    """

    batch_size: int
    epochs: float
    steps_per_epoch: int
    total_steps: int
    max_steps: int | None


def resolve_schedule(
    n_train: int, epochs: float | str, batch_size: int | str, gradient_accumulation: int
) -> Schedule:
    """The run's length from the training size and the (possibly ``auto``) settings."""
    batch = auto_batch_size(n_train) if batch_size == "auto" else int(batch_size)
    n_epochs = auto_epochs(n_train) if epochs == "auto" else float(epochs)
    spe = steps_per_epoch(n_train, batch, gradient_accumulation)
    # A fractional epoch count (auto on large data, or --epochs 1.5) ends mid-epoch.
    max_steps = None if n_epochs.is_integer() else max(1, round(n_epochs * spe))
    total = spe * math.ceil(n_epochs)
    if max_steps is not None:
        total = min(total, max_steps)
    return Schedule(batch, n_epochs, spe, total, max_steps)


MANY_CLASSES = 10


def auto_head_lr_multiplier(method_multiplier: float, n_labels: int) -> float:
    """The method's head learning-rate multiplier for heads of many classes, else 1.

    A 77-way head learns far too slowly at an encoder's rate (banking77: half the
    validation accuracy after half an epoch), while a 2-way head converges anyway and
    gained nothing on SST-2 from a faster one (docs/benchmarks.md).
    """
    return method_multiplier if n_labels >= MANY_CLASSES else 1.0


def auto_learning_rate(method_rate: float, batch_size: int) -> float:
    """The method's rate at batch 32, scaled by the square root of the batch ratio."""
    return method_rate * math.sqrt(batch_size / 32)


# Early stopping on small data (see TrainConfig.patience and TrainConfig.min_epochs).
MIN_STEPS_BEFORE_STOPPING = 100
"""Optimizer steps before early stopping may fire under ``min_epochs="auto"``."""
PATIENCE_REFERENCE_VALIDATION = 400
"""Validation size at and above which ``patience`` is used as given."""


def effective_patience(patience: int, n_validation: int) -> int:
    """``patience`` scaled up for a small validation split.

    A validation score on ``n`` examples moves by noise of about one standard error,
    sqrt(p(1-p)/n); below ``PATIENCE_REFERENCE_VALIDATION`` examples the patience is
    multiplied by the ratio of the standard errors, sqrt(reference / n), rounded up, so
    that a lucky early score does not end the run. 0 (no early stopping) stays 0.
    """
    if patience <= 0 or n_validation <= 0 or n_validation >= PATIENCE_REFERENCE_VALIDATION:
        return patience
    return math.ceil(patience * math.sqrt(PATIENCE_REFERENCE_VALIDATION / n_validation))


def min_steps_before_stopping(
    min_epochs: float | str, steps_per_epoch: int, total_steps: int
) -> int:
    """Optimizer steps before early stopping may fire: ``min_epochs`` worth of steps, or for
    ``auto`` one epoch and at least ``MIN_STEPS_BEFORE_STOPPING`` steps; never more than
    the planned run."""
    if min_epochs == "auto":
        wanted = max(steps_per_epoch, MIN_STEPS_BEFORE_STOPPING)
    else:
        wanted = math.ceil(float(min_epochs) * steps_per_epoch)
    return int(min(total_steps, wanted))


# A rough figure for ``tuneforge data check`` only, where no model runs: training itself
# measures this machine's speed on the real model before its first step (training.speed).
# Measured on a 2-core AVX2 CPU (fp32, full fine-tuning, all-MiniLM-L6-v2, 6 layers x
# 384 hidden = 10.6M non-embedding parameters): see docs/benchmarks.md.
_REFERENCE_TOKENS_PER_S = 1_600.0
_REFERENCE_NON_EMBEDDING_PARAMS = 10.6e6


def estimated_tokens_per_s(model_dir) -> float:
    """Rough training speed in tokens/s for a BERT-style model on this kind of machine,
    scaled from a measured reference by non-embedding parameter count."""
    import json
    from pathlib import Path

    config = json.loads((Path(model_dir) / "config.json").read_text())
    hidden = config.get("hidden_size", 384)
    layers = config.get("num_hidden_layers", 6)
    inter = config.get("intermediate_size", 4 * hidden)
    params = layers * (4 * hidden * hidden + 2 * hidden * inter)
    return _REFERENCE_TOKENS_PER_S * _REFERENCE_NON_EMBEDDING_PARAMS / max(params, 1.0)
