"""Fine-tune a text classifier: config -> data -> model -> train -> evaluate -> bundle.

This is the one file to read top to bottom to see what ``tuneforge train`` does.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from tuneforge.bundle import (
    BaseModelRef,
    Manifest,
    atomic_write_json,
    check_output_dir,
    publish,
    staging_dir,
    write_manifest,
)
from tuneforge.card import render_model_card
from tuneforge.config import RunConfig
from tuneforge.data.checks import check_error, data_problems, describe_example, table_problems
from tuneforge.data.encode import EncodedTexts, encode_texts, length_grouped_batches
from tuneforge.data.labels import LabelMap
from tuneforge.data.splits import Splits, make_splits, split_manifest
from tuneforge.data.tables import Table, read_table
from tuneforge.data.task import TaskChoice
from tuneforge.environment import describe_environment
from tuneforge.errors import InputError, Problem
from tuneforge.evaluation.evaluate import evaluate_logits
from tuneforge.evaluation.metrics import selection_score, tune_thresholds
from tuneforge.evaluation.report import write_eval_report
from tuneforge.inference.runner import run_logits
from tuneforge.methods import get_method
from tuneforge.methods.head import head_parameter_prefixes
from tuneforge.models.classifier import build_classifier, load_tokenizer
from tuneforge.models.forward import sigmoid
from tuneforge.models.registry import BaseModel, resolve_base_model
from tuneforge.recipes.checkpoint_bundles import CheckpointKeeper, write_checkpoint_bundles
from tuneforge.recipes.run_checks import check_run_config, check_schedule
from tuneforge.training import auto
from tuneforge.training.checkpoint import load_best, load_trainable_state
from tuneforge.training.device import pick_device, resolve_precision
from tuneforge.training.events import EventLog, Listener, read_events
from tuneforge.training.loop import LoopSettings, fit, planned_steps
from tuneforge.training.seed import seed_everything
from tuneforge.training.speed import estimate_seconds, measure_training_speed, padded_tokens
from tuneforge.training.threads import apply_threads

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel


@dataclass
class TrainResult:
    """Where the bundle is and how the best checkpoint scored."""

    bundle: Path
    metrics: dict[str, dict[str, Any]]  # split name -> metrics
    train_seconds: float
    examples_per_s: float


# ---------------------------------------------------------------- data


def load_splits(config: RunConfig) -> Splits:
    """Read every given file (reporting the problems of all of them at once) and split."""
    d = config.data
    tables: dict[str, Table | None] = {}
    problems: list[Problem] = []
    for role, path in (("train", d.train), ("validation", d.validation), ("test", d.test)):
        if path is None:
            tables[role] = None
            continue
        try:
            table = read_table(
                path,
                text_column=d.text_column,
                label_column=d.label_column,
                multi_label=d.multi_label,
                label_separator=d.label_separator,
            )
        except InputError as exc:
            problems.extend(exc.problems or [Problem(file=path, message=str(exc))])
            continue
        tables[role] = table
        # Rows a tokenizer cannot take, a training file of one class: stop before any work.
        problems.extend(table_problems(table, training=role == "train"))
    if problems:
        raise InputError(f"{len(problems)} problem(s) in the data files", problems)
    assert tables["train"] is not None  # DataConfig.train is required
    return make_splits(
        tables["train"],
        tables["validation"],
        tables["test"],
        validation_fraction=d.validation_fraction,
        test_fraction=d.test_fraction,
        seed=config.train.seed,
    )


def choose_max_length(lengths: np.ndarray, model_limit: int) -> int:
    """The 99th percentile of training lengths, rounded up to a multiple of 8."""
    p99 = int(np.ceil(np.percentile(lengths, 99))) if len(lengths) else 16
    return int(min(model_limit, max(16, -(-p99 // 8) * 8)))


def model_length_limit(tokenizer, base: BaseModel) -> int:
    """The longest input the model accepts (position embeddings, tokenizer limit)."""
    config = json.loads((base.path / "config.json").read_text())
    limit = int(config.get("max_position_embeddings", 512))
    tok_limit = getattr(tokenizer, "model_max_length", limit) or limit
    return int(min(limit, tok_limit if tok_limit < 100_000 else limit))


def encode_splits(
    tokenizer, splits: Splits, max_length: int | str, limit: int
) -> tuple[dict[str, EncodedTexts], int]:
    """Tokenise every split once; resolve ``auto`` max_length from the training lengths."""
    train = encode_texts(tokenizer, splits.train.texts, limit)
    if max_length == "auto":
        max_length = choose_max_length(train.lengths, limit)
    max_length = min(int(max_length), limit)
    too_long = np.flatnonzero(train.lengths > max_length)
    if len(too_long):  # re-tokenise only the texts that need truncating
        cut = encode_texts(tokenizer, [splits.train.texts[i] for i in too_long], max_length)
        for i, ids in zip(too_long, cut.ids, strict=True):
            train.ids[i] = ids
        train.lengths[too_long] = cut.lengths
        train.truncated = len(too_long)
    encoded = {"train": train}
    for name in ("validation", "test"):
        encoded[name] = encode_texts(tokenizer, getattr(splits, name).texts, max_length)
    return encoded, max_length


def targets_for(labels: LabelMap, table: Table, multi_label: bool) -> np.ndarray:
    """Class ids (single-label) or multi-hot rows (multi-label)."""
    return labels.encode_multi(table.labels) if multi_label else labels.encode_single(table.labels)


def make_loss(
    multi_label: bool, class_weights: bool, targets: np.ndarray, n_labels: int
) -> torch.nn.Module:
    """Cross-entropy (optionally inverse-frequency weighted) or BCE-with-logits."""
    if multi_label:
        return torch.nn.BCEWithLogitsLoss()
    weight = None
    if class_weights:
        counts = np.bincount(targets, minlength=n_labels).astype(np.float64)
        weight = torch.tensor(
            len(targets) / (n_labels * np.maximum(counts, 1)), dtype=torch.float32
        )
    return torch.nn.CrossEntropyLoss(weight=weight)


# ---------------------------------------------------------------- the run


def finetune_classifier(
    config: RunConfig,
    listeners: Sequence[Listener] = (),
    task: TaskChoice | None = None,
) -> TrainResult:
    """Run one fine-tuning job end to end and write the bundle to ``config.output``.

    Args:
        config: The run configuration.
        listeners: Receive every training event (the CLI's progress bar, a job worker).
        task: Why this file trains a classifier (``choose_task`` on a chat file), written
            as the first event; None writes none.

    Returns:
        The bundle path and the best checkpoint's metrics.

    Raises:
        InputError: Bad data, options or paths (nothing is written).
        KeyboardInterrupt: Interrupted; checkpoints stay in the staging directory for
            ``--resume``, no bundle is written.
    """
    started = time.time()
    if config.data.task == "generate":
        raise InputError(
            "data.task is generate: a chat model is fine-tuned by `tuneforge train --task "
            "generate` (recipes.finetune_chat), not the classifier recipe"
        )
    check_run_config(config)  # unknown method or selection metric: fail before any work
    output = Path(config.output)
    check_output_dir(output, overwrite=config.overwrite)
    stage = staging_dir(output)
    if config.resume and not (stage / "checkpoints" / "latest.json").is_file():
        raise InputError(f"--resume: no checkpoint found in {stage}; start without --resume")

    # 1. Data: read, validate, split (all before anything is written).
    splits = load_splits(config)
    multi = config.data.multi_label
    # The data report's cheap checks: warnings, or (quality_checks="error") a stop here.
    problems = [] if config.data.quality_checks == "off" else data_problems(splits)
    if problems and config.data.quality_checks == "error":
        raise check_error(problems, config.data.train)
    check_schedule(config, len(splits.train))  # e.g. a batch larger than the data
    labels = LabelMap.from_labels(splits.train.labels)

    # 2. Model: base + head + method.
    method = get_method(config.method.name)
    base = resolve_base_model(config.model.name)
    tokenizer = load_tokenizer(base.path)
    limit = model_length_limit(tokenizer, base)
    encoded, max_length = encode_splits(tokenizer, splits, config.model.max_length, limit)

    # 3. Hyperparameters: resolve every "auto" from the data size.
    t = config.train
    n_train = len(splits.train)
    schedule = auto.resolve_schedule(n_train, t.epochs, t.batch_size, t.gradient_accumulation)
    batch_size, epochs, spe = schedule.batch_size, schedule.epochs, schedule.steps_per_epoch
    lr = t.learning_rate_multiplier * (
        auto.auto_learning_rate(method.learning_rate, batch_size)
        if t.learning_rate == "auto"
        else float(t.learning_rate)
    )
    head_mult = (
        auto.auto_head_lr_multiplier(method.head_lr_multiplier, len(labels))
        if t.head_lr_multiplier == "auto"
        else float(t.head_lr_multiplier)
    )
    max_steps = schedule.max_steps
    thread_choice = apply_threads(t.num_threads)
    threads = thread_choice.threads
    device = pick_device()
    settings = LoopSettings(
        epochs=math.ceil(epochs),
        max_steps=max_steps,
        head_learning_rate=lr * head_mult,
        batch_size=batch_size,
        learning_rate=lr,
        weight_decay=t.weight_decay,
        warmup_ratio=t.warmup_ratio,
        gradient_accumulation=t.gradient_accumulation,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        patience=auto.effective_patience(t.patience, len(splits.validation)),
        eval_every=t.eval_every or max(1, -(-spe // t.evals_per_epoch)),
        checkpoint_every=t.checkpoint_every,
        device=device,
        autocast_dtype=resolve_precision(t.precision, device),
    )
    spe, total_steps = planned_steps(encoded["train"].lengths, settings)
    settings = replace(
        settings, min_steps=auto.min_steps_before_stopping(t.min_epochs, spe, total_steps)
    )
    resolved = replace(
        config,
        train=replace(
            t,
            epochs=int(epochs) if epochs.is_integer() else epochs,
            batch_size=batch_size,
            learning_rate=lr,
            learning_rate_multiplier=1.0,  # already applied to learning_rate
            head_lr_multiplier=head_mult,
            num_threads=threads,
            min_epochs=round(settings.min_steps / spe, 4),
        ),
        model=replace(config.model, max_length=max_length),
    )

    if stage.exists() and not config.resume:
        shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    keeper = CheckpointKeeper(stage / "checkpoints", t.keep_checkpoints)
    events = EventLog(stage / "events.jsonl", listeners=[*listeners, keeper])

    def warn(code: str, message: str, **fields: Any) -> None:
        events.emit("warning", code=code, message=message, **fields)

    try:
        if task is not None and not config.resume:
            events.emit("task", task=task.task, reason=task.reason)
        for problem in problems:
            example = describe_example(problem["example"])
            fields = {k: v for k, v in problem.items() if k not in ("code", "message")}
            warn(
                problem["code"],
                problem["message"] + (f"; e.g. {example}" if example else ""),
                **fields,
            )
        seed_everything(t.seed)
        model: torch.nn.Module = build_classifier(base.path, list(labels.names), multi_label=multi)
        model = method.prepare(model, config.method)

        targets = {n: targets_for(labels, getattr(splits, n), multi) for n in encoded}
        train_targets = torch.from_numpy(targets["train"])
        loss_fn = make_loss(multi, t.class_weights, targets["train"], len(labels))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        def logits_of(split: str, autocast_dtype: torch.dtype | None) -> np.ndarray:
            return run_logits(
                model,
                encoded[split],
                pad_id=pad_id,
                batch_size=max(64, batch_size),
                device=device,
                autocast_dtype=autocast_dtype,
            )

        def evaluate() -> tuple[float, dict[str, Any]]:
            # Validation during training runs at the training precision (it only ranks
            # checkpoints); the reported metrics below are recomputed in fp32.
            metrics = evaluate_logits(
                logits_of("validation", settings.autocast_dtype),
                targets["validation"],
                labels.names,
                multi_label=multi,
            )
            return selection_score(metrics, t.selection_metric), metrics

        # 4. Plan: what auto chose, and this machine's speed measured on the real model.
        head_prefixes = head_parameter_prefixes(model) if head_mult != 1 else ()
        speed = measure_training_speed(
            model,
            encoded["train"],
            train_targets,
            batch_size=batch_size,
            gradient_accumulation=t.gradient_accumulation,
            loss_fn=loss_fn,
            pad_id=pad_id,
            device=device,
            autocast_dtype=settings.autocast_dtype,
            learning_rate=lr,
            weight_decay=t.weight_decay,
            head_prefixes=head_prefixes,
            head_learning_rate=settings.head_learning_rate,
            seed=t.seed,
        )
        settings = replace(settings, expected_tokens_per_s=speed.step_tokens_per_s or None)
        plan = _plan(
            settings,
            encoded,
            speed,
            epochs=epochs,
            spe=spe,
            total_steps=total_steps,
            head_mult=head_mult,
            max_length=max_length,
            method=method.name,
            threads=threads,
            threads_reason=thread_choice.reason,
            configured_patience=t.patience,
        )
        events.emit("plan", **plan)

        # 5. Train: validation during training, keep the best, stop early.
        result = fit(
            model,
            encoded["train"],
            train_targets,
            settings=settings,
            loss_fn=loss_fn,
            evaluate=evaluate,
            pad_id=pad_id,
            checkpoint_dir=stage / "checkpoints",
            events=events,
            resume=config.resume,
            head_prefixes=head_prefixes,
        )

        # 6. Evaluate the best checkpoint on validation and the held-out test split, in
        # fp32 whatever the training precision: the bundle is served in fp32 (Predictor's
        # default), so the reported metrics are the ones a user gets and `tuneforge eval`
        # reproduces them on the same file (bf16 logits differ in the third digit).
        best = load_best(stage / "checkpoints")
        if best is not None:
            load_trainable_state(model, best[0])
        logits = {name: logits_of(name, None) for name in ("validation", "test")}
        thresholds = None
        if multi:
            thresholds = tune_thresholds(targets["validation"], sigmoid(logits["validation"]))
        metrics = {
            name: evaluate_logits(
                logits[name],
                targets[name],
                labels.names,
                multi_label=multi,
                thresholds=thresholds if thresholds is not None else 0.5,
            )
            for name in ("validation", "test")
        }
        if not multi:
            moved = _barely_moved(metrics["validation"], targets["validation"], len(labels))
            if moved:
                warn("barely_moved", moved, split="validation")
        trained = {
            "epochs_planned": plan["epochs"],
            "epochs_trained": round(result.epochs_trained, 3),
            "steps_planned": total_steps,
            "steps": result.steps,
            "best_step": result.best_step,
            "best_epoch": round(result.best_step / spe, 3) if spe else None,
            "stopped_early": result.stopped_early,
            "train_seconds": round(result.train_seconds, 3),
        }
        events.emit(
            "summary",
            best_step=result.best_step,
            steps=result.steps,
            epochs_planned=trained["epochs_planned"],
            epochs_trained=trained["epochs_trained"],
            steps_planned=total_steps,
            stopped_early=result.stopped_early,
            train_seconds=round(result.train_seconds, 3),
            train_examples_per_s=round(result.examples_per_s, 2),
            trained_tokens=_trained_tokens(
                encoded["train"],
                result.steps * settings.batch_size * settings.gradient_accumulation,
            ),
            validation=_headline(metrics["validation"]),
            test=_headline(metrics["test"]),
        )
        events.close()

        # 7. Bundle: write everything into the staging directory, then rename into place.
        staged = stage / "bundle"
        if staged.exists():
            shutil.rmtree(staged)
        staged.mkdir()
        saved = cast("PreTrainedModel | PeftModel", model)  # the classifier or its peft wrapper
        if method.adapter:
            saved.save_pretrained(str(staged / "adapter"))
        else:
            saved.save_pretrained(str(staged / "model"), safe_serialization=True)
        tokenizer.save_pretrained(staged / "tokenizer")
        manifest = Manifest(
            task="multi_label" if multi else "single_label",
            method=method.name,
            adapter=method.adapter,
            labels=tuple(labels.names),
            max_length=max_length,
            thresholds=tuple(thresholds.tolist()) if thresholds is not None else None,
            base_model=BaseModelRef(
                name=base.name,
                source=base.source,
                sha256=base.weights_sha256(),
                path=str(base.path) if base.source != "package" else None,
            ),
            created_at=int(time.time()),
        )
        write_manifest(staged, manifest)
        write_checkpoint_bundles(keeper, model, staged, manifest, result.steps)
        atomic_write_json(staged / "run_config.json", resolved.to_dict())
        atomic_write_json(staged / "eval.json", metrics)
        write_eval_report(
            metrics["test"],
            staged / "eval_test.json",
            staged / "eval_test.md",
            staged / "confusion_matrix_test.png",
            title="Held-out test split",
        )
        (staged / "eval_test.json").unlink()  # eval.json holds both splits
        data_info = _data_fingerprint(splits, config)
        atomic_write_json(staged / "data.json", data_info)
        atomic_write_json(staged / "splits.json", split_manifest(splits))
        env = describe_environment()
        env.update(
            seed=t.seed,
            device=str(device),
            precision="bf16" if settings.autocast_dtype is not None else "fp32",
            threads_reason=thread_choice.reason,
            wall_seconds=round(time.time() - started, 1),
        )
        atomic_write_json(staged / "environment.json", env)
        # Every warning of the run, from the events file: those of an interrupted attempt
        # too, and the loop's own (slow training).
        warnings = [
            {k: v for k, v in e.items() if k not in ("type", "time")}
            for e in read_events(stage / "events.jsonl")
            if e["type"] == "warning"
        ]
        training_info = {"plan": plan, "trained": trained, "warnings": warnings}
        atomic_write_json(staged / "training.json", training_info)
        shutil.copy2(stage / "events.jsonl", staged / "events.jsonl")
        (staged / "README.md").write_text(
            render_model_card(manifest, resolved.to_dict(), metrics, data_info, env, training_info),
            encoding="utf-8",
        )
        publish(staged, output)
    except BaseException as exc:
        events.close()
        if isinstance(exc, InputError) and not config.resume:
            shutil.rmtree(stage, ignore_errors=True)  # bad input writes nothing
        raise
    shutil.rmtree(stage, ignore_errors=True)
    return TrainResult(
        bundle=output,
        metrics=metrics,
        train_seconds=result.train_seconds,
        examples_per_s=result.examples_per_s,
    )


def _trained_tokens(train: EncodedTexts, examples_seen: int) -> int:
    """Tokens the optimizer saw: the mean training length times the examples processed."""
    if not len(train.lengths):
        return 0
    return round(float(np.mean(train.lengths)) * examples_seen)


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "n_examples",
        "accuracy",
        "subset_accuracy",
        "macro_f1",
        "micro_f1",
        "log_loss",
        "ece",
    )
    return {k: metrics[k] for k in keys if k in metrics}


def _data_fingerprint(splits: Splits, config: RunConfig) -> dict[str, Any]:
    files: dict[str, dict[str, Any]] = {}
    for name in ("train", "validation", "test"):
        table = getattr(splits, name)
        entry = files.setdefault(
            table.source,
            {
                "path": table.source,
                "name": Path(table.source).name,
                "sha256": table.sha256,
                "format": table.format,
                "rows": 0,
            },
        )
        entry["rows"] += len(table)
    return {
        "files": list(files.values()),
        "splits": {
            name: {
                "rows": len(getattr(splits, name)),
                "source": getattr(splits, name).source,
                "carved_from_train": bool(splits.carved.get(name, False)),
            }
            for name in ("train", "validation", "test")
        },
        "text_column": config.data.text_column,
        "label_column": config.data.label_column,
        "multi_label": config.data.multi_label,
    }


def _plan(
    settings: LoopSettings,
    encoded: dict[str, EncodedTexts],
    speed,
    *,
    epochs: float,
    spe: int,
    total_steps: int,
    head_mult: float,
    max_length: int,
    method: str,
    threads: int,
    threads_reason: str,
    configured_patience: int,
) -> dict[str, Any]:
    """What the run will do, with ``auto`` resolved, and its time estimated from ``speed``."""
    train = encoded["train"]
    batches = length_grouped_batches(
        train.lengths, settings.batch_size, seed=settings.seed, epoch=0
    )
    tokens_per_epoch = sum(padded_tokens(train.lengths, batches))
    run_epochs = total_steps / spe if spe else 0.0
    evaluations = math.ceil(run_epochs * math.ceil(spe / settings.eval_every))
    estimate = estimate_seconds(
        speed,
        train_tokens_per_epoch=tokens_per_epoch,
        epochs=run_epochs,
        total_steps=total_steps,
        validation_tokens=int(np.sum(encoded["validation"].lengths)),
        evaluations=evaluations,
    )
    return {
        "epochs": int(epochs) if epochs.is_integer() else epochs,
        "total_steps": total_steps,
        "steps_per_epoch": spe,
        "batch_size": settings.batch_size,
        "gradient_accumulation": settings.gradient_accumulation,
        "learning_rate": settings.learning_rate,
        "head_learning_rate": settings.head_learning_rate,
        "head_lr_multiplier": head_mult,
        "max_length": max_length,
        "truncated_texts": int(train.truncated),
        "method": method,
        "precision": "bf16" if settings.autocast_dtype is not None else "fp32",
        "threads": threads,
        "threads_reason": threads_reason,
        "train_examples": len(train),
        "validation_examples": len(encoded["validation"]),
        "eval_every": settings.eval_every,
        "evaluations": evaluations,
        "patience": settings.patience,
        "patience_configured": configured_patience,
        "min_steps_before_stopping": settings.min_steps,
        "estimated_seconds": round(estimate, 1),
        "measured": speed.as_dict(),
    }


BARELY_MOVED_LOG_LOSS = 0.9
"""A validation log loss at or above this share of log(K) counts as barely moved."""


def _barely_moved(metrics: dict[str, Any], targets: np.ndarray, n_labels: int) -> str | None:
    """A warning message when the model ends close to where an untrained one starts.

    Two baselines: the log loss of a uniform guess, log(K), and the accuracy of always
    answering the validation split's most frequent class, plus one standard error of that
    rate (sqrt(m(1-m)/n)) so that noise on a small split does not count as learning.
    """
    n = len(targets)
    if n == 0 or n_labels < 2:
        return None
    uniform = math.log(n_labels)
    majority = float(np.bincount(targets, minlength=n_labels).max() / n)
    margin = math.sqrt(majority * (1 - majority) / n)
    loss, acc = metrics.get("log_loss"), metrics.get("accuracy")
    reasons = []
    if loss is not None and loss >= BARELY_MOVED_LOG_LOSS * uniform:
        reasons.append(
            f"validation log loss {loss:.3f} is near {uniform:.3f}, a uniform guess over "
            f"{n_labels} classes"
        )
    if acc is not None and acc <= majority + margin:
        reasons.append(
            f"validation accuracy {acc:.3f} is near {majority:.3f}, always answering the most "
            "frequent class"
        )
    if not reasons:
        return None
    return (
        "the model barely moved: "
        + "; ".join(reasons)
        + ". Train longer (epochs), raise the learning rate, or add data."
    )
