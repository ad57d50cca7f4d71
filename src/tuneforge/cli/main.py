"""The ``tuneforge`` command line: thin typer commands over the library.

Exit codes: 0 success, 1 a failed run, 2 bad input (one clear message, no traceback),
130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.table import Table as RichTable

from tuneforge.cli import generate_commands, server_commands
from tuneforge.cli.train_options import EXPORT_CHOICES, with_parameters
from tuneforge.errors import InputError, Problem, TuneforgeError
from tuneforge.training.threads import set_wait_policy

_typer_click: types.ModuleType
try:  # typer >= 0.22 raises the exceptions of its own vendored copy of click
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover - older typer uses click itself
    _typer_click = click.exceptions

_CLICK_ERRORS = (click.ClickException, _typer_click.ClickException)
_USAGE_ERRORS = (click.UsageError, _typer_click.UsageError)
_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)

app = typer.Typer(
    name="tuneforge",
    help="Fine-tune, evaluate and serve text classifiers on your own machine, offline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect data before training.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    if value:
        # The installed distribution's version (pyproject.toml), without importing the
        # package's public API from the layer below it.
        from importlib.metadata import version

        sys.stdout.write(f"tuneforge {version('tuneforge')}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Fine-tune, evaluate and serve text classifiers on your own machine, offline."""


out = Console()
err = Console(stderr=True)


TextColumn = Annotated[
    str | None, typer.Option(help="Column with the text (default: auto-detect 'text', …).")
]
LabelColumn = Annotated[
    str | None, typer.Option(help="Column with the label(s) (default: auto-detect 'label', …).")
]


def train(**values: Any) -> None:
    """Fine-tune a classifier or a chat model on TRAIN, evaluate it, write a bundle.

    The task follows the file (--task auto): a chat file whose final replies are a few
    short, repeated values trains a classifier, any other chat file a chat model
    (default model default-chat, method lora); tables train classifiers.
    Every setting is a flag below, a --set section.key=value, or a key of a --config file
    (a bundle's run_config.json re-runs that run); flags win over --set, --set over --config.
    """
    from tuneforge.cli.progress import TrainingProgress
    from tuneforge.cli.train_options import given_run_config, with_task_defaults
    from tuneforge.config import RunConfig
    from tuneforge.recipes.finetune_chat import choose_run_task, finetune_chat
    from tuneforge.recipes.finetune_classifier import finetune_classifier
    from tuneforge.recipes.run_checks import check_run_config

    quiet = values.pop("quiet")
    export_to = values.pop("export")
    if export_to not in EXPORT_CHOICES:
        raise InputError(f"--export must be one of {', '.join(EXPORT_CHOICES)}, got {export_to!r}")
    fixed = ("train_file", "output", "config", "set_", "overwrite", "resume")
    raw = given_run_config(**{k: values.pop(k) for k in fixed}, flags=values)
    config = RunConfig.from_dict(raw)  # checks every value before any data is read
    choice = choose_run_task(config)
    if choice is not None and config.data.task == "auto":
        err.print(f"task: {choice.task} ({choice.reason})", markup=False)
    if choice is not None and choice.task == "generate":
        config = with_task_defaults(raw, "generate")
        check_run_config(config)
        if export_to == "fp32":
            raise InputError("--export applies to classifiers; a chat model is not exported")
        _train_chat(config, quiet=quiet, finetune_chat=finetune_chat)
        return
    check_run_config(config)  # before any data is read
    listeners = [] if quiet else [TrainingProgress(err)]
    try:
        result = finetune_classifier(config, listeners=listeners, task=choice)
    finally:
        for listener in listeners:
            listener.close()
    _print_metrics(result.metrics)
    if export_to != "none":
        _export_after_training(result.bundle, int8=export_to == "int8")
    out.print(
        f"trained in {result.train_seconds:.0f} s ({result.examples_per_s:.0f} examples/s)\n"
        f"bundle: [bold]{result.bundle}[/bold] (model card: {result.bundle / 'README.md'})\n"
        f'predict: tuneforge predict {result.bundle} "some text"'
    )


def _train_chat(config: Any, *, quiet: bool, finetune_chat: Any) -> None:
    """The generative half of ``train``: fine-tune, then print the metrics and next steps."""
    from tuneforge.cli.progress import TrainingProgress

    listeners = [] if quiet else [TrainingProgress(err)]
    try:
        result = finetune_chat(config, listeners=listeners)
    finally:
        for listener in listeners:
            listener.close()
    table = RichTable(title="Kept weights (assistant tokens only)")
    for column in ("split", "n", "loss", "mean token accuracy", "perplexity"):
        table.add_column(column, justify="left" if column == "split" else "right")

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else "–"

    tr, va = result.metrics["train"], result.metrics["validation"]
    table.add_row(
        "train",
        str(tr["n_examples"]),
        cell(tr.get("train_loss")),
        cell(tr.get("train_mean_token_accuracy")),
        "–",
    )
    table.add_row(
        "validation",
        str(va["n_examples"]),
        cell(va.get("valid_loss")),
        cell(va.get("valid_mean_token_accuracy")),
        cell(va.get("perplexity")),
    )
    out.print(table)
    out.print(
        f"trained in {result.train_seconds:.0f} s ({result.tokens_per_s:.0f} tokens/s)\n"
        f"bundle: [bold]{result.bundle}[/bold] (model card: {result.bundle / 'README.md'})\n"
        f"chat: tuneforge chat {result.bundle}"
    )


def _export_after_training(bundle: Path, *, int8: bool) -> None:
    """Export the new bundle to ONNX Runtime; a failed export leaves a working bundle and
    says so (the torch backend serves it)."""
    from tuneforge.recipes.export import export_bundle

    try:
        report = export_bundle(bundle, int8=int8, log=lambda m: err.print(m, style="dim"))
    except Exception as exc:  # the bundle is complete and works without an export
        reason = str(exc) if isinstance(exc, TuneforgeError) else f"{type(exc).__name__}: {exc}"
        err.print(
            f"warning: ONNX export skipped ({reason}); the bundle is served by torch; "
            "`tuneforge export BUNDLE --int8` retries it",
            style="yellow",
            markup=False,
        )
        return
    parts = []
    for name, e in report["backends"].items():
        drop = e.get("accuracy_drop")
        shown = "" if drop is None else f" ({0.0 - drop * 100 + 0.0:+.2f} pt)"
        parts.append(f"{name} {e['batch1_ms_p50']:.1f} ms{shown}")
    err.print(
        "exported, batch-1 p50 (validation accuracy vs torch): " + ", ".join(parts), style="dim"
    )


def _print_metrics(metrics: dict[str, dict]) -> None:
    table = RichTable(title="Best checkpoint")
    keys = ["accuracy", "subset_accuracy", "macro_f1", "micro_f1", "weighted_f1", "log_loss"]
    keys = [k for k in keys if any(k in m for m in metrics.values())]
    table.add_column("split")
    table.add_column("n", justify="right")
    for key in keys:
        table.add_column(key, justify="right")
    for split, m in metrics.items():
        cells = [f"{m[k]:.4f}" if isinstance(m.get(k), float) else "–" for k in keys]
        table.add_row(split, str(m["n_examples"]), *cells)
    out.print(table)


@data_app.command("check")
def data_check(
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE...", help="TRAIN [VALIDATION [TEST]] files.", show_default=False
        ),
    ],
    validation: Annotated[str | None, typer.Option(help="Validation file.")] = None,
    test: Annotated[str | None, typer.Option(help="Test file.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model whose tokenizer measures token lengths (default: train's; for a "
            "generation set, none: no token counts)."
        ),
    ] = None,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    multi_label: Annotated[
        bool | None, typer.Option("--multi-label", help="Rows may carry several labels.")
    ] = None,
    label_separator: Annotated[
        str | None,
        typer.Option(help="Separator of several labels in one CSV cell (default: train's, '|')."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the split (default: train's, 42).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Report class balance, duplicates, leakage, conflicts and token lengths per split.

    A chat file (OpenAI chat or prompt/completion JSONL) is checked as a generation set:
    the task it is for and why, turns, characters and tokens per example, duplicates and
    leakage. One whose replies are labels gets the classifier report, with the task.
    """
    from tuneforge.config import RunConfig
    from tuneforge.data.chat_sets import looks_like_chat_set
    from tuneforge.data.report import build_data_report, render_data_report
    from tuneforge.models.classifier import load_tokenizer
    from tuneforge.models.registry import resolve_base_model
    from tuneforge.recipes.finetune_classifier import load_splits
    from tuneforge.training.auto import estimated_tokens_per_s

    if len(files) > 3:
        raise InputError("data check takes at most 3 files: TRAIN [VALIDATION [TEST]]")
    names = [*files, None, None][:3]
    task = None
    if looks_like_chat_set(names[0] or ""):
        paths = {"train": names[0], "validation": validation or names[1], "test": test or names[2]}
        task = _check_chat_files(paths, model, as_json)
        if task is None:  # a generation set: reported
            return
    data = {
        "train": names[0],
        "validation": validation or names[1],
        "test": test or names[2],
        "text_column": text_column,
        "label_column": label_column,
        "multi_label": multi_label,
        "label_separator": label_separator,
    }
    # Options not given keep the run config's defaults, so the splits are train's.
    config = RunConfig.from_dict(
        {
            "data": {k: v for k, v in data.items() if v is not None},
            "model": {} if model is None else {"name": model},
            "train": {} if seed is None else {"seed": seed},
            "output": ".",
        }
    )
    splits = load_splits(config)
    base = resolve_base_model(config.model.name)
    tokenizer = load_tokenizer(base.path)
    report = build_data_report(
        splits, tokenizer, throughput_tokens_per_s=estimated_tokens_per_s(base.path)
    )
    if task is not None:
        report["task"] = {"task": task.task, "reason": task.reason}
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    if task is not None:
        out.print(f"Task: {task.task} ({task.reason})", markup=False, highlight=False)
    out.print(render_data_report(report))


def _chat_model_dir(model: str) -> Path:
    """The directory whose tokenizer counts a generation set's tokens: a generative base by
    name (``default-chat``: converted once on first use), else any model directory."""
    from tuneforge.models.registry import (
        known_generative_bases,
        resolve_base_model,
        resolve_generative_base,
    )

    if model in known_generative_bases():
        return resolve_generative_base(model).path
    return resolve_base_model(model).path


def _check_chat_files(paths: dict[str, str | None], model: str | None, as_json: bool):
    """Read chat files (the problems of all of them at once) and choose the task; report a
    generation set and return None, or return the task choice of a classification set."""
    from tuneforge.data.chat_report import build_chat_report, render_chat_report
    from tuneforge.data.chat_sets import ChatSet, looks_like_chat_set, read_chat_set
    from tuneforge.data.task import choose_task
    from tuneforge.models.classifier import load_tokenizer

    def read(roles: list[str]) -> None:
        problems: list[Problem] = []
        for role in roles:
            path = paths[role]
            assert path is not None
            try:
                sets[role] = read_chat_set(path)
            except InputError as exc:
                problems.extend(exc.problems or [Problem(file=path, message=str(exc))])
        if problems:
            raise InputError(f"{len(problems)} problem(s) in the data files", problems)

    sets: dict[str, ChatSet] = {}
    given = [role for role, path in paths.items() if path is not None]
    # a classification set may have labelled tables beside it: those are read as tables
    chat = [r for r in given if r == "train" or looks_like_chat_set(paths[r] or "")]
    read(chat)
    choice = choose_task(sets["train"])
    if choice.task == "classify":
        return choice
    read([r for r in given if r not in chat])  # a generation set's splits are chat files
    tokenizer = None if model is None else load_tokenizer(_chat_model_dir(model))
    report = build_chat_report(sets, choice, tokenizer)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    else:
        out.print(render_chat_report(report))
    return None


@app.command("eval")
def eval_command(
    bundle: Annotated[
        str,
        typer.Argument(
            metavar="MODEL_OR_BUNDLE",
            help="A bundle written by `tuneforge train`, or a generative model (default-chat, "
            "a local causal-LM directory) to score on generated text.",
            show_default=False,
        ),
    ],
    data_file: Annotated[
        str,
        typer.Argument(
            metavar="FILE",
            help="Labelled file to evaluate a classifier on; for a generative model, JSONL "
            'with "messages" (the prompt) and "references" (the expected answers) per line.',
            show_default=False,
        ),
    ],
    json_out: Annotated[
        Path,
        typer.Option(
            "--json",
            help="Where to write the metrics JSON; Markdown (.md) and, for a classifier, the "
            "confusion matrix (.png) go beside it.",
        ),
    ] = Path("eval.json"),
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    label_separator: Annotated[
        str, typer.Option(help="Separator of several labels in one CSV cell.")
    ] = "|",
    compare: Annotated[
        str | None,
        typer.Option(
            help="Generative models: a second model scored on the same prompts; the report "
            "shows both models' metrics and replies side by side.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(help="Generative models: score only the first N prompts.", show_default=False),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            help="Generative models: tokens to generate at most per reply (default: 256, or "
            "fewer where the model's context ends).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Evaluate a bundle on any labelled file (JSON, Markdown and a PNG), or a generative
    model on prompts with references (BLEU, ROUGE-L, slot coverage; JSON and Markdown)."""
    from tuneforge.models.model_kind import is_generative

    if is_generative(bundle):
        from tuneforge.cli.eval_generation import eval_generation

        classifier_only = {
            "--text-column": text_column,
            "--label-column": label_column,
            "--label-separator": None if label_separator == "|" else label_separator,
        }
        given = [flag for flag, value in classifier_only.items() if value is not None]
        if given:
            raise InputError(
                f"{', '.join(given)} apply to classifier bundles only; {bundle} is a "
                "generative model, scored on the references of each prompt"
            )

        eval_generation(
            bundle, data_file, json_out, compare=compare, limit=limit, max_tokens=max_tokens
        )
        return
    generative_only = {"--compare": compare, "--limit": limit, "--max-tokens": max_tokens}
    given = [flag for flag, value in generative_only.items() if value is not None]
    if given:
        raise InputError(
            f"{', '.join(given)} apply to generative models only; {bundle} is evaluated as a "
            "classifier bundle"
        )
    from tuneforge.evaluation.report import write_eval_report
    from tuneforge.recipes.evaluate import evaluate_bundle

    metrics = evaluate_bundle(
        Path(bundle),
        data_file,
        text_column=text_column,
        label_column=label_column,
        label_separator=label_separator,
    )
    png = json_out.with_suffix(".png") if "confusion_matrix" in metrics else None
    write_eval_report(
        metrics, json_out, json_out.with_suffix(".md"), png, title=f"Evaluation on {data_file}"
    )
    _print_metrics({Path(data_file).name: metrics})
    written = [json_out, json_out.with_suffix(".md")] + ([png] if png else [])
    out.print("wrote " + ", ".join(str(p) for p in written))


@app.command()
def predict(
    bundle: Annotated[
        Path, typer.Argument(help="A bundle written by `tuneforge train`.", show_default=False)
    ],
    texts: Annotated[
        list[str] | None,
        typer.Argument(metavar="[TEXT]...", help="Texts to classify.", show_default=False),
    ] = None,
    input_file: Annotated[
        str | None,
        typer.Option(
            "--input",
            help="File of texts: CSV/TSV/JSONL/Parquet with a text column, or .txt with one "
            "text per line.",
        ),
    ] = None,
    output_file: Annotated[
        Path | None, typer.Option("--output", help="Write predictions here (.csv or .jsonl).")
    ] = None,
    text_column: TextColumn = None,
    top_k: Annotated[
        int | None, typer.Option(help="Also return the k most probable labels.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Abstain (empty label) below this probability.")
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="torch, onnx, onnx-int8 (after `tuneforge export`), or auto: the fastest "
            "exported backend within --max-accuracy-drop of torch."
        ),
    ] = "auto",
    max_accuracy_drop: Annotated[
        float, typer.Option(help="For --backend auto: accuracy drop allowed (0.01 = 1 point).")
    ] = 0.01,
) -> None:
    """Classify texts given as arguments or in a file."""
    from tuneforge.data.tables import read_texts
    from tuneforge.inference.files import write_predictions
    from tuneforge.inference.predictor import Predictor

    if bool(texts) == bool(input_file):
        raise InputError("give either TEXT arguments or --input FILE (not both, not neither)")
    if threshold is not None and not 0 <= threshold <= 1:
        raise InputError("--threshold must be between 0 and 1")
    if output_file is not None and output_file.suffix.lower() not in {".csv", ".jsonl"}:
        raise InputError(f"--output {output_file}: use a .csv or .jsonl file name")
    batch = read_texts(input_file, text_column) if input_file else list(texts or [])
    predictor = Predictor.load(bundle, backend=backend, max_accuracy_drop=max_accuracy_drop)
    preds = predictor.predict(batch, top_k=top_k, threshold=threshold)
    if output_file is not None:
        write_predictions(output_file, batch, preds)
        out.print(f"wrote {len(preds)} predictions to {output_file}")
        return
    for text, pred in zip(batch, preds, strict=True):
        row = {"text": text, **pred.to_dict()}
        if not top_k:
            row.pop("top_k")
        row.pop("probabilities")
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")


@app.command()
def export(
    bundle: Annotated[
        Path, typer.Argument(help="A bundle written by `tuneforge train`.", show_default=False)
    ],
    format_: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write an int8 model (calibrated, static).")
    ] = False,
    validation: Annotated[
        str | None,
        typer.Option(
            help="Labelled file to measure on (default: the bundle's own validation split, "
            "re-read from its source file)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Export a bundle to ONNX Runtime (fp32, optionally int8), measuring accuracy and speed."""
    from tuneforge.recipes.export import export_bundle

    if format_ != "onnx":
        raise InputError(f"--format {format_!r} is not supported; use --format onnx")
    report = export_bundle(
        bundle, int8=int8, validation_file=validation, log=lambda m: err.print(m, style="dim")
    )
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    table = RichTable("backend", "accuracy", "drop", "agreement", "batch-1 p50 ms", "batch-32/s")
    for name, e in report["backends"].items():
        drop = e.get("accuracy_drop")
        table.add_row(
            name,
            f"{e['accuracy']:.4f}",
            "" if drop is None else f"{drop * 100:+.2f} pt",
            "" if "label_agreement" not in e else f"{e['label_agreement']:.4f}",
            f"{e['batch1_ms_p50']:.2f}",
            f"{e['batch32_per_s']:.0f}",
        )
    out.print(table)
    out.print(
        f"measured on {report['validation']['rows']} validation rows; "
        f"written to {Path(bundle) / 'onnx'}"
    )


app.command()(with_parameters(train))
app.command()(generate_commands.generate)
app.command()(generate_commands.chat)

# Server commands (tuneforge serve / worker / keys) live in their own module.
app.command()(server_commands.serve)
app.command()(server_commands.worker)
app.add_typer(server_commands.keys_app, name="keys")
app.add_typer(server_commands.models_app, name="models")


def main() -> None:
    """Console-script entry point: maps errors to one line and an exit code."""
    from tuneforge.environment import quiet_libraries

    # Before torch loads (OpenMP reads it once): idle OpenMP threads sleep instead of
    # spinning, so a busy or shared machine does not collapse training throughput; a
    # training or generation run that starts on an idle machine keeps spinning threads
    # (~20-30% faster); a chat session, which lasts, always sleeps.
    set_wait_policy(adaptive=sys.argv[1:2] in (["train"], ["generate"]))
    quiet_libraries()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="tuneforge", standalone_mode=False)
    except _EXITS as exc:
        sys.exit(exc.exit_code)
    except _CLICK_ERRORS as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, _USAGE_ERRORS) else exc.exit_code)
    except _ABORTS:
        _interrupted()
    except TuneforgeError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("TUNEFORGE_DEBUG"):
            raise
        err.print(
            f"error: {type(exc).__name__}: {exc} (set TUNEFORGE_DEBUG=1 for a traceback)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    # Without standalone mode typer turns Ctrl-C into a returned 130 (and ctx.exit(n) into
    # a returned n) instead of raising: a return value that is an int is the exit code.
    if code == 130:
        _interrupted()
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


def _interrupted() -> NoReturn:
    err.print(
        "interrupted: no bundle was written; checkpoints are kept, run the same "
        "command with --resume to continue"
        if "train" in sys.argv[1:2]
        else "interrupted"
    )
    sys.exit(130)
