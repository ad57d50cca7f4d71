"""Fine-tune a generative chat model: config -> chat files -> base -> SFT -> bundle.

This is the one file to read top to bottom to see what ``tuneforge train --task generate``
does. The chat files are read and validated first (every problem with its line and field),
the validation split is carved from train when none is given (seeded), the base model is
resolved (``default-chat`` or a local causal-LM directory), every example is checked
against the maximum length, ``train_sft`` trains with the loss on assistant replies only,
and the bundle is written into a staging directory and renamed into place.

Length policy: ``model.max_length`` ``auto`` is the longest training or validation
conversation (chat template included), rounded up to a multiple of 8 and capped by the
model's context; an example longer than the maximum length (given or capped) is refused
with its line, so nothing is silently cut.
"""

from __future__ import annotations

import hashlib
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tuneforge.bundle import (
    BaseModelRef,
    GenerationDefaults,
    Manifest,
    atomic_write_json,
    check_output_dir,
    publish,
    staging_dir,
    write_manifest,
)
from tuneforge.card import render_generative_card
from tuneforge.config import RunConfig
from tuneforge.data.chat_sets import (
    ChatSet,
    check_lengths,
    conversation_length,
    looks_like_chat_set,
    read_chat_set,
)
from tuneforge.data.conversations import Conversation
from tuneforge.data.task import TaskChoice, choose_task
from tuneforge.environment import describe_environment
from tuneforge.errors import InputError
from tuneforge.models.registry import GenerativeBase, resolve_generative_base, weights_sha256
from tuneforge.training import auto
from tuneforge.training.events import EventLog, Listener, read_events
from tuneforge.training.threads import apply_threads

DEFAULT_CHAT_MODEL = "default-chat"
"""The base model of a generative run when none is given."""
DEFAULT_CHAT_METHOD = "lora"
"""The method of a generative run when none is given."""
GENERATIVE_LORA = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05}
"""LoRA settings of a generative run unless given (the classifier's are 8, 16, 0.1)."""
GENERATIVE_METHODS = ("lora", "full")
LEARNING_RATES = {"lora": 2e-4, "full": 2e-5}
"""``auto`` learning rate per method (AdamW, batch 8); scaled by sqrt(batch / 8)."""
MAX_AUTO_LENGTH = 2048
"""``auto`` max length never exceeds this (longer examples need ``--max-length``)."""


@dataclass
class ChatTrainResult:
    """Where the bundle is and how the run went."""

    bundle: Path
    metrics: dict[str, dict[str, Any]]  # "train" / "validation" -> metrics
    train_seconds: float
    tokens_per_s: float


def choose_run_task(config: RunConfig) -> TaskChoice | None:
    """The task of a run whose ``data.task`` may be ``auto``.

    A chat file goes through ``choose_task``; a table (CSV, Parquet, text/label JSONL) is a
    classification set without a choice to report (None). ``classify`` or ``generate``
    given by the user is taken as given.

    Raises:
        InputError: The chat file cannot be read (with ``task`` ``auto``).
    """
    requested = config.data.task
    train = config.data.train
    if requested == "generate":
        return TaskChoice("generate", "generate as requested", 0, 0, 0)
    if not looks_like_chat_set(train):
        return None
    if requested == "classify":
        return TaskChoice("classify", "classify as requested", 0, 0, 0)
    try:
        chat_set = read_chat_set(train)
    except InputError:
        # A chat file of labels may be refused by the chat reader (e.g. a blank reply)
        # while the classifier reader names the problem in its own terms.
        return None
    return choose_task(chat_set, "auto")


def check_generate_config(config: RunConfig) -> None:
    """Refuse settings that only a classifier has, before any data is read.

    Raises:
        InputError: A classifier-only setting, a method other than lora or full, or a
            test file (a generative run is evaluated on validation).
    """
    d, t = config.data, config.train
    refused = []
    if d.multi_label:
        refused.append("--multi-label (data.multi_label)")
    if d.text_column is not None:
        refused.append("--text-column (data.text_column)")
    if d.label_column is not None:
        refused.append("--label-column (data.label_column)")
    if d.label_separator != "|":
        refused.append("--label-separator (data.label_separator)")
    if t.class_weights:
        refused.append("--class-weights (train.class_weights)")
    if t.head_lr_multiplier != "auto":
        refused.append("--head-lr-multiplier (train.head_lr_multiplier)")
    if t.selection_metric != "macro_f1":
        refused.append("--selection-metric (train.selection_metric)")
    if t.keep_checkpoints:
        refused.append("--keep-checkpoints (train.keep_checkpoints)")
    if t.min_epochs != "auto":
        refused.append("--min-epochs (train.min_epochs)")
    if refused:
        raise InputError(
            f"{', '.join(refused)}: classifier setting(s), not used when fine-tuning a chat "
            "model (task generate); remove them, or pass --task classify to train a classifier"
        )
    if d.test is not None:
        raise InputError(
            "--test (data.test): a chat model is evaluated on the validation file; pass it as "
            "--validation, or leave it out to carve a validation split from train"
        )
    if config.method.name not in GENERATIVE_METHODS:
        raise InputError(
            f"method.name: {config.method.name!r} does not fine-tune a chat model; choose one "
            f"of: {', '.join(GENERATIVE_METHODS)} (lora is the default for --task generate)"
        )


def carve_validation(
    chat_set: ChatSet, fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """(train, validation): a seeded random ``fraction`` of the examples (at least one,
    never all) goes to validation; one example trains and nothing validates."""
    conversations = list(chat_set.conversations)
    n = len(conversations)
    if n < 2:
        return conversations, []
    n_valid = min(n - 1, max(1, round(n * fraction)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    chosen = set(order[:n_valid])
    train = [c for i, c in enumerate(conversations) if i not in chosen]
    valid = [c for i, c in enumerate(conversations) if i in chosen]
    return train, valid


def base_sha256(base: GenerativeBase) -> str:
    """The hash that pins a bundle's base: the packaged GGUF's, or the local weights'."""
    return base.sha256 or weights_sha256(base.path)


def model_context(model: Any, tokenizer: Any) -> int:
    """Tokens the model attends to at most (position embeddings, tokenizer limit)."""
    limits = [getattr(model.config, "max_position_embeddings", None)]
    limits.append(getattr(tokenizer, "model_max_length", None))
    known = [int(x) for x in limits if isinstance(x, int) and 0 < x < 10**8]
    return min(known) if known else 2048


def finetune_chat(config: RunConfig, listeners: Sequence[Listener] = ()) -> ChatTrainResult:
    """Fine-tune a chat model end to end and write the bundle to ``config.output``.

    Args:
        config: The run configuration (``data.task`` ``generate``, or ``auto`` on a file
            ``choose_run_task`` calls a generation set).
        listeners: Receive every training event (the CLI's progress bar).

    Returns:
        The bundle path and the metrics of the kept weights.

    Raises:
        InputError: Bad data, options, base model or paths (nothing is written).
        KeyboardInterrupt: Interrupted; checkpoints stay in the staging directory for
            ``--resume``, no bundle is written.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.training.sft import SftSettings, train_sft

    started = time.time()
    if config.data.task == "classify":
        raise InputError("data.task is classify: train it with the classifier recipe")
    check_generate_config(config)
    output = Path(config.output)
    check_output_dir(output, overwrite=config.overwrite)
    stage = staging_dir(output)
    if config.resume and not (stage / "checkpoints").is_dir():
        raise InputError(f"--resume: no checkpoint found in {stage}; start without --resume")

    # 1. Data: read and validate every file (all before anything is written).
    d, t, m = config.data, config.train, config.method
    train_set = read_chat_set(d.train)
    choice = choose_task(train_set, d.task)
    if choice.task != "generate":
        raise InputError(f"{d.train}: {choice.reason}; train it with --task classify")
    if d.validation is not None:
        valid_set = read_chat_set(d.validation)
        train, valid = list(train_set.conversations), list(valid_set.conversations)
    else:
        valid_set = None
        train, valid = carve_validation(train_set, d.validation_fraction, t.seed)

    # 2. Base model and tokenizer; every example must fit the maximum length.
    base = resolve_generative_base(config.model.name)
    tokenizer = AutoTokenizer.from_pretrained(base.path, trust_remote_code=False)
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            f"model {base.name!r} has no chat template, so it cannot learn conversations; "
            "use an instruction-tuned (chat) model"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        base.path, trust_remote_code=False, use_safetensors=True, dtype=torch.float32
    )
    context = model_context(model, tokenizer)
    length_of = conversation_length(tokenizer)
    if config.model.max_length == "auto":
        longest = max(length_of(c) for c in [*train, *valid])
        max_length = min(context, MAX_AUTO_LENGTH, max(16, -(-longest // 8) * 8))
    else:
        max_length = min(int(config.model.max_length), context)
    for chat_set in (train_set, valid_set):
        if chat_set is not None:
            check_lengths(chat_set, length_of, max_length, "refuse")

    # 3. Hyperparameters: resolve every "auto" from the data size.
    n_train = len(train)
    if t.batch_size != "auto" and t.batch_size > n_train:
        raise InputError(
            f"train.batch_size {t.batch_size} is larger than the {n_train} training "
            f"conversations; choose at most {n_train}"
        )
    batch_size = min(8, n_train) if t.batch_size == "auto" else int(t.batch_size)
    epochs = auto.auto_sft_epochs(n_train) if t.epochs == "auto" else t.epochs
    schedule = auto.resolve_schedule(n_train, epochs, batch_size, t.gradient_accumulation)
    base_rate = LEARNING_RATES[m.name] * math.sqrt(batch_size / 8)
    lr = t.learning_rate_multiplier * (
        base_rate if t.learning_rate == "auto" else float(t.learning_rate)
    )
    thread_choice = apply_threads(t.num_threads)
    settings = SftSettings(
        method=m.name,
        lora_r=m.lora_r,
        lora_alpha=m.lora_alpha,
        lora_dropout=m.lora_dropout,
        target_modules=m.target_modules or "all-linear",
        epochs=math.ceil(schedule.epochs),
        batch_size=batch_size,
        gradient_accumulation=t.gradient_accumulation,
        learning_rate=lr,
        weight_decay=t.weight_decay,
        warmup_ratio=t.warmup_ratio,
        max_grad_norm=t.max_grad_norm,
        max_length=max_length,
        seed=t.seed,
        eval_every=t.eval_every or max(1, -(-schedule.steps_per_epoch // t.evals_per_epoch)),
        patience=auto.effective_patience(t.patience, len(valid)) if t.patience else 0,
        max_steps=schedule.max_steps,
        precision=t.precision,
        checkpoint_every=t.checkpoint_every,
    )
    resolved = replace(
        config,
        data=replace(d, task="generate"),
        model=replace(config.model, max_length=max_length),
        train=replace(
            t,
            epochs=int(schedule.epochs) if schedule.epochs.is_integer() else schedule.epochs,
            batch_size=batch_size,
            learning_rate=lr,
            learning_rate_multiplier=1.0,  # already applied to learning_rate
            num_threads=thread_choice.threads,
        ),
    )

    if stage.exists() and not config.resume:
        shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    events = EventLog(stage / "events.jsonl", listeners=list(listeners))
    try:
        if not config.resume:
            events.emit("task", task=choice.task, reason=choice.reason)
        result = train_sft(
            model,
            tokenizer,
            train,
            valid or None,
            settings,
            events=events,
            checkpoint_dir=stage / "checkpoints",
            resume=config.resume,
        )
        events.close()

        # 4. Bundle: write everything into the staging directory, then rename into place.
        staged = stage / "bundle"
        if staged.exists():
            shutil.rmtree(staged)
        staged.mkdir()
        adapter = m.name == "lora"
        result.model.save_pretrained(  # type: ignore[operator]
            str(staged / ("adapter" if adapter else "model")), safe_serialization=True
        )
        tokenizer.save_pretrained(staged / "tokenizer")
        eos_ids = sorted(
            {
                int(i)
                for i in (tokenizer.eos_token_id, getattr(model.config, "eos_token_id", None))
                if isinstance(i, int)
            }
        )
        manifest = Manifest(
            task="generate",
            method=m.name,
            adapter=adapter,
            labels=(),
            max_length=max_length,
            base_model=BaseModelRef(
                name=base.name,
                source=base.source,
                sha256=base_sha256(base),
                path=str(base.path) if base.source != "package" else None,
            ),
            generation=GenerationDefaults(eos_token_ids=tuple(eos_ids), context=context),
            created_at=int(time.time()),
        )
        write_manifest(staged, manifest)
        last = result.train_history[-1] if result.train_history else {}
        metrics: dict[str, dict[str, Any]] = {
            "train": {
                "n_examples": n_train,
                "train_loss": last.get("train_loss"),
                "train_mean_token_accuracy": last.get("train_mean_token_accuracy"),
                "trained_tokens": result.trained_tokens,
            },
            "validation": {"n_examples": len(valid), **result.best_metrics},
        }
        samples = result.valid_history[-1].get("samples", []) if result.valid_history else []
        atomic_write_json(staged / "run_config.json", resolved.to_dict())
        atomic_write_json(staged / "eval.json", metrics)
        data_info = _data_fingerprint(train_set, valid_set, len(train), len(valid))
        atomic_write_json(staged / "data.json", data_info)
        env = describe_environment()
        env.update(
            seed=t.seed,
            device=str(next(result.model.parameters()).device),
            precision="bf16" if result.autocast_dtype is not None else "fp32",
            threads_reason=thread_choice.reason,
            wall_seconds=round(time.time() - started, 1),
        )
        atomic_write_json(staged / "environment.json", env)
        warnings = [
            {k: v for k, v in e.items() if k not in ("type", "time")}
            for e in read_events(stage / "events.jsonl")
            if e["type"] == "warning"
        ]
        trained = {
            "task": {"task": choice.task, "reason": choice.reason},
            "steps": result.steps,
            "epochs_trained": result.epochs,
            "best_step": result.best_step,
            "stopped_early": result.stopped_early,
            "train_seconds": round(result.train_seconds, 3),
            "tokens_per_s": round(result.tokens_per_s, 1),
            "truncated": result.truncated,
            "dropped": result.dropped,
            "warnings": warnings,
            "samples": samples,
        }
        atomic_write_json(staged / "training.json", trained)
        shutil.copy2(stage / "events.jsonl", staged / "events.jsonl")
        (staged / "README.md").write_text(
            render_generative_card(
                manifest, resolved.to_dict(), metrics, data_info, env, trained, base.licence
            ),
            encoding="utf-8",
        )
        publish(staged, output)
    except BaseException as exc:
        events.close()
        if isinstance(exc, InputError) and not config.resume:
            shutil.rmtree(stage, ignore_errors=True)  # bad input writes nothing
        raise
    shutil.rmtree(stage, ignore_errors=True)
    return ChatTrainResult(
        bundle=output,
        metrics=metrics,
        train_seconds=result.train_seconds,
        tokens_per_s=result.tokens_per_s,
    )


def _data_fingerprint(
    train: ChatSet, valid: ChatSet | None, n_train: int, n_valid: int
) -> dict[str, Any]:
    files = [
        {"path": s.source, "name": Path(s.source).name, "sha256": s.sha256, "format": s.format}
        for s in (train, valid)
        if s is not None
    ]
    return {
        "files": files,
        "splits": {
            "train": {"rows": n_train, "source": train.source, "carved_from_train": False},
            "validation": {
                "rows": n_valid,
                "source": valid.source if valid is not None else train.source,
                "carved_from_train": valid is None,
            },
        },
        "fingerprint": hashlib.sha256(
            "".join(f["sha256"] for f in files).encode("ascii")
        ).hexdigest(),
    }
