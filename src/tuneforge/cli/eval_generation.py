"""``tuneforge eval`` on a generative model: one greedy reply per prompt of a reference
file, scored (BLEU, ROUGE-L, slot coverage), optionally beside a second model's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from tuneforge.errors import InputError

out = Console()
err = Console(stderr=True)


def _generate(model: str, items: list[Any], source: str, max_tokens: int | None) -> Any:
    from tuneforge.cli.generate_commands import load_generator
    from tuneforge.inference.generation_eval import run_model

    generator = load_generator(model, "auto", None)
    progress = Progress(
        TextColumn(f"[bold]{model}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[speed]} tokens/s"),
        TimeElapsedColumn(),
        console=err,
    )
    import time

    started = time.monotonic()
    with progress:
        task = progress.add_task("generate", total=len(items), speed="-")

        def advance(done: int, tokens: int) -> None:
            speed = tokens / max(time.monotonic() - started, 1e-9)
            progress.update(task, completed=done, speed=f"{speed:.1f}")

        return run_model(
            generator, model, items, source=source, max_tokens=max_tokens, on_batch=advance
        )


def eval_generation(
    model: str,
    data_file: str,
    json_out: Path,
    *,
    compare: str | None,
    limit: int | None,
    max_tokens: int | None,
) -> None:
    """Score ``model`` (and ``compare``) on a reference file; write JSON and Markdown.

    Raises:
        InputError: Bad options, a bad reference file (every problem, with its line), or
            a model that cannot be loaded; nothing is written.
    """
    from tuneforge.evaluation.generation_report import (
        METRIC_NAMES,
        format_metric,
        write_generation_report,
    )
    from tuneforge.inference.generator import check_sampling
    from tuneforge.inference.reference_files import read_references

    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1 (got {limit})")
    check_sampling(max_tokens, 0.0, 1.0, None, None)
    if not json_out.parent.is_dir():
        raise InputError(f"--json {json_out}: the folder {json_out.parent} does not exist")
    items = read_references(data_file, limit)
    runs = [_generate(model, items, data_file, max_tokens)]
    if compare is not None:
        runs.append(_generate(compare, items, data_file, max_tokens))
    examples = []
    for index, item in enumerate(items):
        example: dict[str, Any] = {"line": item.line, "messages": item.messages}
        if item.mr is not None:
            example["mr"] = item.mr
        example["references"] = item.references
        example["output"] = runs[0].completions[index].text
        example["finish_reason"] = runs[0].completions[index].finish_reason
        if compare is not None:
            example["compare_output"] = runs[1].completions[index].text
            example["compare_finish_reason"] = runs[1].completions[index].finish_reason
        examples.append(example)
    report: dict[str, Any] = {
        "task": "generate",
        "data": data_file,
        "model": model,
        "metrics": runs[0].metrics,
        "settings": {"decoding": "greedy", "max_tokens": max_tokens, "limit": limit},
        "models": [r.summary() for r in runs],
        "examples": examples,
    }
    if compare is not None:
        report["compare"] = {"model": compare, "metrics": runs[1].metrics}
    md_out = json_out.with_suffix(".md")
    write_generation_report(report, json_out, md_out)
    table = RichTable(title=f"{Path(data_file).name} ({len(items)} prompts)")
    table.add_column("metric")
    for run in runs:
        table.add_column(run.model, justify="right")
    for key, label in METRIC_NAMES:
        if key in runs[0].metrics:
            table.add_row(label, *(format_metric(key, r.metrics.get(key)) for r in runs))
    table.add_row("seconds", *(f"{r.seconds:.1f}" for r in runs))
    out.print(table)
    out.print(f"wrote {json_out}, {md_out}", markup=False, highlight=False, soft_wrap=True)
