"""The data report's quality checks where training runs: duplicates, leakage across splits
and texts with conflicting labels, as structured problems with counts and an example; and
the checks every training file must pass (``table_problems``): at least two classes, and
texts a tokenizer can take.

Only the cheap parts of ``tuneforge data check`` run here (no tokenizer work).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.data.report import build_data_report
from tuneforge.data.splits import Splits
from tuneforge.data.tables import Table
from tuneforge.data.task import choose_task, generative_file_fix
from tuneforge.errors import InputError, Problem


class DataCheckError(InputError):
    """The data checks found problems and ``quality_checks`` is ``error``."""

    job_error_code = "invalid_training_file"


def data_problems(splits: Splits) -> list[dict[str, Any]]:
    """Duplicates, leakage and conflicting labels in ``splits``.

    Returns:
        One dict per problem: ``code`` (``duplicates``, ``leakage``, ``conflicting_labels``),
        ``message`` (with the count), ``count``, ``split`` or ``splits``, and ``example``
        (one text with its line numbers), ready to be a ``warning`` event.
    """
    report = build_data_report(splits)
    problems: list[dict[str, Any]] = []
    for name, dup in report["duplicates"].items():
        if dup["normalised"]:
            example = (dup["exact_examples"] or dup["normalised_examples"] or [None])[0]
            extra = dup["normalised"] - dup["exact"]
            detail = f" ({extra} of them after normalisation)" if extra and dup["exact"] else ""
            problems.append(
                {
                    "code": "duplicates",
                    "message": f"{name}: {dup['normalised']} duplicate row(s){detail}",
                    "count": dup["normalised"],
                    "split": name,
                    "example": example,
                }
            )
    for pair, leak in report["leakage"].items():
        if leak["normalised"]:
            a, b = pair.split("/")
            example = (leak["exact_examples"] or leak["normalised_examples"] or [None])[0]
            problems.append(
                {
                    "code": "leakage",
                    "message": f"leakage: {leak['normalised']} {b} row(s) also occur in {a}",
                    "count": leak["normalised"],
                    "splits": [a, b],
                    "example": example,
                }
            )
    conflicts = report["conflicts"]
    if conflicts["count"]:
        problems.append(
            {
                "code": "conflicting_labels",
                "message": f"{conflicts['count']} text(s) carry conflicting labels",
                "count": conflicts["count"],
                "example": conflicts["examples"][0] if conflicts["examples"] else None,
            }
        )
    return problems


def describe_example(example: dict[str, Any] | None) -> str:
    """A short one-line rendering of a problem's example (text and where it occurs)."""
    if not example:
        return ""
    if "occurrences" in example:  # conflicting labels
        where = ", ".join(
            f"{o['split']} line {o['line']}: {'|'.join(o['labels'])}"
            for o in example["occurrences"][:3]
        )
        return f"{example['text']!r} ({where})"
    if "text" in example:  # duplicates, exact
        return f"{example['text']!r} (lines {_lines(example['lines'])})"
    if "texts" in example:  # duplicates, normalised
        texts = " / ".join(repr(t) for t in example["texts"][:2])
        return f"{texts} (lines {_lines(example['lines'])})"
    parts = [f"{split} line {_lines(v['lines'])}" for split, v in example.items()]
    first = next(iter(example.values()))
    return f"{first['text']!r} ({', '.join(parts)})"


def _lines(lines: list[Any]) -> str:
    shown = ", ".join(str(n) for n in lines[:5])
    return shown + (", …" if len(lines) > 5 else "")


def check_error(problems: list[dict[str, Any]], source: str) -> DataCheckError:
    """The error raised with ``quality_checks="error"``."""
    return DataCheckError(
        f"{len(problems)} data quality problem(s); nothing was trained",
        [
            Problem(
                file=Path(source).name,
                message=f"{p['message']}; e.g. {describe_example(p['example'])}",
                fix="remove or relabel those rows, or set data.quality_checks to 'warn'",
            )
            for p in problems
        ],
    )


MIN_CLASSES = 2
MAX_ENCODING_PROBLEMS = 20


def table_problems(table: Table, *, training: bool) -> list[Problem]:
    """What makes a file unusable for training, found before any model work.

    Args:
        table: One file's rows.
        training: The file is the training file (it must hold at least two classes).

    Returns:
        One problem per row whose text or labels cannot be encoded as UTF-8 (a lone UTF-16
        surrogate such as ``\\ud800`` in JSON; the tokenizer and the bundle's files take
        only UTF-8), at most ``MAX_ENCODING_PROBLEMS``; and, for the training file, one
        problem when it is a chat file whose replies look like free text (``choose_task``
        says generate), or else when it holds fewer than two classes.
    """
    problems = [
        Problem(
            file=table.source,
            line=line,
            message=f"the {what} holds a character that is not valid Unicode text (a lone "
            "surrogate such as \\ud800)",
            fix="remove or replace that character (the file must be valid UTF-8 text)",
        )
        for line, what in _unencodable(table)
    ][:MAX_ENCODING_PROBLEMS]
    if training and table.format == "chat":
        choice = choose_task(table)
        if choice.task == "generate":
            problems.append(
                Problem(
                    file=table.source,
                    message="the file looks like a generation set, not a classification set: "
                    + choice.reason,
                    fix=generative_file_fix(),
                )
            )
            return problems
    if training:
        classes = sorted({label for labels in table.labels for label in labels})
        if len(classes) < MIN_CLASSES:
            found = f"only {classes[0]!r}" if classes else "no labels"
            problems.append(
                Problem(
                    file=table.source,
                    message=f"a classifier needs at least {MIN_CLASSES} classes; the training "
                    f"data has {found}",
                    fix="add rows of at least one other class",
                )
            )
    return problems


def _unencodable(table: Table) -> list[tuple[int, str]]:
    """(line, ``text`` or ``label``) of the rows that UTF-8 cannot encode."""
    if _encodes("\n".join(table.texts)) and all(_encodes("".join(ls)) for ls in table.labels):
        return []  # the common case: one pass over the whole file
    found = []
    for text, labels, line in zip(table.texts, table.labels, table.lines, strict=True):
        if not _encodes(text):
            found.append((line, "text"))
        elif not all(_encodes(label) for label in labels):
            found.append((line, "label"))
        if len(found) >= MAX_ENCODING_PROBLEMS:
            break
    return found


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
