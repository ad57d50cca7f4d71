"""Reference files for ``tuneforge eval`` on generative models: the accepted shapes of a
line, and every problem reported at once with its line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.errors import InputError
from tuneforge.inference.reference_files import read_references

USER = [{"role": "user", "content": "name[The Eagle], eatType[pub]"}]


def write(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_references_reference_and_completion_are_read_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "refs.jsonl",
        [
            {"mr": "name[The Eagle]", "messages": USER, "references": ["a", "b"], "id": 7},
            {"messages": USER, "reference": "c"},
            {"messages": USER, "completion": "d"},
        ],
    )
    items = read_references(path)
    assert [i.line for i in items] == [1, 2, 3]
    assert [i.references for i in items] == [["a", "b"], ["c"], ["d"]]
    assert [i.mr for i in items] == ["name[The Eagle]", None, None]
    assert items[0].messages == USER
    assert [i.line for i in read_references(path, limit=2)] == [1, 2]


def test_every_bad_line_is_reported_with_its_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path / "refs.jsonl",
        [
            {"messages": USER, "references": ["ok"]},
            {"messages": USER},
            {"messages": USER, "references": ["fine", 3]},
            {"messages": [{"role": "robot", "content": "x"}], "reference": "r"},
            {"messages": [*USER, {"role": "assistant", "content": "x"}], "references": ["r"]},
            {"messages": USER, "references": ["r"], "mr": 5},
            {"references": ["r"]},
        ],
    )
    with pytest.raises(InputError) as caught:
        read_references(path)
    problems = {(p.line, p.column): p.message for p in caught.value.problems}
    assert set(problems) == {
        (2, "references"),
        (3, "references"),
        (4, "messages[0].role"),
        (5, "messages[1].role"),
        (6, "mr"),
        (7, "messages"),
    }
    assert "reference 2 is not a non-empty string" in problems[(3, "references")]
    assert "ends with an assistant turn" in problems[(5, "messages[1].role")]


def test_a_file_of_blank_lines_or_the_wrong_extension_is_refused(tmp_path: Path) -> None:
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        read_references(str(blank))
    csv = tmp_path / "refs.csv"
    csv.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(InputError, match="extension"):
        read_references(str(csv))
