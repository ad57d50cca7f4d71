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
        _environment_line(environment),
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


def render_generative_card(
    manifest: Manifest,
    run_config: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    data: dict[str, Any],
    environment: dict[str, Any],
    training: dict[str, Any],
    licence: Any = None,
) -> str:
    """Markdown model card for a generative (chat) bundle.

    Args:
        manifest: The bundle manifest (task ``generate``, method, base model).
        run_config: The resolved run configuration.
        metrics: ``train`` and ``validation`` metrics of the kept weights.
        data: The data fingerprint.
        environment: Versions and hardware.
        training: The bundle's ``training.json`` (task choice, steps, samples, warnings).
        licence: The base model's ``Licence`` (None: a local directory, terms unknown).
    """
    base = manifest.base_model
    train = run_config["train"]
    method = run_config["method"]
    if licence is not None:
        kind = "an open-source licence" if licence.open_source else "not an open-source licence"
        licence_line = (
            f"- Licence: the base model's, the **{licence.name}** ({kind}): {licence.url}. "
            "This fine-tuned model carries the same terms."
        )
    else:
        licence_line = (
            "- Licence: that of the base model directory (not known to tuneforge); this "
            "fine-tuned model carries the same terms."
        )
    adapter = (
        f"LoRA adapter (r {method['lora_r']}, alpha {method['lora_alpha']}) over the base"
        if manifest.adapter
        else "all weights fine-tuned (full)"
    )
    lines = [
        "# Chat model (fine-tuned for generation)",
        "",
        "Fine-tuned with [tuneforge](https://pypi.org/project/tuneforge/) on the assistant "
        "replies of a chat file (the loss covers assistant tokens only).",
        "",
        "## Intended use",
        "Answers conversations like those it was trained on. Check its replies on your own "
        "prompts before relying on them: it can state wrong facts fluently.",
        "",
        "```python",
        "from tuneforge import Generator",
        'generator = Generator.load("path/to/this/bundle")',
        'print(generator.chat([{"role": "user", "content": "Hello"}]).text)',
        "```",
        "",
        "## Model",
        f"- Base model: `{base.name}` (source {base.source}, sha256 `{base.sha256[:16]}…`)",
        licence_line,
        f"- Method: {adapter}; conversations up to {manifest.max_length} tokens; context "
        f"{manifest.generation.context if manifest.generation else '–'} tokens",
        f"- Epochs {train['epochs']}, batch size {train['batch_size']}, learning rate "
        f"{train['learning_rate']:.2e}, warmup {train['warmup_ratio']}, seed {train['seed']}; "
        f"kept the weights of step {training['best_step']} (lowest validation loss) of "
        f"{training['steps']}" + (", stopped early" if training["stopped_early"] else ""),
        f"- Task: {training['task']['task']} ({training['task']['reason']})",
        "",
        "## Data",
        "| split | examples | source | carved from train |",
        "|---|---:|---|---|",
    ]
    for name, info in data["splits"].items():
        carved = "yes" if info["carved_from_train"] else "no"
        lines.append(f"| {name} | {info['rows']} | `{info['source']}` | {carved} |")
    lines += [
        "",
        "## Metrics (over assistant tokens only)",
        "",
        "| split | n | loss | mean token accuracy | perplexity |",
        "|---|---:|---:|---:|---:|",
    ]
    tr, va = metrics.get("train", {}), metrics.get("validation", {})
    lines.append(
        f"| train (last step) | {tr.get('n_examples')} | {_fmt(tr.get('train_loss'))} | "
        f"{_fmt(tr.get('train_mean_token_accuracy'))} | – |"
    )
    lines.append(
        f"| validation | {va.get('n_examples')} | {_fmt(va.get('valid_loss'))} | "
        f"{_fmt(va.get('valid_mean_token_accuracy'))} | {_fmt(va.get('perplexity'))} |"
    )
    samples = training.get("samples") or []
    if samples:
        lines += ["", "## Sample replies (validation prompts, greedy)", ""]
        for s in samples:
            prompt = s["prompt"][-1]["content"] if s.get("prompt") else ""
            lines += [
                f"- **Prompt:** {_one_line(prompt)}",
                f"  - **Reference:** {_one_line(s.get('reference', ''))}",
                f"  - **Model:** {_one_line(s.get('completion', ''))}",
            ]
    lines += ["", "## Limitations"]
    lines.append(
        f"- Trained on conversations up to {manifest.max_length} tokens; longer ones are "
        "outside what it has seen."
    )
    lines.append("- Metrics are token-level on one validation split, not task quality.")
    for w in training.get("warnings") or []:
        lines.append(f"- Warning ({w['code']}): {w['message']}")
    lines += [
        "",
        "## Environment",
        _environment_line(environment),
        "",
    ]
    return "\n".join(lines)


def _environment_line(environment: dict[str, Any]) -> str:
    """Versions, CPU and precision of the run, for the card's Environment section."""
    packages = environment["packages"]
    return (
        f"tuneforge {packages.get('tuneforge')}, torch {packages.get('torch')}, transformers "
        f"{packages.get('transformers')}; {environment.get('cpu')}; "
        f"precision {environment.get('precision')}."
    )


def _one_line(text: Any) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= 200 else flat[:199] + "…"
