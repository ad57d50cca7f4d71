"""``tuneforge generate`` (replies to a file of conversations) and ``tuneforge chat``
(an interactive conversation, streamed): thin over ``tuneforge.inference.generator``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tuneforge.errors import InputError

err = Console(stderr=True)

EXAMPLE = '{"messages": [{"role": "user", "content": "What is the capital of France?"}]}'

ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help="A generative base model (default-chat), a local Hugging Face causal-LM "
        "directory with a chat template, or a bundle of `tuneforge train --task generate`.",
        show_default=False,
    ),
]
MaxTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--max-tokens",
        help="Tokens to generate at most per reply (default: 256, or fewer where the "
        "model's context ends).",
        show_default=False,
    ),
]
TemperatureOpt = Annotated[
    float, typer.Option(help="0 for greedy decoding (the same reply every time), up to 2.")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(help="CPU threads (default: the CPUs this process may use that are free)."),
]
PrecisionOpt = Annotated[
    str, typer.Option(help="auto (bf16 on a GPU that has it, fp32 on CPU), fp32 or bf16.")
]


def load_generator(model: str, precision: str, threads: int | None) -> Any:
    """Load a generative model, saying on stderr what it runs as (dtype, context, threads)."""
    from tuneforge.inference.generator import Generator

    generator = Generator.load(
        model,
        precision=precision,  # type: ignore[arg-type]  # checked by Generator.load
        threads=threads,
        notify=lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True),
    )
    dtype = str(generator.dtype).removeprefix("torch.")
    name = generator.base.name
    if generator.bundle is not None:  # a fine-tuned chat model
        name = f"{generator.bundle} (fine-tuned from {generator.base.name})"
    facts = [f"{name}: {dtype}", f"context {generator.context} tokens"]
    if generator.threads is not None:
        facts.append(generator.threads.reason)
    err.print(", ".join(facts), style="dim", markup=False, highlight=False, soft_wrap=True)
    return generator


def read_prompts(path: str) -> list[tuple[int, dict[str, Any]]]:
    """The ``(line, record)`` of every conversation in a prompts file, all checked.

    Raises:
        InputError: Every problem of the file (line, field, fix); nothing is generated.
    """
    from tuneforge.data.tables import read_json_lines
    from tuneforge.inference.generator import message_problem

    read = read_json_lines(
        path, example=EXAMPLE, nested_fix="a conversation is a list of messages of text"
    )
    problems = read.problems
    for line, obj in read.objects:
        messages = obj.get("messages")
        if not isinstance(messages, list) or not messages:
            what = "has no" if messages is None else "has a bad"
            problems.add(
                f'the record {what} "messages": a non-empty list of messages',
                f"write one conversation per line, e.g. {EXAMPLE}",
                line,
                "messages",
            )
            continue
        for index, message in enumerate(messages):
            problem = message_problem(message, index)
            if problem is not None:
                field, what, fix = problem
                problems.add(what, fix, line, field)
    if not read.objects and not problems.total:
        problems.add("the file has no conversations", f"write one per line, e.g. {EXAMPLE}")
    problems.raise_if_any()
    return read.objects


def generate(
    model: ModelArg,
    input_file: Annotated[
        str,
        typer.Option(
            "--input",
            help='JSONL, one conversation per line: {"messages": [...]} (the conversation '
            "so far; the reply is the next assistant turn).",
            show_default=False,
        ),
    ],
    output_file: Annotated[
        Path,
        typer.Option(
            "--output",
            help='JSONL: each input line plus "completion" and "finish_reason", in input order.',
            show_default=False,
        ),
    ],
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = 0.0,
    top_p: Annotated[
        float, typer.Option(help="Sample from the most probable tokens whose total is P.")
    ] = 1.0,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed for sampling (reproducible replies).", show_default=False),
    ] = None,
    stop: Annotated[
        list[str] | None,
        typer.Option(help="Stop before this string (repeat for up to 4).", show_default=False),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Conversations decoded together.")] = 8,
    precision: PrecisionOpt = "auto",
    threads: ThreadsOpt = None,
) -> None:
    """Write a reply to each conversation of a JSONL file (greedy unless told otherwise)."""
    from tuneforge.bundle import atomic_write_text
    from tuneforge.inference.generator import check_sampling

    settings = check_sampling(max_tokens, temperature, top_p, stop, seed)
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1 (got {batch_size})")
    if not output_file.parent.is_dir():
        raise InputError(f"--output {output_file}: the folder {output_file.parent} does not exist")
    records = read_prompts(input_file)
    generator = load_generator(model, precision, threads)
    lengths = []
    for line, obj in records:
        try:
            lengths.append(generator.prompt_tokens(obj["messages"]))
            generator.check_room(lengths[-1], settings.max_tokens)
        except InputError as exc:
            raise InputError(f"{input_file}:{line}: {exc}") from None
    # Conversations of similar length decode together (less padding); replies keep the
    # input order.
    order = sorted(range(len(records)), key=lambda i: lengths[i])
    replies: dict[int, Any] = {}
    progress = Progress(
        TextColumn("[bold]generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[speed]} tokens/s"),
        TimeElapsedColumn(),
        console=err,
    )
    import time

    started, tokens = time.monotonic(), 0
    with progress:
        task = progress.add_task("generate", total=len(records), speed="-")
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            completions = generator.chat_batch(
                [records[i][1]["messages"] for i in chunk],
                max_tokens=settings.max_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                stop=list(settings.stop) or None,
                seed=settings.seed,
            )
            for i, completion in zip(chunk, completions, strict=True):
                replies[i] = completion
                tokens += completion.completion_tokens
            elapsed = max(time.monotonic() - started, 1e-9)
            progress.update(task, advance=len(chunk), speed=f"{tokens / elapsed:.1f}")
    lines = []
    for i, (_, obj) in enumerate(records):
        row = {**obj, "completion": replies[i].text, "finish_reason": replies[i].finish_reason}
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(output_file, "\n".join(lines) + "\n")
    err.print(
        f"wrote {len(lines)} replies ({tokens} tokens) to {output_file}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def chat(
    model: ModelArg,
    system: Annotated[
        str | None,
        typer.Option(help="System message that starts the conversation.", show_default=False),
    ] = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = 0.0,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling.", show_default=False)] = None,
    precision: PrecisionOpt = "auto",
    threads: ThreadsOpt = None,
) -> None:
    """Talk with a model: each reply streams as it decodes.

    Type a message and press Enter. /reset starts the conversation again, /exit (or
    end of input) quits. Input that is not a terminal is read a line at a time, each
    line a message.
    """
    from tuneforge.inference.generator import Completion, check_sampling

    settings = check_sampling(max_tokens, temperature, 1.0, None, seed)
    generator = load_generator(model, precision, threads)
    start = [] if system is None else [{"role": "system", "content": system}]
    messages = list(start)
    interactive = sys.stdin.isatty()
    if interactive:
        err.print("Type a message; /reset starts again, /exit quits.", style="dim")
    while True:
        if interactive:
            try:
                line = input("> ")
            except EOFError:
                break
        else:
            read = sys.stdin.readline()
            if not read:
                break
            line = read.rstrip("\n")
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            messages = list(start)
            err.print("(conversation reset)", style="dim")
            continue
        asked = [*messages, {"role": "user", "content": line}]
        try:
            pieces = generator.stream(
                asked,
                max_tokens=settings.max_tokens,
                temperature=settings.temperature,
                seed=settings.seed,
            )
        except InputError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            continue
        for piece in pieces:
            if isinstance(piece, Completion):
                messages = [*asked, {"role": "assistant", "content": piece.text}]
                if piece.finish_reason == "length":
                    err.print(f"(reply cut at {piece.completion_tokens} tokens)", style="dim")
                break
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
