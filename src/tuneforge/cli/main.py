"""The ``tuneforge`` command line: thin typer commands over the library.

Exit codes: 0 success, 1 a failed run, 2 bad input (one clear message, no traceback),
130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import click
import typer
from rich.console import Console
from rich.table import Table as RichTable

from tuneforge import __version__
from tuneforge.cli import server_commands
from tuneforge.errors import InputError, TuneforgeError
from tuneforge.training.threads import set_wait_policy

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
        sys.stdout.write(f"tuneforge {__version__}\n")
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


def _auto_int(value: str, name: str) -> int | str:
    if value == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{name} must be a whole number or 'auto', got {value!r}") from None


def _auto_float(value: str, name: str) -> float | str:
    if value == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{name} must be a number or 'auto', got {value!r}") from None


TextColumn = Annotated[
    str | None, typer.Option(help="Column with the text (default: auto-detect 'text', …).")
]
LabelColumn = Annotated[
    str | None, typer.Option(help="Column with the label(s) (default: auto-detect 'label', …).")
]


@app.command()
def train(
    train_file: Annotated[
        Path,
        typer.Argument(
            metavar="TRAIN",
            help="Training file: CSV, TSV, JSONL, OpenAI chat JSONL or Parquet.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory to write the model bundle to.")
    ],
    validation: Annotated[
        str | None, typer.Option(help="Validation file (default: a stratified 10% of TRAIN).")
    ] = None,
    test: Annotated[
        str | None, typer.Option(help="Held-out test file (default: a stratified 10% of TRAIN).")
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            help="Base model: 'default' (all-MiniLM-L6-v2, offline), a local HF directory, "
            "or a hub id."
        ),
    ] = "default",
    method: Annotated[
        str, typer.Option(help="Fine-tuning method: full, head, lora or ia3.")
    ] = "full",
    epochs: Annotated[
        str, typer.Option(help="Epochs (1.5 ends mid-epoch), or 'auto' (from the data size).")
    ] = "auto",
    batch_size: Annotated[str, typer.Option(help="Batch size, or 'auto'.")] = "auto",
    learning_rate: Annotated[
        str, typer.Option(help="Peak learning rate, or 'auto' (from the method).")
    ] = "auto",
    head_lr_multiplier: Annotated[
        str,
        typer.Option(
            help="The new head's learning rate over --learning-rate, or 'auto' (20 for "
            "full fine-tuning with 10+ labels, else 1)."
        ),
    ] = "auto",
    max_length: Annotated[
        str,
        typer.Option(
            help="Max tokens per text, or 'auto' (99th percentile of the training texts)."
        ),
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for splits, shuffling and initialisation.")] = 42,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    multi_label: Annotated[
        bool, typer.Option("--multi-label", help="Rows may carry several labels.")
    ] = False,
    label_separator: Annotated[
        str, typer.Option(help="Separator of several labels in one CSV cell.")
    ] = "|",
    precision: Annotated[
        str, typer.Option(help="auto (bf16 where the hardware has fast bf16), fp32 or bf16.")
    ] = "auto",
    patience: Annotated[
        int, typer.Option(help="Evaluations without improvement before stopping early (0: never).")
    ] = 3,
    eval_every: Annotated[
        int | None, typer.Option(help="Evaluate every N steps (default: twice per epoch).")
    ] = None,
    selection_metric: Annotated[
        str, typer.Option(help="Validation metric that picks the best checkpoint.")
    ] = "macro_f1",
    warmup_ratio: Annotated[float, typer.Option(help="Share of steps with linear warmup.")] = 0.06,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.01,
    gradient_accumulation: Annotated[int, typer.Option(help="Batches per optimizer step.")] = 1,
    class_weights: Annotated[
        bool, typer.Option("--class-weights", help="Weight the loss by inverse class frequency.")
    ] = False,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (method lora).")] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha (method lora).")] = 16,
    train_embeddings: Annotated[
        bool,
        typer.Option(
            "--train-embeddings", help="Also train the word-embedding matrix (method full; slower)."
        ),
    ] = False,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a non-empty output directory.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fine-tune a classifier on TRAIN, evaluate it on held-out data, write a bundle."""
    from tuneforge.cli.progress import TrainingProgress
    from tuneforge.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
    from tuneforge.recipes.finetune_classifier import finetune_classifier

    config = RunConfig(
        data=DataConfig(
            train=str(train_file),
            validation=validation,
            test=test,
            text_column=text_column,
            label_column=label_column,
            multi_label=multi_label,
            label_separator=label_separator,
        ),
        output=str(output),
        model=ModelConfig(name=model, max_length=_auto_int(max_length, "--max-length")),
        method=MethodConfig(
            name=method,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            freeze_embeddings=not train_embeddings,
        ),
        train=TrainConfig(
            epochs=_auto_float(epochs, "--epochs"),
            batch_size=_auto_int(batch_size, "--batch-size"),
            learning_rate=_auto_float(learning_rate, "--learning-rate"),
            head_lr_multiplier=_auto_float(head_lr_multiplier, "--head-lr-multiplier"),
            seed=seed,
            precision=precision,
            patience=patience,
            eval_every=eval_every,
            selection_metric=selection_metric,
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
            gradient_accumulation=gradient_accumulation,
            class_weights=class_weights,
            num_threads=threads,
        ),
        overwrite=overwrite,
        resume=resume,
    )
    listeners = [] if quiet else [TrainingProgress(err)]
    try:
        result = finetune_classifier(config, listeners=listeners)
    finally:
        for listener in listeners:
            listener.close()
    _print_metrics(result.metrics)
    out.print(
        f"trained in {result.train_seconds:.0f} s ({result.examples_per_s:.0f} examples/s)\n"
        f"bundle: [bold]{result.bundle}[/bold] (model card: {result.bundle / 'README.md'})\n"
        f'predict: tuneforge predict {result.bundle} "some text"'
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
        str, typer.Option(help="Model whose tokenizer measures token lengths.")
    ] = "default",
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    multi_label: Annotated[
        bool, typer.Option("--multi-label", help="Rows may carry several labels.")
    ] = False,
    label_separator: Annotated[
        str, typer.Option(help="Separator of several labels in one CSV cell.")
    ] = "|",
    seed: Annotated[int, typer.Option(help="Seed of the split (same as train's).")] = 42,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Report class balance, duplicates, leakage, conflicts and token lengths per split."""
    from tuneforge.config import DataConfig, RunConfig, TrainConfig
    from tuneforge.data.report import build_data_report, render_data_report
    from tuneforge.models.registry import resolve_base_model
    from tuneforge.recipes.finetune_classifier import load_splits
    from tuneforge.training.auto import estimated_tokens_per_s

    if len(files) > 3:
        raise InputError("data check takes at most 3 files: TRAIN [VALIDATION [TEST]]")
    names = [*files, None, None][:3]
    config = RunConfig(
        data=DataConfig(
            train=names[0],
            validation=validation or names[1],
            test=test or names[2],
            text_column=text_column,
            label_column=label_column,
            multi_label=multi_label,
            label_separator=label_separator,
        ),
        output=".",
        train=TrainConfig(seed=seed),
    )
    from tuneforge.models.classifier import load_tokenizer

    splits = load_splits(config)
    base = resolve_base_model(model)
    tokenizer = load_tokenizer(base.path)
    report = build_data_report(
        splits, tokenizer, throughput_tokens_per_s=estimated_tokens_per_s(base.path)
    )
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        out.print(render_data_report(report))


@app.command("eval")
def eval_command(
    bundle: Annotated[
        Path, typer.Argument(help="A bundle written by `tuneforge train`.", show_default=False)
    ],
    data_file: Annotated[
        str,
        typer.Argument(metavar="FILE", help="Labelled file to evaluate on.", show_default=False),
    ],
    json_out: Annotated[
        Path,
        typer.Option(
            "--json",
            help="Where to write the metrics JSON; Markdown (.md) and the confusion matrix "
            "(.png) go beside it.",
        ),
    ] = Path("eval.json"),
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    label_separator: Annotated[
        str, typer.Option(help="Separator of several labels in one CSV cell.")
    ] = "|",
) -> None:
    """Evaluate a bundle on any labelled file; write JSON, Markdown and a PNG."""
    from tuneforge.evaluation.bundle_eval import evaluate_bundle
    from tuneforge.evaluation.report import write_eval_report

    metrics = evaluate_bundle(
        bundle,
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
    from tuneforge.inference.export import export_bundle

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


# Server commands (tuneforge serve / worker / keys) live in their own module.
app.command()(server_commands.serve)
app.command()(server_commands.worker)
app.add_typer(server_commands.keys_app, name="keys")
app.add_typer(server_commands.models_app, name="models")


def _quiet_libraries() -> None:
    """Our own progress bar is enough: silence the libraries' bars and info logs.

    Through the environment, read when transformers loads, so that commands that never
    need transformers (``--version``, ``predict`` on ONNX) do not pay for importing it.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already loaded (e.g. main() called in-process)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def main() -> None:
    """Console-script entry point: maps errors to one line and an exit code."""
    # Before torch loads (OpenMP reads it once): idle OpenMP threads sleep instead of
    # spinning, so a busy or shared machine does not collapse training throughput.
    set_wait_policy()
    _quiet_libraries()
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
