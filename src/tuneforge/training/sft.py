"""Supervised fine-tuning of a causal language model on chat conversations (LoRA or full).

The loop reads top to bottom: encode and mask every conversation once
(``data.chat_masking``), wrap the model (LoRA on every linear layer, or every weight), then
for each epoch take length-grouped, dynamically padded batches (``training.length_batches``),
step AdamW under a linear-warmup + cosine schedule, evaluate on the validation
conversations, keep the best weights in memory, stop early when the validation loss stops
falling, and put the best weights back at the end. Given a checkpoint directory, the loop
writes resumable checkpoints (``training.checkpoint``: trainable weights, optimizer,
scheduler, RNG, loop position and history) and can resume from one exactly.

The loss is the mean cross-entropy over trained tokens only: the assistant replies with
their end-of-turn token, as the labels from ``encode_conversation`` mark them; system and
user turns, weight-0 replies and padding carry none. A step that accumulates several
batches divides by the trained tokens of the whole step, so every trained token counts the
same whatever batch it sits in. Metrics are named as OpenAI names them: ``train_loss``,
``train_mean_token_accuracy`` (the share of trained tokens whose argmax prediction is the
label), ``valid_loss``, ``valid_mean_token_accuracy``, plus ``perplexity`` =
exp(``valid_loss``) — all over assistant tokens only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from tuneforge.config import MethodConfig
from tuneforge.data.chat_masking import IGNORE_INDEX, EncodedConversation, encode_conversation
from tuneforge.data.conversations import Conversation
from tuneforge.errors import InputError
from tuneforge.methods.full import prepare_full
from tuneforge.methods.peft_methods import ALL_LINEAR, prepare_causal_lora
from tuneforge.models.forward import autocast_context
from tuneforge.training import checkpoint as ckpt
from tuneforge.training.checkpoint import load_trainable_state, trainable_state
from tuneforge.training.device import pick_device, resolve_precision
from tuneforge.training.events import EventLog
from tuneforge.training.length_batches import (
    evaluation_batches,
    padded_batches,
    training_batches,
)
from tuneforge.training.loop import diverged_error
from tuneforge.training.optim import build_optimizer, cosine_schedule
from tuneforge.training.seed import rng_state, seed_everything, set_rng_state
from tuneforge.training.sft_samples import sample_replies

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SFT_METHODS = ("lora", "full")

# Model types whose causal-LM forward is exactly "decoder, then the output layer": for them
# the output layer runs on the trained positions only (an assistant reply is a fraction of a
# conversation, and the output layer of a 49k-token vocabulary is a large share of a small
# model's compute). Other models compute every position's logits.
_PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
_SOFTCAPPED_HEAD_MODEL_TYPES = frozenset({"gemma3_text"})
"""Model types that may soft-cap their logits: plain when ``final_logit_softcapping`` is
None (gemma-3-270m's default)."""


def head_on_trained_only_is_exact(config: Any) -> bool:
    """Whether a causal LM's logits are its output layer applied to its decoder's last
    hidden states, so the output layer can run on chosen positions only."""
    model_type = getattr(config, "model_type", "")
    if model_type in _SOFTCAPPED_HEAD_MODEL_TYPES:
        return getattr(config, "final_logit_softcapping", None) is None
    return model_type in _PLAIN_HEAD_MODEL_TYPES


@dataclass(frozen=True)
class SftSettings:
    """Resolved settings of one supervised fine-tuning run.

    Attributes:
        method: ``lora`` (adapters on the linear layers; the base stays frozen) or ``full``.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the LoRA path.
        target_modules: Modules LoRA adapts: ``all-linear`` or module names.
        epochs: Passes over the training conversations.
        batch_size: Conversations per batch.
        gradient_accumulation: Batches per optimizer step.
        learning_rate: Peak learning rate.
        weight_decay: AdamW weight decay (none on biases and norms).
        warmup_ratio: Share of the steps spent warming the learning rate up from 0.
        max_grad_norm: Gradient clipping norm (0: no clipping).
        max_length: Most tokens per conversation; longer ones are cut on the right.
        seed: Seeds the adapters' initialisation, dropout and the batch order.
        eval_every: Evaluate every this many optimizer steps (None: at the end of each
            epoch only; evaluation runs at each epoch's end and the run's end anyway).
        patience: Stop after this many evaluations without a lower validation loss (0: never).
        max_steps: Stop after this many optimizer steps (None: after ``epochs``).
        precision: ``auto`` (bf16 autocast where the hardware has fast bf16), ``bf16`` or
            ``fp32``.
        device: Where to train (None: CUDA when available, else CPU).
        eval_batch_size: Conversations per validation batch (None: ``batch_size``).
        sample_prompts: At each evaluation, the model answers the prompts of this many
            validation conversations (the first ones) greedily; the replies go into a
            ``samples`` event (0: none).
        sample_max_new_tokens: Most tokens per such reply.
        checkpoint_every: With a checkpoint directory, write a resumable checkpoint every
            this many steps (None: after each evaluation and at each epoch's end).
    """

    method: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | tuple[str, ...] = ALL_LINEAR
    epochs: int = 3
    batch_size: int = 8
    gradient_accumulation: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    max_length: int = 1024
    seed: int = 0
    eval_every: int | None = None
    patience: int = 0
    max_steps: int | None = None
    precision: str = "auto"
    device: torch.device | None = None
    eval_batch_size: int | None = None
    sample_prompts: int = 3
    sample_max_new_tokens: int = 64
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        if self.method not in SFT_METHODS:
            raise ValueError(f"method must be one of {SFT_METHODS}, got {self.method!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        for name in ("lora_r", "lora_alpha", "epochs", "batch_size", "gradient_accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if min(self.max_grad_norm, self.weight_decay, self.patience, self.sample_prompts) < 0:
            raise ValueError(
                "max_grad_norm, weight_decay, patience and sample_prompts must not be negative"
            )
        if self.sample_max_new_tokens < 1:
            raise ValueError("sample_max_new_tokens must be at least 1")
        for name in ("eval_every", "max_steps", "eval_batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None), got {value}")


@dataclass
class SftResult:
    """What ``train_sft`` did.

    Attributes:
        model: The trained model (a peft ``PeftModel`` for LoRA), holding the best weights,
            in eval mode.
        steps: Optimizer steps taken.
        epochs: Passes over the training conversations actually made (fractional when
            stopped mid-epoch).
        best_step: The step whose weights the model holds (the lowest validation loss;
            the last step without validation data).
        best_metrics: The validation metrics at ``best_step`` (empty without validation).
        stopped_early: Whether early stopping ended the run.
        train_history: Per step: ``step``, ``epoch``, ``train_loss``,
            ``train_mean_token_accuracy``, ``lr``, ``grad_norm``, ``trained_tokens``.
        valid_history: Per evaluation: ``step``, ``epoch``, ``valid_loss``,
            ``valid_mean_token_accuracy``, ``perplexity``, ``valid_tokens``, and ``samples``
            (the greedy replies to the fixed validation prompts, ``sample_replies``).
        train_seconds: Time spent in training steps (evaluation excluded).
        processed_tokens: Non-padding tokens run through the model in training.
        trained_tokens: Tokens that carried loss in training.
        truncated: Training conversations longer than ``max_length`` (cut on the right).
        dropped: Training conversations left out because truncation cut all their replies.
        autocast_dtype: The autocast precision used (None: fp32).
    """

    model: nn.Module
    steps: int
    epochs: float
    best_step: int
    best_metrics: dict[str, float]
    stopped_early: bool
    train_history: list[dict[str, Any]] = field(default_factory=list)
    valid_history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    processed_tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0
    dropped: int = 0
    autocast_dtype: torch.dtype | None = None

    @property
    def tokens_per_s(self) -> float:
        """Non-padding training tokens processed per second of training steps."""
        return self.processed_tokens / self.train_seconds if self.train_seconds else 0.0


@dataclass(frozen=True)
class TokenStats:
    """Summed loss and correct predictions over the trained tokens of one batch."""

    loss_sum: torch.Tensor
    correct: int
    tokens: int


def prepare_sft_model(model: nn.Module, settings: SftSettings) -> nn.Module:
    """The causal LM ready to train by ``settings.method``: wrapped in LoRA adapters (only
    they learn), or with every weight learning (``full``)."""
    if settings.method == "lora":
        return prepare_causal_lora(
            model,
            r=settings.lora_r,
            alpha=settings.lora_alpha,
            dropout=settings.lora_dropout,
            target_modules=settings.target_modules,
        )
    return prepare_full(model, MethodConfig(name="full", freeze_embeddings=False))


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation], max_length: int
) -> list[EncodedConversation]:
    """Render, tokenise and mask each conversation (``encode_conversation``)."""
    return [encode_conversation(tokenizer, c, max_length) for c in conversations]


def token_stats(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    autocast_dtype: torch.dtype | None = None,
    head_on_trained_only: bool | None = None,
) -> TokenStats:
    """Cross-entropy summed over a padded batch's trained tokens, and how many the model
    predicts right (argmax of the shifted logits equals the shifted label).

    Args:
        model: A causal LM (or a peft model around one).
        batch: ``input_ids``, ``attention_mask``, ``labels`` on the model's device.
        autocast_dtype: Autocast precision (None: fp32).
        head_on_trained_only: Run the output layer on the trained positions only (None:
            where the model type allows it; the loss is the same either way).
    """
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    targets = labels[mask]
    device = batch["input_ids"].device
    causal_lm = _causal_lm(model)
    if head_on_trained_only is None:
        head_on_trained_only = head_on_trained_only_is_exact(causal_lm.config)
    with autocast_context(device, autocast_dtype):
        if head_on_trained_only:
            hidden = causal_lm.get_decoder()(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                use_cache=False,
            ).last_hidden_state
            logits = causal_lm.get_output_embeddings()(hidden[:, :-1][mask])
        else:
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                use_cache=False,
            ).logits[:, :-1][mask]
    logits = logits.float()
    loss_sum = F.cross_entropy(logits, targets, reduction="sum")
    correct = int((logits.detach().argmax(dim=-1) == targets).sum())
    return TokenStats(loss_sum=loss_sum, correct=correct, tokens=int(targets.numel()))


def evaluate_sft(
    model: nn.Module,
    examples: Sequence[EncodedConversation],
    *,
    pad_id: int,
    batch_size: int,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """``valid_loss``, ``valid_mean_token_accuracy``, ``perplexity`` and ``valid_tokens``
    over the trained tokens of ``examples`` (token-weighted, whatever the batching)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct, tokens = 0.0, 0, 0
    try:
        with torch.no_grad():
            batches = evaluation_batches(examples, batch_size)
            for batch in padded_batches(examples, batches, pad_id):
                stats = token_stats(
                    model,
                    {k: v.to(device) for k, v in batch.items()},
                    autocast_dtype=autocast_dtype,
                )
                loss_sum += float(stats.loss_sum)
                correct += stats.correct
                tokens += stats.tokens
    finally:
        model.train(was_training)
    loss = loss_sum / tokens if tokens else math.nan
    return {
        "valid_loss": loss,
        "valid_mean_token_accuracy": correct / tokens if tokens else math.nan,
        "perplexity": math.exp(min(loss, 700.0)) if math.isfinite(loss) else math.nan,
        "valid_tokens": tokens,
    }


def train_sft(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train: Sequence[Conversation],
    valid: Sequence[Conversation] | None,
    settings: SftSettings,
    *,
    events: EventLog | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> SftResult:
    """Fine-tune a causal LM on chat conversations; the loss covers assistant replies only.

    Args:
        model: A ``transformers`` causal LM (fp32 weights); LoRA wraps it, ``full`` trains it
            in place.
        tokenizer: Its fast tokenizer with a chat template and a pad token.
        train: Training conversations (each with a trained assistant turn).
        valid: Validation conversations, or None (no validation, no early stopping).
        settings: The run's settings.
        events: Where ``start``, ``metrics``, ``eval``, ``samples``, ``early_stop``,
            ``warning``, ``checkpoint``, ``resume`` and ``summary`` events go (None:
            nowhere).
        checkpoint_dir: Where resumable checkpoints and the best weights so far are written
            (None: nowhere; the best weights are kept in memory either way).
        resume: Continue from the newest complete checkpoint in ``checkpoint_dir`` (the run
            then ends exactly as it would have without the interruption).

    Returns:
        The trained model (best weights) and what the run did.

    Raises:
        InputError: No training conversation keeps a trained token after truncation, a
            conversation cannot be masked, or the tokenizer has no pad token.
        TrainingDivergedError: The loss or the gradient norm became inf or nan.
    """
    s = settings
    if tokenizer.pad_token_id is None:
        raise InputError("the tokenizer has no pad token; set one (often the end-of-turn token)")
    pad_id = int(tokenizer.pad_token_id)
    device = s.device or pick_device()
    autocast_dtype = resolve_precision(s.precision, device)

    encoded = encode_conversations(tokenizer, train, s.max_length)
    truncated = sum(e.truncated for e in encoded)
    kept = [e for e in encoded if not e.lost_to_truncation]
    dropped = len(encoded) - len(kept)
    if not kept:
        raise InputError(
            f"no training conversation keeps an assistant token within max_length "
            f"{s.max_length}: raise the max length or shorten the prompts"
        )
    valid_encoded = [
        e for e in encode_conversations(tokenizer, valid or [], s.max_length) if e.trained_tokens
    ]
    sample_conversations = [c for c in valid or [] if c.has_trained_turn][: s.sample_prompts]

    def emit(kind: str, **fields: Any) -> None:
        if events is not None:
            events.emit(kind, **fields)

    seed_everything(s.seed)  # before the adapters are initialised
    model = prepare_sft_model(model, s).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(
        model, learning_rate=s.learning_rate, weight_decay=s.weight_decay, device=device
    )
    batches_per_epoch = len(training_batches(kept, s.batch_size, seed=s.seed, epoch=0))
    steps_per_epoch = math.ceil(batches_per_epoch / s.gradient_accumulation)
    total_steps = steps_per_epoch * s.epochs
    if s.max_steps is not None:
        total_steps = min(total_steps, s.max_steps)
    scheduler = cosine_schedule(
        optimizer, warmup_steps=round(s.warmup_ratio * total_steps), total_steps=total_steps
    )

    # Everything a resumed run needs to continue exactly where a checkpoint left off.
    state: dict[str, Any] = {
        "epoch": 0,
        "group": 0,
        "step": 0,
        "best_loss": math.inf,
        "best_step": -1,
        "best_metrics": {},
        "bad_evals": 0,
        "last_eval": -1,
        "stopped_early": False,
        "train_history": [],
        "valid_history": [],
        "train_seconds": 0.0,
        "processed_tokens": 0,
        "trained_tokens": 0,
    }
    best_state: dict[str, torch.Tensor] | None = None
    latest = ckpt.latest_checkpoint(checkpoint_dir) if resume and checkpoint_dir else None
    if latest is not None and checkpoint_dir is not None:
        state, rng = ckpt.load_checkpoint(latest, model, optimizer)
        scheduler.load_state_dict(state.pop("scheduler"))
        n_events = state.pop("n_events")
        if events is not None and n_events is not None:
            events.truncate(n_events)
        set_rng_state(rng)
        best = ckpt.load_best(checkpoint_dir)
        best_state = best[0] if best is not None else None
        emit("resume", step=state["step"], epoch=state["epoch"], checkpoint=latest.name)
    elif truncated:
        emit(
            "warning",
            code="truncated",
            message=(
                f"{truncated} training conversation(s) are longer than max_length "
                f"{s.max_length} tokens and were cut on the right; {dropped} of them lost "
                "every assistant token and were left out"
            ),
            split="train",
            count=truncated,
        )
    emit(
        "start",
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        epochs=s.epochs,
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        train_examples=len(kept),
        resumed_from=state["step"] if latest is not None else None,
    )
    eval_batch_size = s.eval_batch_size or s.batch_size

    def save_checkpoint() -> None:
        if checkpoint_dir is None:
            return
        extra = {
            "scheduler": scheduler.state_dict(),
            "n_events": events.count() + 1 if events is not None else None,
        }
        path = ckpt.save_checkpoint(
            checkpoint_dir,
            step=state["step"],
            model=model,
            optimizer=optimizer,
            rng=rng_state(),
            state={**state, **extra},
        )
        emit("checkpoint", step=state["step"], path=path.name)

    def run_eval(step: int, epoch: float) -> bool:
        """Evaluate, keep the best weights; True means stop early."""
        nonlocal best_state
        metrics = evaluate_sft(
            model,
            valid_encoded,
            pad_id=pad_id,
            batch_size=eval_batch_size,
            autocast_dtype=autocast_dtype,
        )
        improved = metrics["valid_loss"] < state["best_loss"]
        if improved:
            best_state = trainable_state(model)
            state.update(
                best_loss=metrics["valid_loss"], best_step=step, best_metrics=metrics, bad_evals=0
            )
            if checkpoint_dir is not None:
                ckpt.save_best(checkpoint_dir, model, {"step": step, "metrics": metrics})
        else:
            state["bad_evals"] += 1
        state["last_eval"] = step
        samples = sample_replies(
            model,
            tokenizer,
            sample_conversations,
            max_new_tokens=s.sample_max_new_tokens,
            autocast_dtype=autocast_dtype,
        )
        state["valid_history"].append(
            {"step": step, "epoch": round(epoch, 4), **metrics, "samples": samples}
        )
        emit(
            "eval",
            split="validation",
            step=step,
            epoch=round(epoch, 4),
            score=-metrics["valid_loss"],
            improved=improved,
            metrics=metrics,
        )
        if samples:
            emit("samples", step=step, samples=samples)
        return s.patience > 0 and state["bad_evals"] >= s.patience

    model.train()
    start_epoch, start_group = state["epoch"], state["group"]
    for epoch in range(start_epoch, s.epochs):
        if state["stopped_early"] or state["step"] >= total_steps:
            break
        batches = training_batches(kept, s.batch_size, seed=s.seed, epoch=epoch)
        groups = [
            batches[i : i + s.gradient_accumulation]
            for i in range(0, len(batches), s.gradient_accumulation)
        ]
        for g in range(start_group if epoch == start_epoch else 0, len(groups)):
            tick = time.perf_counter()
            padded = [
                {k: v.to(device) for k, v in b.items()}
                for b in padded_batches(kept, groups[g], pad_id)
            ]
            step_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in padded)
            loss_sum, correct = 0.0, 0
            epoch_now = epoch + (g + 1) / len(groups)
            for batch in padded:
                stats = token_stats(model, batch, autocast_dtype=autocast_dtype)
                value = float(stats.loss_sum.detach())
                if not math.isfinite(value):  # stop before the bad gradients are applied
                    raise _diverged(value, state["step"] + 1, epoch_now, s)
                (stats.loss_sum / max(1, step_tokens)).backward()
                loss_sum += value
                correct += stats.correct
            grad_norm: float | None = None
            if s.max_grad_norm > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, s.max_grad_norm))
                if not math.isfinite(grad_norm):
                    raise _diverged(grad_norm, state["step"] + 1, epoch_now, s, "gradient norm")
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - tick
            processed = sum(int(b["attention_mask"].sum()) for b in padded)
            step = state["step"] + 1
            last_of_epoch = g == len(groups) - 1
            state.update(
                step=step,
                epoch=epoch + 1 if last_of_epoch else epoch,
                group=0 if last_of_epoch else g + 1,
                train_seconds=state["train_seconds"] + seconds,
                processed_tokens=state["processed_tokens"] + processed,
                trained_tokens=state["trained_tokens"] + step_tokens,
            )
            row = {
                "step": step,
                "epoch": round(epoch_now, 4),
                "train_loss": loss_sum / max(1, step_tokens),
                "train_mean_token_accuracy": correct / max(1, step_tokens),
                "lr": lr,
                "grad_norm": grad_norm,
                "trained_tokens": step_tokens,
            }
            state["train_history"].append(row)
            emit(
                "metrics",
                **row,
                tokens_per_s=round(processed / seconds, 1) if seconds else 0.0,
                total_steps=total_steps,
            )
            last_of_run = step >= total_steps
            due = (s.eval_every is not None and step % s.eval_every == 0) or last_of_epoch
            evaluated = bool(valid_encoded) and (due or last_of_run)
            if evaluated and run_eval(step, epoch_now):
                state["stopped_early"] = True
                emit("early_stop", step=step, best_step=state["best_step"])
            if (s.checkpoint_every and step % s.checkpoint_every == 0) or (
                not s.checkpoint_every and (evaluated or last_of_epoch)
            ):
                save_checkpoint()
            if state["stopped_early"] or last_of_run:
                break
    step = state["step"]
    epochs_trained = round(state["train_history"][-1]["epoch"], 4) if step else 0.0
    if valid_encoded and state["last_eval"] != step:
        run_eval(step, epochs_trained)

    if best_state is not None:
        load_trainable_state(model, best_state)  # the weights of the lowest validation loss
        best_step = state["best_step"]
    else:
        best_step = step
    model.eval()
    result = SftResult(
        model=model,
        steps=step,
        epochs=epochs_trained,
        best_step=best_step,
        best_metrics=state["best_metrics"],
        stopped_early=state["stopped_early"],
        train_history=state["train_history"],
        valid_history=state["valid_history"],
        train_seconds=state["train_seconds"],
        processed_tokens=state["processed_tokens"],
        trained_tokens=state["trained_tokens"],
        truncated=truncated,
        dropped=dropped,
        autocast_dtype=autocast_dtype,
    )
    emit(
        "summary",
        best_step=result.best_step,
        steps=step,
        epochs_planned=s.epochs,
        epochs_trained=result.epochs,
        steps_planned=total_steps,
        stopped_early=result.stopped_early,
        train_seconds=round(result.train_seconds, 3),
        train_examples_per_s=round(len(kept) * result.epochs / result.train_seconds, 2)
        if result.train_seconds
        else 0.0,
        trained_tokens=result.trained_tokens,
        validation=result.best_metrics,
        test={},
    )
    return result


def _diverged(value: float, step: int, epoch: float, s: SftSettings, what: str = "loss"):
    return diverged_error(
        value,
        step,
        epoch,
        learning_rate=s.learning_rate,
        max_grad_norm=s.max_grad_norm,
        what=what,
    )


def _causal_lm(model: nn.Module) -> Any:
    """The ``transformers`` causal LM inside a peft model (LoRA layers are injected in it),
    or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
