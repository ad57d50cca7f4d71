"""This machine's training speed, measured on the real model and real batches before the
first step, and the run's time estimated from it.

The measurement runs a few forward + backward passes and one optimizer step on a
throwaway optimizer, then puts back the trainable weights and the random-number state
exactly, so the run that follows is bit for bit the run without the measurement.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tuneforge.data.encode import EncodedTexts, collate, length_grouped_batches
from tuneforge.models.forward import autocast_context
from tuneforge.training.optim import build_optimizer
from tuneforge.training.seed import rng_state, set_rng_state

EVAL_SPEEDUP = 3.0
"""Forward-only evaluation processes tokens about this many times faster than training
(no backward pass, no optimizer), for the estimate of evaluation time."""


@dataclass(frozen=True)
class Speed:
    """Measured training speed on this machine.

    Attributes:
        tokens_per_s: Padded tokens per second through forward + backward.
        optimizer_step_s: Seconds per optimizer step.
        step_tokens_per_s: Padded tokens per second of a whole training step (forward,
            backward and its share of the optimizer step), what the loop should see.
        measured_batches: Batches timed (after the warm-up).
        measured_seconds: Wall time of the whole measurement, warm-up included.
    """

    tokens_per_s: float
    optimizer_step_s: float
    step_tokens_per_s: float
    measured_batches: int
    measured_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """Rounded, JSON-ready fields."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def padded_tokens(lengths: np.ndarray, batches: list[np.ndarray]) -> list[int]:
    """Tokens each batch occupies after padding to its longest text."""
    return [int(len(b) * lengths[b].max()) for b in batches]


def measure_training_speed(
    model: nn.Module,
    train: EncodedTexts,
    targets: torch.Tensor,
    *,
    batch_size: int,
    gradient_accumulation: int,
    loss_fn,
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    learning_rate: float,
    weight_decay: float,
    head_prefixes: tuple[str, ...] = (),
    head_learning_rate: float | None = None,
    seed: int = 0,
    steps: int = 3,
    warmup: int = 1,
) -> Speed:
    """Time ``steps`` forward + backward passes (after ``warmup``) and one optimizer step.

    The batches are the run's own (first epoch, length-grouped), those nearest the median
    padded size, so the figure holds for a typical step. Trainable weights, gradients and
    the random-number state are restored afterwards.
    """
    started = time.perf_counter()
    model.to(device)
    batches = length_grouped_batches(train.lengths, batch_size, seed=seed, epoch=0)
    sizes = np.asarray(padded_tokens(train.lengths, batches))
    order = np.argsort(np.abs(sizes - np.median(sizes)), kind="stable")
    chosen = [int(i) for i in order[: warmup + steps]]
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    saved = {n: p.detach().clone() for n, p in trainable.items()}
    rng = rng_state()
    was_training = model.training
    model.train()
    fwd_bwd_seconds, tokens = 0.0, 0
    try:
        for k, i in enumerate(chosen):
            idx = batches[i]
            batch = {
                key: v.to(device) for key, v in collate([train.ids[j] for j in idx], pad_id).items()
            }
            tick = time.perf_counter()
            with autocast_context(device, autocast_dtype):
                logits = model(**batch).logits
            loss = loss_fn(logits.float(), targets[idx].to(device))
            loss.backward()
            if k >= warmup:
                fwd_bwd_seconds += time.perf_counter() - tick
                tokens += int(sizes[i])
        optimizer = build_optimizer(
            model,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            device=device,
            head_prefixes=head_prefixes,
            head_learning_rate=head_learning_rate,
        )
        optimizer.step()  # the first step allocates the state; time the second
        tick = time.perf_counter()
        optimizer.step()
        optimizer_step_s = time.perf_counter() - tick
        del optimizer
    finally:
        with torch.no_grad():
            for n, p in trainable.items():
                p.copy_(saved[n])
                p.grad = None
        set_rng_state(rng)
        model.train(was_training)
    measured = max(len(chosen) - warmup, 0)
    tokens_per_s = tokens / fwd_bwd_seconds if fwd_bwd_seconds > 0 else 0.0
    per_batch_s = fwd_bwd_seconds / measured if measured else 0.0
    per_batch_tokens = tokens / measured if measured else 0.0
    step_s = per_batch_s + optimizer_step_s / max(1, gradient_accumulation)
    return Speed(
        tokens_per_s=tokens_per_s,
        optimizer_step_s=optimizer_step_s,
        step_tokens_per_s=per_batch_tokens / step_s if step_s > 0 else 0.0,
        measured_batches=measured,
        measured_seconds=time.perf_counter() - started,
    )


def estimate_seconds(
    speed: Speed,
    *,
    train_tokens_per_epoch: int,
    epochs: float,
    total_steps: int,
    validation_tokens: int,
    evaluations: int,
) -> float:
    """Expected wall time of the run: training tokens at the measured rate, the optimizer
    steps, and the validation passes at ``EVAL_SPEEDUP`` times the training rate."""
    if speed.tokens_per_s <= 0:
        return 0.0
    train_s = train_tokens_per_epoch * epochs / speed.tokens_per_s
    optimizer_s = total_steps * speed.optimizer_step_s
    eval_s = evaluations * validation_tokens / (EVAL_SPEEDUP * speed.tokens_per_s)
    return train_s + optimizer_s + eval_s
