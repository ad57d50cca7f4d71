"""make_splits: given files are used, missing ones are carved stratified and seeded."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from tuneforge.data.splits import Splits, make_splits, row_hash, split_manifest
from tuneforge.data.tables import Table
from tuneforge.errors import InputError


def make_table(labels: list, source: str = "train.csv", multi_label: bool = False) -> Table:
    tuples = [tuple(lab) if isinstance(lab, list) else (lab,) for lab in labels]
    return Table(
        source=source,
        texts=[f"{source} text {i}" for i in range(len(labels))],
        labels=tuples,
        lines=[i + 2 for i in range(len(labels))],
        sha256="0" * 64,
        format="csv",
        multi_label=multi_label,
    )


def class_counts(table: Table) -> Counter:
    return Counter(label for labels in table.labels for label in labels)


TRAIN = make_table(["a"] * 50 + ["b"] * 30 + ["c"] * 20)


def test_both_carved_80_10_10_stratified():
    splits = make_splits(TRAIN)
    assert splits.carved == {"validation": True, "test": True}
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (80, 10, 10)
    for held_out in (splits.validation, splits.test):
        counts = class_counts(held_out)
        for label, n in class_counts(TRAIN).items():
            assert abs(counts[label] - n * 0.1) <= 1, (label, counts)
    assert {s.source for s in (splits.train, splits.validation, splits.test)} == {"train.csv"}


def test_every_row_lands_in_exactly_one_split_in_file_order():
    splits = make_splits(TRAIN)
    lines = [line for t in (splits.train, splits.validation, splits.test) for line in t.lines]
    assert sorted(lines) == TRAIN.lines
    for table in (splits.train, splits.validation, splits.test):
        assert table.lines == sorted(table.lines)


def test_small_classes_still_reach_every_carved_split():
    train = make_table(["big"] * 40 + ["small"] * 3)
    splits = make_splits(train)
    for table in (splits.train, splits.validation, splits.test):
        assert class_counts(table)["small"] == 1


def test_deterministic_for_a_seed_and_different_across_seeds():
    first, again = (
        split_manifest(make_splits(TRAIN, seed=7)),
        split_manifest(make_splits(TRAIN, seed=7)),
    )
    assert first == again
    other = split_manifest(make_splits(TRAIN, seed=8))
    assert other["validation"]["row_hashes"] != first["validation"]["row_hashes"]


def test_given_validation_and_test_are_used_as_they_are():
    validation, test = make_table(["a", "b"], "val.csv"), make_table(["c"], "test.csv")
    splits = make_splits(TRAIN, validation, test)
    assert splits.carved == {"validation": False, "test": False}
    assert splits.train is TRAIN and splits.validation is validation and splits.test is test


def test_only_the_missing_split_is_carved():
    test = make_table(["a", "b", "c"], "test.csv")
    splits = make_splits(TRAIN, test=test, validation_fraction=0.2)
    assert splits.carved == {"validation": True, "test": False}
    assert (len(splits.train), len(splits.validation)) == (80, 20)
    assert splits.test is test


def test_multi_label_stratifies_on_the_rarest_label():
    labels = [["common"]] * 30 + [["common", "rare"]] * 6 + [["other"]] * 10
    train = make_table(labels, multi_label=True)
    splits = make_splits(train)
    for table in (splits.validation, splits.test):
        assert {"common", "rare", "other"} <= set(class_counts(table))


def test_row_hash_and_manifest():
    expected = hashlib.sha256(b"hi\x1fa\x1eb").hexdigest()[:16]
    assert row_hash("hi", ("a", "b")) == expected
    splits = make_splits(TRAIN)
    manifest = split_manifest(splits)
    assert set(manifest) == {"train", "validation", "test"}
    assert manifest["train"]["carved"] is False and manifest["test"]["carved"] is True
    assert manifest["validation"]["rows"] == 10 and manifest["validation"]["source"] == "train.csv"
    first = splits.validation
    assert manifest["validation"]["row_hashes"][0] == row_hash(first.texts[0], first.labels[0])


def problems_of(*args, **kwargs):
    with pytest.raises(InputError) as info:
        make_splits(*args, **kwargs)
    return info.value.problems


def test_too_few_examples():
    train = make_table(["a", "b"] * 4 + ["a"])
    (problem,) = problems_of(train, make_table(["a"]), make_table(["b"]))
    assert "only 9 training example(s); at least 10" in problem.message
    assert problem.file == "train.csv" and "add labelled examples" in problem.fix


def test_class_too_small_to_stratify_is_named_with_its_count():
    train = make_table(["a"] * 20 + ["rare"] * 2)
    (problem,) = problems_of(train)
    assert "'rare' has 2 example(s); 3 are needed" in problem.message
    assert problem.line == 22 and problem.column == "label"
    assert "add examples of 'rare'" in problem.fix and "--validation/--test" in problem.fix
    # With only one split to carve, two examples are enough.
    assert make_splits(train, test=make_table(["a"], "test.csv")).carved["validation"]


def test_all_split_problems_are_reported_together():
    problems = problems_of(make_table(["a"] * 5 + ["b"]))
    assert [p.message.split(";")[0] for p in problems] == [
        "only 6 training example(s)",
        "class 'b' has 1 example(s)",
    ]


def test_labels_absent_from_train_name_the_file_label_and_first_line():
    validation = make_table(["a", "bb", "zzz", "bb"], "val.csv")
    problems = problems_of(TRAIN, validation, make_table(["c"], "test.csv"))
    assert [(p.file, p.line) for p in problems] == [("val.csv", 3), ("val.csv", 4)]
    assert "'bb' (2 record(s)) does not occur in the training data" in problems[0].message
    assert "did you mean 'b'?" in problems[0].fix and "add examples of 'bb'" in problems[0].fix


def test_bad_fraction():
    (problem,) = problems_of(TRAIN, test_fraction=1.5)
    assert "test fraction 1.5" in problem.message and "0.1" in problem.fix


def test_splits_is_a_plain_dataclass():
    splits = make_splits(TRAIN)
    assert isinstance(splits, Splits) and splits.train.format == "csv"
