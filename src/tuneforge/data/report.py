"""The pre-flight data report of ``tuneforge data check``.

Before any training: class counts per split, imbalance, exact and normalised duplicates,
leakage across splits, texts with conflicting labels, token lengths under the model's
tokenizer with a recommended ``max_length``, and an estimate of the time per epoch.
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Group, RenderableType
from rich.table import Table as RichTable
from rich.text import Text

from tuneforge.data.splits import SPLIT_NAMES, Splits
from tuneforge.data.tables import Table

MAX_EXAMPLES = 5
"""Examples listed per finding."""

TOKEN_SAMPLE = 20_000
"""Most training texts tokenised to measure lengths."""

IMBALANCE_WARNING = 10.0
"""Largest/smallest class ratio above which the report warns."""

_PAIRS = (("train", "validation"), ("train", "test"), ("validation", "test"))
_CLIP = 200


def normalise_text(text: str) -> str:
    """The form duplicates are compared in: NFKC, lowercased, no punctuation, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_punctuation_table())
    return " ".join(text.split())


@functools.cache
def _punctuation_table() -> dict[int, None]:
    """A ``str.translate`` table deleting every Unicode punctuation character (built once)."""
    return {
        c: None for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("P")
    }


def build_data_report(
    splits: Splits,
    tokenizer=None,
    *,
    max_length_cap: int = 512,
    throughput_tokens_per_s: float | None = None,
) -> dict:
    """Measure the splits before training.

    Duplicate counts are rows minus distinct texts in a split (so a text seen three times
    counts 2); the normalised count includes the exact one. Leakage counts the rows of the
    second split of a pair whose text occurs in the first. Conflicts count normalised texts
    that carry different labels anywhere in the data. Normalised examples show only the
    matches that exact comparison misses.

    Args:
        splits: The splits to measure.
        tokenizer: A Hugging Face fast tokenizer; token lengths are skipped when None.
        max_length_cap: The largest ``max_length`` to recommend (also capped at the
            tokenizer's ``model_max_length``).
        throughput_tokens_per_s: Training speed, for the time estimate (skipped when None).

    Returns:
        A JSON-serialisable dict: ``splits``, ``classes``, ``imbalance``, ``duplicates``,
        ``leakage``, ``conflicts``, ``token_lengths`` (or None), ``estimated_training``
        (or None) and ``warnings`` (a list of strings).
    """
    tables = {name: getattr(splits, name) for name in SPLIT_NAMES}
    keys = {name: [normalise_text(t) for t in table.texts] for name, table in tables.items()}
    report: dict[str, Any] = {
        "splits": {
            name: {"rows": len(t), "source": t.source, "carved": bool(splits.carved.get(name))}
            for name, t in tables.items()
        },
        "classes": _class_counts(tables),
        "imbalance": _imbalance(tables["train"]),
        "duplicates": {name: _duplicates(t, keys[name]) for name, t in tables.items()},
        "leakage": {f"{a}/{b}": _leakage(a, b, tables, keys) for a, b in _PAIRS},
        "conflicts": _conflicts(tables, keys),
        "token_lengths": None,
        "estimated_training": None,
    }
    if tokenizer is not None:
        lengths = _token_lengths(tokenizer, tables["train"].texts, max_length_cap)
        report["token_lengths"] = lengths
        if throughput_tokens_per_s:
            report["estimated_training"] = _estimate(lengths, throughput_tokens_per_s)
    report["warnings"] = _warnings(report)
    return report


# ---------------------------------------------------------------- classes


def _class_counts(tables: dict[str, Table]) -> dict[str, dict[str, int]]:
    counts = {name: Counter(lab for labs in t.labels for lab in labs) for name, t in tables.items()}
    labels = sorted(set().union(*counts.values()))
    return {label: {name: counts[name][label] for name in tables} for label in labels}


def _imbalance(train: Table) -> dict[str, Any] | None:
    counts = Counter(label for labels in train.labels for label in labels)
    if not counts:
        return None
    (large, n_large), (small, n_small) = (
        max(counts.items(), key=_by_count),
        min(counts.items(), key=_by_count),
    )
    return {
        "ratio": round(n_large / n_small, 2),
        "largest": {"label": large, "count": n_large},
        "smallest": {"label": small, "count": n_small},
    }


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return item[1], item[0]


# ---------------------------------------------------------------- duplicates, leakage


def _groups(keys: Sequence[str]) -> dict[str, list[int]]:
    """Key -> indices of the rows with that key, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def _clip(text: str) -> str:
    return text if len(text) <= _CLIP else text[: _CLIP - 1] + "…"


def _duplicates(table: Table, keys: list[str]) -> dict[str, Any]:
    exact, normal = _groups(table.texts), _groups(keys)
    exact_examples = [
        {"text": _clip(table.texts[rows[0]]), "lines": [table.lines[i] for i in rows]}
        for rows in exact.values()
        if len(rows) > 1
    ]
    normal_examples = [
        {
            "texts": [_clip(t) for t in dict.fromkeys(table.texts[i] for i in rows)],
            "lines": [table.lines[i] for i in rows],
        }
        for rows in normal.values()
        if len({table.texts[i] for i in rows}) > 1
    ]
    return {
        "exact": len(table) - len(exact),
        "normalised": len(table) - len(normal),
        "exact_examples": exact_examples[:MAX_EXAMPLES],
        "normalised_examples": normal_examples[:MAX_EXAMPLES],
    }


def _leakage(
    a: str, b: str, tables: dict[str, Table], keys: dict[str, list[str]]
) -> dict[str, Any]:
    """Rows of split ``b`` whose text (exact or normalised) occurs in split ``a``."""
    ta, tb = tables[a], tables[b]
    exact_a, normal_a = _groups(ta.texts), _groups(keys[a])
    exact_rows = [j for j, text in enumerate(tb.texts) if text in exact_a]
    normal_rows = [j for j, key in enumerate(keys[b]) if key in normal_a]
    exact_examples: dict[str, dict] = {}
    normal_examples: dict[str, dict] = {}
    for j in exact_rows:
        if len(exact_examples) < MAX_EXAMPLES:
            rows = exact_a[tb.texts[j]]
            exact_examples.setdefault(tb.texts[j], _pair_example(a, b, ta, tb, rows, j))
    for j in normal_rows:
        if tb.texts[j] not in exact_a and len(normal_examples) < MAX_EXAMPLES:
            rows = normal_a[keys[b][j]]
            normal_examples.setdefault(keys[b][j], _pair_example(a, b, ta, tb, rows, j))
    return {
        "exact": len(exact_rows),
        "normalised": len(normal_rows),
        "exact_examples": list(exact_examples.values()),
        "normalised_examples": list(normal_examples.values()),
    }


def _pair_example(a: str, b: str, ta: Table, tb: Table, rows: list[int], j: int) -> dict:
    return {
        a: {"text": _clip(ta.texts[rows[0]]), "lines": [ta.lines[i] for i in rows]},
        b: {"text": _clip(tb.texts[j]), "lines": [tb.lines[j]]},
    }


def _conflicts(tables: dict[str, Table], keys: dict[str, list[str]]) -> dict[str, Any]:
    """Normalised texts that carry different labels, across all splits."""
    seen: dict[str, list[tuple[str, int]]] = {}
    for name in tables:
        for i, key in enumerate(keys[name]):
            seen.setdefault(key, []).append((name, i))
    conflicting = [
        rows for rows in seen.values() if len({tables[n].labels[i] for n, i in rows}) > 1
    ]
    examples = [
        {
            "text": _clip(tables[rows[0][0]].texts[rows[0][1]]),
            "occurrences": [
                {"split": n, "line": tables[n].lines[i], "labels": list(tables[n].labels[i])}
                for n, i in rows[:10]
            ],
        }
        for rows in conflicting[:MAX_EXAMPLES]
    ]
    return {"count": len(conflicting), "examples": examples}


# ---------------------------------------------------------------- token lengths


def recommended_max_length(lengths: np.ndarray, cap: int) -> int:
    """The 99th percentile of ``lengths`` rounded up to a multiple of 8, in [16, cap]."""
    p99 = int(np.ceil(np.percentile(lengths, 99))) if len(lengths) else 16
    return int(min(cap, max(16, -(-p99 // 8) * 8)))


def _token_lengths(tokenizer, texts: list[str], cap: int) -> dict[str, Any]:
    """Percentiles of token counts (special tokens included) over a seeded sample of texts."""
    sample = texts
    if len(texts) > TOKEN_SAMPLE:
        picked = np.random.default_rng(0).choice(len(texts), TOKEN_SAMPLE, replace=False)
        sample = [texts[i] for i in sorted(picked)]
    lengths = _count_tokens(tokenizer, sample)
    model_limit = getattr(tokenizer, "model_max_length", None) or cap
    cap = min(cap, model_limit) if model_limit < 100_000 else cap
    recommended = recommended_max_length(lengths, cap)
    p50, p90, p95, p99 = (float(v) for v in np.percentile(lengths, [50, 90, 95, 99]))
    truncated = np.minimum(lengths, recommended)
    return {
        "sampled": len(sample),
        "rows": len(texts),
        "mean": round(float(lengths.mean()), 1),
        "p50": round(p50, 1),
        "p90": round(p90, 1),
        "p95": round(p95, 1),
        "p99": round(p99, 1),
        "max": int(lengths.max()),
        "recommended_max_length": recommended,
        "fraction_over_recommended": round(float(np.mean(lengths > recommended)), 4),
        "tokens_per_epoch": round(float(truncated.sum()) * len(texts) / len(sample)),
    }


def _count_tokens(tokenizer, texts: list[str], chunk: int = 2048) -> np.ndarray:
    """Token counts, tokenising in chunks without padding (fast tokenizers batch in Rust)."""
    counts: list[int] = []
    for start in range(0, len(texts), chunk):
        encoded = tokenizer(
            texts[start : start + chunk],
            add_special_tokens=True,
            truncation=False,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        counts.extend(len(ids) for ids in encoded["input_ids"])
    return np.asarray(counts, dtype=np.int64)


def _estimate(lengths: dict[str, Any], tokens_per_s: float) -> dict[str, Any]:
    tokens = lengths["tokens_per_epoch"]
    return {
        "tokens_per_epoch": tokens,
        "throughput_tokens_per_s": round(float(tokens_per_s), 1),
        "seconds_per_epoch": round(tokens / float(tokens_per_s), 1),
    }


# ---------------------------------------------------------------- warnings


def _warnings(report: dict[str, Any]) -> list[str]:
    warnings = []
    for name, dup in report["duplicates"].items():
        if dup["exact"]:
            warnings.append(f"{name}: {dup['exact']} exact duplicate row(s)")
        if dup["normalised"] > dup["exact"]:
            extra = dup["normalised"] - dup["exact"]
            warnings.append(f"{name}: {extra} more duplicate row(s) after normalisation")
    for pair, leak in report["leakage"].items():
        a, b = pair.split("/")
        if leak["exact"]:
            warnings.append(f"leakage: {leak['exact']} {b} row(s) also occur in {a}")
        if leak["normalised"] > leak["exact"]:
            extra = leak["normalised"] - leak["exact"]
            warnings.append(f"leakage: {extra} more {b} row(s) match {a} after normalisation")
    if report["conflicts"]["count"]:
        warnings.append(f"{report['conflicts']['count']} text(s) carry conflicting labels")
    imbalance = report["imbalance"]
    if imbalance and imbalance["ratio"] > IMBALANCE_WARNING:
        warnings.append(
            f"strong class imbalance: {imbalance['largest']['label']!r} has "
            f"{imbalance['ratio']:g}x the examples of {imbalance['smallest']['label']!r}"
        )
    lengths = report["token_lengths"]
    if lengths and lengths["fraction_over_recommended"] > 0:
        warnings.append(
            f"{lengths['fraction_over_recommended']:.1%} of training texts are longer than "
            f"{lengths['recommended_max_length']} tokens and will be truncated"
        )
    return warnings


# ---------------------------------------------------------------- rendering


def render_data_report(report: dict) -> RenderableType:
    """The report as rich tables (print it with a ``rich.console.Console``).

    Args:
        report: A dict from ``build_data_report`` (or the same dict read back from JSON).

    Returns:
        A renderable group of tables and lines.
    """
    parts: list[RenderableType] = [_splits_table(report), _classes_table(report)]
    parts.append(_quality_table(report))
    if report.get("token_lengths"):
        parts.append(_lengths_table(report["token_lengths"]))
    if report.get("estimated_training"):
        est = report["estimated_training"]
        parts.append(
            Text(
                f"Estimated training time: ~{format_duration(est['seconds_per_epoch'])} per epoch "
                f"({est['tokens_per_epoch']:,} tokens at {est['throughput_tokens_per_s']:,.0f}"
                " tokens/s, a rough figure scaled from a reference CPU; `tuneforge train` "
                "measures this machine before its first step)"
            )
        )
    parts.append(_warnings_text(report["warnings"]))
    return Group(*parts)


def _splits_table(report: dict) -> RichTable:
    table = RichTable(title="Splits")
    for column in ("split", "rows", "source"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for name, split in report["splits"].items():
        source = split["source"] + (" (carved from train)" if split["carved"] else "")
        table.add_row(name, f"{split['rows']:,}", source)
    return table


def _classes_table(report: dict) -> RichTable:
    imbalance = report.get("imbalance")
    caption = f"largest/smallest class in train: {imbalance['ratio']:g}x" if imbalance else None
    table = RichTable(title="Examples per class", caption=caption)
    table.add_column("label")
    for name in SPLIT_NAMES:
        table.add_column(name, justify="right")
    rows = sorted(report["classes"].items(), key=lambda kv: (-kv[1]["train"], kv[0]))
    for label, counts in rows:
        table.add_row(label, *(f"{counts.get(name, 0):,}" for name in SPLIT_NAMES))
    return table


def _quality_table(report: dict) -> RichTable:
    table = RichTable(title="Duplicates, leakage, conflicts")
    for column in ("where", "exact", "normalised"):
        table.add_column(column, justify="left" if column == "where" else "right")
    for name, dup in report["duplicates"].items():
        table.add_row(f"duplicates in {name}", str(dup["exact"]), str(dup["normalised"]))
    for pair, leak in report["leakage"].items():
        a, b = pair.split("/")
        table.add_row(f"{b} rows also in {a}", str(leak["exact"]), str(leak["normalised"]))
    table.add_row("texts with conflicting labels", "", str(report["conflicts"]["count"]))
    return table


def _lengths_table(lengths: dict) -> RichTable:
    title = f"Token lengths (train, {lengths['sampled']:,} of {lengths['rows']:,} texts)"
    table = RichTable(title=title)
    keys = ("p50", "p90", "p95", "p99", "max")
    for key in (*keys, "recommended max_length", "over it"):
        table.add_column(key, justify="right")
    cells = [f"{lengths[k]:g}" for k in keys]
    over = f"{lengths['fraction_over_recommended']:.1%}"
    table.add_row(*cells, str(lengths["recommended_max_length"]), over)
    return table


def _warnings_text(warnings: list[str]) -> Text:
    if not warnings:
        return Text("No warnings.", style="green")
    return Text("\n".join(f"warning: {w}" for w in warnings), style="yellow")


def format_duration(seconds: float) -> str:
    """``42 s``, ``7 min`` or ``1.5 h``: a time estimate as people read it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
