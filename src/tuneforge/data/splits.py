"""Train/validation/test splits: given files, or stratified seeded splits carved from train."""

from __future__ import annotations

import difflib
import hashlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

from tuneforge.data.tables import Table
from tuneforge.errors import InputError, Problem

SPLIT_NAMES = ("train", "validation", "test")


@dataclass
class Splits:
    """The three splits of a run.

    Attributes:
        train: The training records.
        validation: Records for model selection and early stopping.
        test: Held-out records for the final evaluation.
        carved: For "validation" and "test": whether that split was carved from train.
    """

    train: Table
    validation: Table
    test: Table
    carved: dict[str, bool]


def make_splits(
    train: Table,
    validation: Table | None = None,
    test: Table | None = None,
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    min_examples: int = 10,
) -> Splits:
    """Use the given validation/test tables; carve the missing ones from train.

    Carving is stratified and seeded: each class (for multi-label records, the record's
    rarest label) is shuffled on its own and gives ``round(n * fraction)`` records, at least
    one, to each carved split while keeping at least one in train. So every class appears
    in every carved split, and the same seed always gives the same splits. Records keep
    their file order inside each split.

    Args:
        train: The training table.
        validation: The validation table, or None to carve it from train.
        test: The test table, or None to carve it from train.
        validation_fraction: Fraction of each class carved for validation.
        test_fraction: Fraction of each class carved for test.
        seed: Seed of the shuffles.
        min_examples: The fewest training records accepted.

    Returns:
        The splits, with ``carved`` telling which were carved from train.

    Raises:
        InputError: Too few examples, a class too small to stratify, labels in
            validation/test that train lacks, or bad fractions; all problems at once.
    """
    fractions = {"validation": validation_fraction, "test": test_fraction}
    given = {"validation": validation, "test": test}
    carve = [name for name in ("validation", "test") if given[name] is None]
    problems = _fraction_problems({n: fractions[n] for n in carve})
    problems += _size_problems(train, len(carve), min_examples)
    problems += [p for name, table in given.items() if table for p in _unseen(train, table, name)]
    if problems:
        raise InputError(f"{len(problems)} problem(s) with the data splits", problems)
    parts = _carve(train, [fractions[n] for n in carve], seed) if carve else [train]
    tables = dict(zip(["train", *carve], parts, strict=True))
    return Splits(
        train=tables["train"],
        validation=validation if validation is not None else tables["validation"],
        test=test if test is not None else tables["test"],
        carved={name: name in carve for name in ("validation", "test")},
    )


def row_hash(text: str, labels: tuple[str, ...]) -> str:
    """A record's content hash: 16 hex chars of sha256(text, 0x1f, labels joined by 0x1e)."""
    payload = text + "\x1f" + "\x1e".join(labels)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def split_manifest(splits: Splits) -> dict:
    """Which records went where, by content hash (JSON-serialisable).

    Returns:
        ``{split: {"source", "rows", "carved", "row_hashes"}}`` for train, validation, test.
    """
    manifest = {}
    for name in SPLIT_NAMES:
        table: Table = getattr(splits, name)
        manifest[name] = {
            "source": table.source,
            "rows": len(table),
            "carved": bool(splits.carved.get(name, False)),
            "row_hashes": [
                row_hash(t, lab) for t, lab in zip(table.texts, table.labels, strict=True)
            ],
        }
    return manifest


# ---------------------------------------------------------------- checks


def _fraction_problems(fractions: dict[str, float]) -> list[Problem]:
    problems = [
        Problem(
            "", f"{name} fraction {f} is not between 0 and 1", f"pass a {name} fraction like 0.1"
        )
        for name, f in fractions.items()
        if not 0 < f < 1
    ]
    if not problems and sum(fractions.values()) >= 1:
        problems.append(
            Problem("", "the carved fractions leave nothing to train on", "use smaller fractions")
        )
    return problems


def _size_problems(train: Table, n_carved: int, min_examples: int) -> list[Problem]:
    """Too few records in total, or (when carving) a class with too few to stratify."""
    problems = []
    if len(train) < min_examples:
        problems.append(
            Problem(
                train.source,
                f"only {len(train)} training example(s); at least {min_examples} are needed",
                "add labelled examples to the training file",
            )
        )
    if not n_carved:
        return problems
    needed = 1 + n_carved
    if train.multi_label:
        counts = Counter(label for labels in train.labels for label in labels)
    else:
        counts = Counter(labels[0] for labels in train.labels)
    for label, count in sorted(counts.items()):
        if count < needed:
            problems.append(_small_class_problem(train, label, count, needed, n_carved))
    return problems


def _small_class_problem(train: Table, label: str, count: int, needed: int, n_carved: int):
    splits = "validation and test splits" if n_carved == 2 else "a held-out split"
    return Problem(
        train.source,
        f"class {label!r} has {count} example(s); {needed} are needed to carve {splits} from train "
        "with the class in each",
        f"add examples of {label!r}, or pass --validation/--test files so nothing is carved",
        line=train.lines[_first_index(train, label)],
        column="label",
    )


def _first_index(train: Table, label: str) -> int:
    """Index of the first record of ``train`` that carries ``label``."""
    return next(i for i, labels in enumerate(train.labels) if label in labels)


def _unseen(train: Table, other: Table, name: str) -> list[Problem]:
    """One problem per label of ``other`` that train lacks, at its first line."""
    known = {label for labels in train.labels for label in labels}
    first: dict[str, int] = {}
    counts: Counter[str] = Counter()
    for line, labels in zip(other.lines, other.labels, strict=True):
        for label in labels:
            if label not in known:
                first.setdefault(label, line)
                counts[label] += 1
    return [
        Problem(
            other.source,
            f"{name} label {label!r} ({counts[label]} record(s)) does not occur in the training "
            f"data ({train.source})",
            _unseen_fix(label, known),
            line=first[label],
            column="label",
        )
        for label in first
    ]


def _unseen_fix(label: str, known: set[str]) -> str:
    close = difflib.get_close_matches(label, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"fix the label's spelling{hint}, or add examples of {label!r} to the training file"


# ---------------------------------------------------------------- carving


def _strata(table: Table) -> list[str]:
    """The label each record is stratified on: its label, or its rarest (multi-label)."""
    if not table.multi_label:
        return [labels[0] for labels in table.labels]
    freq = Counter(label for labels in table.labels for label in labels)
    return [min(labels, key=lambda lab: (freq[lab], lab)) for labels in table.labels]


def _carve(train: Table, fractions: list[float], seed: int) -> list[Table]:
    """Split train into [rest, carved_1, ...], stratified by class, deterministic in seed."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(_strata(train)):
        by_class.setdefault(label, []).append(i)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label in sorted(by_class):
        shuffled = rng.permutation(np.asarray(by_class[label])).tolist()
        sizes = _class_sizes(len(shuffled), fractions)
        start = 0
        for part, size in zip(parts[1:], sizes, strict=True):
            part.extend(shuffled[start : start + size])
            start += size
        parts[0].extend(shuffled[start:])
    return [train.subset(sorted(part)) for part in parts]


def _class_sizes(n: int, fractions: list[float]) -> list[int]:
    """How many of a class's ``n`` records each carved split gets.

    Each gets ``round(n * fraction)``, at least 1, while at least one stays in train
    (shrinking the largest share first). Classes too small for that (possible only for
    multi-label strata) give what they can, train first.
    """
    if n < 1 + len(fractions):
        return [1 if n > 1 + i else 0 for i in range(len(fractions))]
    sizes = [max(1, round(n * f)) for f in fractions]
    while sum(sizes) > n - 1:
        biggest = max(range(len(sizes)), key=lambda i: sizes[i])
        sizes[biggest] -= 1
    return sizes
