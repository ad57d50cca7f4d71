"""The training loop as plain functions: batches by length, steps, evaluates, keeps the
best, checkpoints, stops early, resumes exactly."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuneforge.data.encode import EncodedTexts, collate, length_grouped_batches
from tuneforge.errors import InputError
from tuneforge.models.forward import autocast_context
from tuneforge.training import checkpoint as ckpt
from tuneforge.training.events import EventLog
from tuneforge.training.optim import build_optimizer, linear_schedule
from tuneforge.training.seed import rng_state, set_rng_state

# evaluate() returns (selection score, metrics); a higher score is better.
Evaluate = Callable[[], tuple[float, dict[str, Any]]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SLOW_RATIO = 0.5
"""Throughput below this share of the start measurement counts as slow ..."""
SLOW_WINDOW_STEPS = 10
SLOW_WINDOW_SECONDS = 5.0
"""... when it lasts at least this many optimizer steps and seconds of training."""


class TrainingDivergedError(InputError):
    """The loss became inf or nan: the settings (most often the learning rate) make this
    run diverge. Deterministic for a given seed, so a job fails at once, without a retry."""

    job_error_code = "training_diverged"


def diverged_error(
    value: float,
    step: int,
    epoch: float,
    *,
    learning_rate: float,
    max_grad_norm: float,
    what: str = "loss",
) -> TrainingDivergedError:
    """The error for a non-finite ``what`` (loss or gradient norm) at ``step``: what happened
    and what to change (shared by the classifier and the generative loops)."""
    clip = "" if max_grad_norm > 0 else ", or clip gradients (max_grad_norm 1.0)"
    return TrainingDivergedError(
        f"training diverged: the {what} is {value} at step {step} (epoch {epoch:.2f}, learning "
        f"rate {learning_rate:.3g}); nothing was saved. Lower the learning rate "
        f"(learning_rate or learning_rate_multiplier){clip}"
    )


def _diverged(
    value: float, step: int, epoch: float, settings: LoopSettings, what: str = "loss"
) -> TrainingDivergedError:
    return diverged_error(
        value,
        step,
        epoch,
        learning_rate=settings.learning_rate,
        max_grad_norm=settings.max_grad_norm,
        what=what,
    )


@dataclass(frozen=True)
class LoopSettings:
    """Resolved numbers for one run (no ``auto`` left)."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    gradient_accumulation: int
    max_grad_norm: float
    seed: int
    patience: int
    eval_every: int
    checkpoint_every: int | None
    device: torch.device
    autocast_dtype: torch.dtype | None
    max_steps: int | None = None
    head_learning_rate: float | None = None
    min_steps: int = 0
    """Early stopping does not fire before this many optimizer steps."""
    expected_tokens_per_s: float | None = None
    """Padded tokens/s measured at start; a warning follows when training runs far slower."""


@dataclass
class FitResult:
    """What ``fit`` did."""

    best_score: float
    best_step: int
    best_metrics: dict[str, Any]
    steps: int
    examples_seen: int
    train_seconds: float
    stopped_early: bool
    n_train: int = 0

    @property
    def examples_per_s(self) -> float:
        return self.examples_seen / self.train_seconds if self.train_seconds else 0.0

    @property
    def epochs_trained(self) -> float:
        """Passes over the training split actually made (examples seen / examples)."""
        return self.examples_seen / self.n_train if self.n_train else 0.0


def planned_steps(lengths, settings: LoopSettings) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) of a run, as ``fit`` counts them."""
    s = settings
    batches_per_epoch = len(length_grouped_batches(lengths, s.batch_size, seed=0, epoch=0))
    spe = math.ceil(batches_per_epoch / s.gradient_accumulation)
    total_steps = spe * s.epochs
    if s.max_steps is not None:
        total_steps = min(total_steps, s.max_steps)
    return spe, total_steps


class _SlowWatch:
    """Warns once when training runs far below the speed measured at start."""

    def __init__(self, expected: float | None, events: EventLog) -> None:
        self.expected = expected
        self.events = events
        self.warned = False
        self._reset()

    def _reset(self) -> None:
        self.steps, self.tokens, self.seconds = 0, 0, 0.0

    def add(self, tokens: int, seconds: float, step: int) -> None:
        if not self.expected or self.warned:
            return
        self.steps += 1
        self.tokens += tokens
        self.seconds += seconds
        if self.steps < SLOW_WINDOW_STEPS or self.seconds < SLOW_WINDOW_SECONDS:
            return
        rate = self.tokens / self.seconds
        if rate < SLOW_RATIO * self.expected:
            self.warned = True
            self.events.emit(
                "warning",
                code="slow_training",
                message=(
                    f"training runs at {rate:,.0f} tokens/s, {rate / self.expected:.0%} of "
                    f"the {self.expected:,.0f} tokens/s measured at start (over "
                    f"{self.steps} steps up to step {step}); the CPU is probably shared "
                    "with other processes: try fewer threads (--threads 1)"
                ),
                step=step,
                tokens_per_s=round(rate, 1),
                expected_tokens_per_s=round(self.expected, 1),
            )
        self._reset()


def fit(
    model: nn.Module,
    train: EncodedTexts,
    targets: torch.Tensor,
    *,
    settings: LoopSettings,
    loss_fn: LossFn,
    evaluate: Evaluate,
    pad_id: int,
    checkpoint_dir: Path,
    events: EventLog,
    resume: bool = False,
    head_prefixes: tuple[str, ...] = (),
) -> FitResult:
    """Train ``model`` in place and keep its best weights in ``checkpoint_dir/best``.

    Args:
        model: The module to train (only parameters with requires_grad learn).
        train: Encoded training texts.
        targets: Class ids (long, n) or multi-hot labels (float, n x k).
        settings: Resolved hyperparameters.
        loss_fn: (logits, targets) -> scalar loss.
        evaluate: Runs validation; returns (score, metrics), higher score is better.
        pad_id: Tokenizer pad id.
        checkpoint_dir: Where checkpoints and the best weights go.
        events: The run's event log.
        resume: Continue from the newest complete checkpoint in ``checkpoint_dir``.
        head_prefixes: Names of the new head's parameters (they get
            ``settings.head_learning_rate``).

    Returns:
        A summary; the best weights are on disk (``training.checkpoint.load_best``).
    """
    s = settings
    device = s.device
    model.to(device)
    optimizer = build_optimizer(
        model,
        learning_rate=s.learning_rate,
        weight_decay=s.weight_decay,
        device=device,
        head_prefixes=head_prefixes,
        head_learning_rate=s.head_learning_rate,
    )
    spe, total_steps = planned_steps(train.lengths, s)
    scheduler = linear_schedule(
        optimizer, warmup_steps=round(s.warmup_ratio * total_steps), total_steps=total_steps
    )
    trainable = [p for p in model.parameters() if p.requires_grad]

    state: dict[str, Any] = {
        "epoch": 0,
        "batch": 0,
        "step": 0,
        "best_score": -math.inf,
        "best_step": -1,
        "best_metrics": {},
        "bad_evals": 0,
        "examples_seen": 0,
        "train_seconds": 0.0,
        "last_eval_step": -1,
    }
    latest = ckpt.latest_checkpoint(checkpoint_dir) if resume else None
    if latest is not None:
        state, rng = ckpt.load_checkpoint(latest, model, optimizer)
        scheduler.load_state_dict(state.pop("scheduler"))
        events.truncate(state.pop("n_events"))
        set_rng_state(rng)
        events.emit("resume", step=state["step"], epoch=state["epoch"], checkpoint=latest.name)
    events.emit(
        "start",
        total_steps=total_steps,
        steps_per_epoch=spe,
        epochs=s.epochs,
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        train_examples=len(train),
        resumed_from=state["step"] if latest is not None else None,
    )

    def save(step: int) -> None:
        extra = {"scheduler": scheduler.state_dict(), "n_events": events.count() + 1}
        path = ckpt.save_checkpoint(
            checkpoint_dir,
            step=step,
            model=model,
            optimizer=optimizer,
            rng=rng_state(),
            state={**state, **extra},
        )
        events.emit("checkpoint", step=step, path=path.name)

    def run_eval(step: int, epoch_float: float) -> bool:
        """Evaluate, keep the best, checkpoint; True means stop early."""
        score, metrics = evaluate()
        state["last_eval_step"] = step
        # A tie on the selection metric (common on a small validation split, where accuracy
        # or F1 saturate) goes to the lower validation log loss: the better-calibrated model.
        loss = metrics.get("log_loss")
        best_loss = state["best_metrics"].get("log_loss")
        improved = score > state["best_score"] or (
            score == state["best_score"]
            and loss is not None
            and best_loss is not None
            and loss < best_loss
        )
        if improved:
            state.update(best_score=score, best_step=step, best_metrics=metrics, bad_evals=0)
            ckpt.save_best(
                checkpoint_dir, model, {"step": step, "score": score, "metrics": metrics}
            )
        else:
            state["bad_evals"] += 1
        events.emit(
            "eval",
            split="validation",
            step=step,
            epoch=round(epoch_float, 4),
            score=score,
            improved=improved,
            metrics=metrics,
        )
        stop = s.patience > 0 and state["bad_evals"] >= s.patience and step >= s.min_steps
        if s.checkpoint_every is None or stop:
            save(step)
        return stop

    watch = _SlowWatch(s.expected_tokens_per_s, events)
    model.train()
    stopped = False
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the loop allocates few Python objects; collection pauses cost ~ms per step
    try:
        for epoch in range(state["epoch"], s.epochs):
            batches = length_grouped_batches(train.lengths, s.batch_size, seed=s.seed, epoch=epoch)
            start_batch = state["batch"] if epoch == state["epoch"] else 0
            state.update(epoch=epoch, batch=start_batch)
            tick = time.perf_counter()
            accumulated = 0
            step_tokens = 0
            for b in range(start_batch, len(batches)):
                idx = batches[b]
                step_tokens += len(idx) * int(train.lengths[idx].max())
                batch = {
                    k: v.to(device) for k, v in collate([train.ids[i] for i in idx], pad_id).items()
                }
                with autocast_context(device, s.autocast_dtype):
                    logits = model(**batch).logits
                loss = loss_fn(logits.float(), targets[idx].to(device))
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):  # stop before the bad gradients are applied
                    raise _diverged(loss_value, state["step"] + 1, epoch + b / len(batches), s)
                (loss / s.gradient_accumulation).backward()
                accumulated += len(idx)
                last_of_epoch = b == len(batches) - 1
                if (b + 1 - start_batch) % s.gradient_accumulation and not last_of_epoch:
                    continue
                if s.max_grad_norm > 0:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, s.max_grad_norm))
                    if not math.isfinite(grad_norm):  # overflow in the backward pass
                        epoch_now = epoch + (b + 1) / len(batches)
                        raise _diverged(grad_norm, state["step"] + 1, epoch_now, s, "gradient norm")
                else:
                    grad_norm = None
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                now = time.perf_counter()
                state["train_seconds"] += now - tick
                state["examples_seen"] += accumulated
                state["step"] += 1
                state["batch"] = b + 1
                step = state["step"]
                events.emit(
                    "step",
                    step=step,
                    epoch=round(epoch + (b + 1) / len(batches), 4),
                    loss=round(loss_value, 6),
                    lr=scheduler.get_last_lr()[0],
                    grad_norm=grad_norm,
                    examples_per_s=round(accumulated / (now - tick), 2),
                    total_steps=total_steps,
                )
                watch.add(step_tokens, now - tick, step)
                accumulated = 0
                step_tokens = 0
                # Evaluate every eval_every steps counted from the start of each epoch, at
                # the end of each epoch, and at the end of the run.
                last_of_run = step == total_steps
                due = (step - epoch * spe) % s.eval_every == 0 or last_of_epoch or last_of_run
                if due and run_eval(step, epoch + (b + 1) / len(batches)):
                    stopped = True
                    events.emit("early_stop", step=step, best_step=state["best_step"])
                    break
                if s.checkpoint_every and step % s.checkpoint_every == 0:
                    save(step)
                if last_of_run:
                    break
                tick = time.perf_counter()
            if stopped or state["step"] >= total_steps:
                break
            state.update(epoch=epoch + 1, batch=0)
    finally:
        if gc_was_enabled:
            gc.enable()
    if state["last_eval_step"] != state["step"]:
        run_eval(state["step"], float(state["epoch"]))
    return FitResult(
        best_score=state["best_score"],
        best_step=state["best_step"],
        best_metrics=state["best_metrics"],
        steps=state["step"],
        examples_seen=state["examples_seen"],
        train_seconds=state["train_seconds"],
        stopped_early=stopped,
        n_train=len(train),
    )
