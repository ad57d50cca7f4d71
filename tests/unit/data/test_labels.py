"""LabelMap: sorted names, ids, single-label and multi-hot encodings, JSON round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tuneforge.data.labels import LabelMap
from tuneforge.data.tables import Table
from tuneforge.errors import InputError


def test_from_labels_sorts_and_dedupes():
    labels = LabelMap.from_labels([("neg",), ("pos",), ("neg", "mixed")])
    assert labels.names == ("mixed", "neg", "pos")
    assert len(labels) == 3 and labels.index("pos") == 2
    assert "neg" in labels and "other" not in labels
    with pytest.raises(KeyError):
        labels.index("other")


def test_from_tables_takes_tables_and_label_lists():
    table = Table("t.csv", ["a"], [("b",)], [2], "", "csv")
    assert LabelMap.from_tables(table, [("a",)], [("c",)]).names == ("a", "b", "c")


def test_encode_single():
    labels = LabelMap(("a", "b", "c"))
    ids = labels.encode_single([("c",), ("a",), ("b",)])
    assert ids.dtype == np.int64 and ids.tolist() == [2, 0, 1]


def test_encode_multi():
    multi = LabelMap(("a", "b", "c")).encode_multi([("a", "c"), ("b",)])
    assert multi.dtype == np.float32 and multi.shape == (2, 3)
    assert multi.tolist() == [[1, 0, 1], [0, 1, 0]]


def test_unknown_label_and_several_labels_in_single_label_are_input_errors():
    labels = LabelMap(("a", "b"))
    with pytest.raises(InputError) as info:
        labels.encode_multi([("a",), ("zzz",)])
    assert "'zzz'" in str(info.value) and "a, b" in info.value.problems[0].fix
    with pytest.raises(InputError, match="single-label"):
        labels.encode_single([("a", "b")])


def test_json_round_trip_keeps_order():
    labels = LabelMap(("z", "a"))
    assert labels.to_json() == ["z", "a"]
    assert LabelMap.from_json(labels.to_json()) == labels
    assert LabelMap.from_json(json.dumps(labels.to_json())) == labels


@pytest.mark.parametrize("names", [("a", "a"), ("a", "")])
def test_names_must_be_unique_non_empty_strings(names):
    with pytest.raises(ValueError):
        LabelMap(names)
