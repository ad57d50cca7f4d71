"""The model card (a bundle's README.md): intended use, data, metrics, limitations."""

from __future__ import annotations

from typing import Any

from tuneforge.bundle import Manifest


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_model_card(
    manifest: Manifest,
    run_config: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    data: dict[str, Any],
    environment: dict[str, Any],
    training: dict[str, Any] | None = None,
) -> str:
    """Markdown model card for a bundle.

    Args:
        manifest: The bundle manifest (labels, method, base model).
        run_config: The resolved run configuration.
        metrics: Split name -> metrics of the best checkpoint.
        data: The data fingerprint.
        environment: Versions and hardware.
        training: The bundle's ``training.json`` (the plan, what was trained, warnings).
    """
    labels = manifest.labels
    multi = manifest.multi_label
    train = run_config["train"]
    lines = [
        f"# Text classifier ({len(labels)} labels, {manifest.task.replace('_', '-')})",
        "",
        "Fine-tuned with [tuneforge](https://pypi.org/project/tuneforge/).",
        "",
        "## Intended use",
        f"Classifies short texts into one{' or more' if multi else ''} of: "
        + ", ".join(f"`{label}`" for label in labels[:30])
        + (f" and {len(labels) - 30} more" if len(labels) > 30 else "")
        + ". Use it on text like its training data; check the per-class table before "
        "relying on rare classes.",
        "",
        "```python",
        "from tuneforge import Predictor",
        'predictor = Predictor.load("path/to/this/bundle")',
        'print(predictor.predict(["some text"]))',
        "```",
        "",
        "## Model",
        f"- Base model: `{manifest.base_model.name}` "
        f"(weights sha256 `{manifest.base_model.sha256[:16]}…`)",
        f"- Method: `{manifest.method}`; max length {manifest.max_length} tokens",
        f"- Epochs {train['epochs']}, batch size {train['batch_size']}, learning rate "
        f"{train['learning_rate']:.2e}, warmup {train['warmup_ratio']}, seed {train['seed']}, "
        f"selection metric `{train['selection_metric']}` on validation",
        *_training_lines(training),
        "",
        "## Data",
        "| split | rows | source | carved from train |",
        "|---|---:|---|---|",
    ]
    for name, info in data["splits"].items():
        carved = "yes" if info["carved_from_train"] else "no"
        lines.append(f"| {name} | {info['rows']} | `{info['source']}` | {carved} |")
    lines += ["", "## Metrics (best checkpoint)", ""]
    keys = (
        ["subset_accuracy", "micro_f1", "macro_f1", "hamming_loss"]
        if multi
        else ["accuracy", "macro_f1", "micro_f1", "weighted_f1", "log_loss", "ece", "roc_auc"]
    )
    keys = [k for k in keys if any(k in m for m in metrics.values())]
    lines.append("| split | n | " + " | ".join(keys) + " |")
    lines.append("|---|---:|" + "---:|" * len(keys))
    for split, m in metrics.items():
        row = " | ".join(_fmt(m.get(k)) for k in keys)
        lines.append(f"| {split} | {m.get('n_examples')} | {row} |")
    test = metrics.get("test", {})
    if test.get("per_class"):
        lines += ["", "### Per class (test)", "", "| label | precision | recall | F1 | support |"]
        lines.append("|---|---:|---:|---:|---:|")
        for label, row in test["per_class"].items():
            lines.append(
                f"| {label} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | "
                f"{_fmt(row['f1'])} | {row['support']} |"
            )
    lines += [
        "",
        "## Limitations",
        "- Trained only on the data above; texts from other domains, languages or styles "
        "may be misclassified with high confidence.",
        f"- Inputs longer than {manifest.max_length} tokens are truncated.",
        "- Metrics come from a single held-out split; small classes have wide error bars.",
        "- Check the data report (`tuneforge data check`) for duplicates and leakage, "
        "which inflate test scores.",
        "",
        "## Environment",
        f"tuneforge {environment['packages'].get('tuneforge')}, torch "
        f"{environment['packages'].get('torch')}, transformers "
        f"{environment['packages'].get('transformers')}; {environment.get('cpu')}; "
        f"precision {environment.get('precision')}.",
        "",
    ]
    return "\n".join(lines)


def _training_lines(training: dict[str, Any] | None) -> list[str]:
    """The plan against what ran, and the run's warnings."""
    if not training:
        return []
    plan, trained = training["plan"], training["trained"]
    stop = (
        f"stopped early at step {trained['steps']} of {trained['steps_planned']}"
        if trained["stopped_early"]
        else f"ran all {trained['steps']} planned steps"
    )
    lines = [
        f"- Trained {trained['epochs_trained']:g} of {trained['epochs_planned']} planned epochs "
        f"({stop}; best checkpoint at step {trained['best_step']}, epoch "
        f"{trained['best_epoch']}); early stopping after {plan['patience']} evaluations "
        f"without improvement, not before step {plan['min_steps_before_stopping']}",
        f"- {plan['total_steps']} steps of batch {plan['batch_size']} "
        f"({plan['steps_per_epoch']} per epoch), head learning rate "
        f"{plan['head_learning_rate']:.2e}, precision {plan['precision']}, "
        f"{plan['threads']} thread(s); {plan['truncated_texts']} training text(s) truncated; "
        f"estimated {plan['estimated_seconds']:.0f} s at start, trained in "
        f"{trained['train_seconds']:.0f} s",
    ]
    for w in training.get("warnings") or []:
        lines.append(f"- Warning ({w['code']}): {w['message']}")
    return lines
