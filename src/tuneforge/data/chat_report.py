"""The pre-flight report of ``tuneforge data check`` for generation sets (chat files).

Before any training: the task the file is for and why; examples, turns, trained and
weight-0 assistant turns; characters per example; tokens per example and per epoch under a
model's tokenizer; duplicate examples; and leakage between splits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from rich.console import Group, RenderableType
from rich.table import Table as RichTable
from rich.text import Text

from tuneforge.data.chat_sets import ChatSet, conversation_length
from tuneforge.data.conversations import Conversation
from tuneforge.data.task import TaskChoice

MAX_EXAMPLES = 5
"""Examples listed per finding."""

TOKEN_SAMPLE = 20_000
"""Most training examples tokenised to measure lengths (a seeded sample beyond it)."""

_PAIRS = (("train", "validation"), ("train", "test"), ("validation", "test"))
_CLIP = 200


def build_chat_report(sets: dict[str, ChatSet], task: TaskChoice, tokenizer=None) -> dict[str, Any]:
    """Measure generation sets before training.

    Duplicates count examples minus distinct examples in a split (an example seen three
    times counts 2); examples are equal when their turns (roles, texts and weights) are.
    Leakage counts the examples of the second split of a pair that occur in the first
    (``exact``), and those whose prompt (every turn before the last assistant turn) occurs
    there (``prompt``, which includes the exact ones).

    Args:
        sets: Split name (``train``, ``validation``, ``test``) -> its examples; ``train``
            is required.
        task: The task chosen for the training set (``choose_task``).
        tokenizer: A Hugging Face tokenizer; token counts are skipped when None. With a chat
            template, an example's tokens are the rendered conversation's; without one, its
            texts joined by line breaks.

    Returns:
        A JSON-serialisable dict: ``kind`` ("chat"), ``task`` (task and reason),
        ``splits``, ``examples``, ``turns``, ``trained_turns``, ``weight_zero_turns``,
        ``characters``, ``tokens`` (or None), ``duplicates``, ``leakage`` and ``warnings``.
    """
    train = sets["train"]
    conversations = train.conversations
    turns = np.asarray([len(c.turns) for c in conversations], dtype=np.int64)
    chars = np.asarray([sum(len(t.content) for t in c.turns) for c in conversations])
    assistant = [t for c in conversations for t in c.turns if t.role == "assistant"]
    keys = {name: [_key(c.turns) for c in s.conversations] for name, s in sets.items()}
    report: dict[str, Any] = {
        "kind": "chat",
        "task": {"task": task.task, "reason": task.reason},
        "splits": {
            name: {"examples": len(s), "source": s.source, "format": s.format}
            for name, s in sets.items()
        },
        "examples": len(train),
        "turns": {
            "total": int(turns.sum()),
            "mean": round(float(turns.mean()), 2) if len(turns) else 0.0,
            "max": int(turns.max()) if len(turns) else 0,
        },
        "trained_turns": sum(1 for t in assistant if t.trained),
        "weight_zero_turns": sum(1 for t in assistant if not t.trained),
        "characters": _percentiles(chars),
        "tokens": None,
        "duplicates": {name: _duplicates(s, keys[name]) for name, s in sets.items()},
        "leakage": {
            f"{a}/{b}": _leakage(sets[a], sets[b], keys[a], keys[b])
            for a, b in _PAIRS
            if a in sets and b in sets
        },
    }
    if tokenizer is not None:
        report["tokens"] = _tokens(conversations, conversation_length(tokenizer), tokenizer)
    report["warnings"] = _warnings(report)
    return report


# ---------------------------------------------------------------- measures


def _percentiles(values: np.ndarray) -> dict[str, float | int]:
    if not len(values):
        return {"p50": 0.0, "p99": 0.0, "max": 0}
    p50, p99 = (round(float(v), 1) for v in np.percentile(values, [50, 99]))
    return {"p50": p50, "p99": p99, "max": int(values.max())}


def _tokens(
    conversations: list[Conversation], count: Callable[[Conversation], int], tokenizer
) -> dict[str, Any]:
    """Token percentiles over a seeded sample; tokens per epoch scaled to every example."""
    sample = conversations
    if len(conversations) > TOKEN_SAMPLE:
        picked = np.random.default_rng(0).choice(len(conversations), TOKEN_SAMPLE, replace=False)
        sample = [conversations[i] for i in sorted(picked)]
    lengths = np.asarray([count(c) for c in sample], dtype=np.int64)
    limit = getattr(tokenizer, "model_max_length", None)
    limit = int(limit) if limit and limit < 1_000_000 else None
    over = [c.line for c, n in zip(sample, lengths, strict=True) if limit and n > limit]
    return {
        "counted_with": "chat template" if getattr(tokenizer, "chat_template", None) else "texts",
        "sampled": len(sample),
        "examples": len(conversations),
        **_percentiles(lengths),
        "mean": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
        "tokens_per_epoch": round(float(lengths.sum()) * len(conversations) / max(len(sample), 1)),
        "model_max_length": limit,
        "over_model_max_length": len(over),
        "over_lines": over[:MAX_EXAMPLES],
    }


def _key(turns) -> str:
    return json.dumps([[t.role, t.content, t.weight] for t in turns], ensure_ascii=False)


def _prompt_key(turns) -> str:
    last = max((i for i, t in enumerate(turns) if t.role == "assistant"), default=len(turns))
    return _key(turns[:last])


def _clip(text: str) -> str:
    return text if len(text) <= _CLIP else text[: _CLIP - 1] + "…"


def _shown(conversation: Conversation) -> str:
    """The example's last user turn and last assistant turn, for a finding's example."""
    last = {t.role: t.content for t in conversation.turns}
    return _clip(f"{last.get('user', '')} -> {last.get('assistant', '')}")


def _duplicates(chat: ChatSet, keys: list[str]) -> dict[str, Any]:
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    repeated = [rows for rows in groups.values() if len(rows) > 1]
    examples = [
        {
            "example": _shown(chat.conversations[rows[0]]),
            "lines": [chat.conversations[i].line for i in rows],
        }
        for rows in repeated[:MAX_EXAMPLES]
    ]
    return {"exact": len(keys) - len(groups), "examples": examples}


def _leakage(a: ChatSet, b: ChatSet, keys_a: list[str], keys_b: list[str]) -> dict[str, Any]:
    """Examples of ``b`` that occur in ``a``, whole (``exact``) or by their prompt."""
    exact_a: dict[str, int] = {}
    for conversation, key in zip(a.conversations, keys_a, strict=True):
        exact_a.setdefault(key, conversation.line)
    prompts_a: dict[str, int] = {}
    for conversation in a.conversations:
        prompts_a.setdefault(_prompt_key(conversation.turns), conversation.line)
    exact = prompt = 0
    examples: list[dict[str, Any]] = []
    for conversation, key in zip(b.conversations, keys_b, strict=True):
        in_a = exact_a.get(key)
        prompt_in_a = prompts_a.get(_prompt_key(conversation.turns))
        exact += in_a is not None
        prompt += prompt_in_a is not None
        if prompt_in_a is not None and len(examples) < MAX_EXAMPLES:
            examples.append(
                {
                    "example": _shown(conversation),
                    "line": conversation.line,
                    "first_line": prompt_in_a,
                    "exact": in_a is not None,
                }
            )
    return {"exact": exact, "prompt": prompt, "examples": examples}


def _warnings(report: dict[str, Any]) -> list[str]:
    warnings = []
    for name, dup in report["duplicates"].items():
        if dup["exact"]:
            lines = ", ".join(str(n) for n in dup["examples"][0]["lines"][:5])
            warnings.append(f"{name}: {dup['exact']} duplicate example(s), e.g. lines {lines}")
    for pair, leak in report["leakage"].items():
        a, b = pair.split("/")
        if leak["exact"]:
            warnings.append(f"leakage: {leak['exact']} {b} example(s) also occur in {a}")
        if leak["prompt"] > leak["exact"]:
            extra = leak["prompt"] - leak["exact"]
            warnings.append(
                f"leakage: {extra} more {b} example(s) share their prompt with a {a} example"
            )
    tokens = report["tokens"]
    if tokens and tokens["over_model_max_length"]:
        lines = ", ".join(str(n) for n in tokens["over_lines"])
        warnings.append(
            f"{tokens['over_model_max_length']} training example(s) are longer than the "
            f"model's {tokens['model_max_length']} tokens (e.g. lines {lines})"
        )
    return warnings


# ---------------------------------------------------------------- rendering


def render_chat_report(report: dict[str, Any]) -> RenderableType:
    """The report as rich tables and lines (print it with a ``rich.console.Console``).

    Args:
        report: A dict from ``build_chat_report`` (or the same dict read back from JSON).

    Returns:
        A renderable group.
    """
    task = report["task"]
    parts: list[RenderableType] = [
        Text(f"Task: {task['task']} ({task['reason']})", style="bold"),
        _splits_table(report),
        _examples_table(report),
    ]
    if report.get("tokens"):
        parts.append(_tokens_table(report["tokens"]))
    parts.append(_quality_table(report))
    warnings = report["warnings"]
    if warnings:
        parts.append(Text("\n".join(f"warning: {w}" for w in warnings), style="yellow"))
    else:
        parts.append(Text("No warnings.", style="green"))
    return Group(*parts)


def _splits_table(report: dict[str, Any]) -> RichTable:
    table = RichTable(title="Splits")
    for column in ("split", "examples", "format", "source"):
        table.add_column(column, justify="right" if column == "examples" else "left")
    for name, split in report["splits"].items():
        table.add_row(name, f"{split['examples']:,}", split["format"], split["source"])
    return table


def _examples_table(report: dict[str, Any]) -> RichTable:
    table = RichTable(title="Training examples")
    columns = ("examples", "turns (mean / max)", "trained turns", "weight-0 turns")
    for column in (*columns, "characters p50", "characters p99"):
        table.add_column(column, justify="right")
    turns, chars = report["turns"], report["characters"]
    table.add_row(
        f"{report['examples']:,}",
        f"{turns['mean']:g} / {turns['max']}",
        f"{report['trained_turns']:,}",
        f"{report['weight_zero_turns']:,}",
        f"{chars['p50']:g}",
        f"{chars['p99']:g}",
    )
    return table


def _tokens_table(tokens: dict[str, Any]) -> RichTable:
    title = (
        f"Tokens per example (train, {tokens['sampled']:,} of {tokens['examples']:,}, "
        f"{tokens['counted_with']})"
    )
    table = RichTable(title=title)
    for column in ("p50", "p99", "max", "tokens per epoch"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{tokens['p50']:g}",
        f"{tokens['p99']:g}",
        str(tokens["max"]),
        f"{tokens['tokens_per_epoch']:,}",
    )
    return table


def _quality_table(report: dict[str, Any]) -> RichTable:
    table = RichTable(title="Duplicates, leakage")
    for column in ("where", "exact", "same prompt"):
        table.add_column(column, justify="left" if column == "where" else "right")
    for name, dup in report["duplicates"].items():
        table.add_row(f"duplicates in {name}", str(dup["exact"]), "")
    for pair, leak in report["leakage"].items():
        a, b = pair.split("/")
        table.add_row(f"{b} examples also in {a}", str(leak["exact"]), str(leak["prompt"]))
    return table
