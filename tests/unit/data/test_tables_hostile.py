"""Hostile files through ``read_table``: nesting past the parser's depth, lone surrogates, and
files whose rows or decompressed size exceed the caps a server reads them with."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuneforge.data.tables import TableTooLarge, read_table
from tuneforge.errors import InputError

GOOD = json.dumps({"text": "good film", "label": "positive"})
OTHER = json.dumps({"text": "bad film", "label": "negative"})


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list:
    with pytest.raises(InputError) as caught:
        read_table(path)
    assert not isinstance(caught.value, TableTooLarge)
    return caught.value.problems


def bomb(path: Path, rows: int, chars: int = 1000) -> Path:
    """A tiny Parquet file (zstd + dictionary) whose text column decodes to rows x chars."""
    text = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * chars]))
    labels = pa.DictionaryArray.from_arrays(
        pa.array([i % 2 for i in range(rows)], pa.int32()), pa.array(["a", "b"])
    )
    pq.write_table(pa.table({"text": text, "label": labels}), path, compression="zstd")
    return path


# ---------------------------------------------------------------- nesting


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_line_nested_past_the_parser_depth_is_a_problem_on_its_line(tmp_path, depth):
    deep = '{"text": ' + "[" * depth + "]" * depth + ', "label": "negative"}'
    path = write(tmp_path / "deep.jsonl", "\n".join([GOOD, OTHER, deep, GOOD]) + "\n")
    problems = problems_of(path)
    assert [p.line for p in problems] == [3], problems
    assert "nested" in problems[0].message, problems[0]
    assert str(problems[0]).startswith(f"{path}:3:")


def test_a_chat_line_nested_too_deep_is_a_problem_on_its_line(tmp_path):
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]
    chat = json.dumps({"messages": turns})
    deep = '{"messages": ' + "[" * 5000 + "]" * 5000 + "}"
    path = write(tmp_path / "chat.jsonl", f"{chat}\n{deep}\n")
    assert [p.line for p in problems_of(path)] == [2]


# ---------------------------------------------------------------- lone surrogates


@pytest.mark.parametrize("column", ["text", "label"])
def test_a_lone_surrogate_in_a_row_is_a_problem_naming_line_and_column(tmp_path, column):
    bad = {"text": "good film", "label": "positive"}
    bad[column] = "bad \ud800 film"
    line = json.dumps(bad)  # ASCII JSON: the surrogate travels as the escape \ud800
    assert "\\ud800" in line
    path = write(tmp_path / "train.jsonl", "\n".join([GOOD, OTHER, line]) + "\n")
    problems = problems_of(path)
    assert [(p.line, p.column) for p in problems] == [(3, column)], problems
    assert "surrogate" in problems[0].message
    str(problems[0]).encode("utf-8")  # the message itself is printable


def test_a_surrogate_in_a_chat_message_is_a_problem(tmp_path):
    record = {
        "messages": [
            {"role": "user", "content": "fine \udfff"},
            {"role": "assistant", "content": "positive"},
        ]
    }
    path = write(tmp_path / "chat.jsonl", json.dumps(record) + "\n")
    assert [p.line for p in problems_of(path)] == [1]


def test_a_surrogate_pair_is_an_ordinary_character(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"text": "nice \\ud83d\\ude00", "label": "positive"}\n')
    assert read_table(path).texts == ["nice \U0001f600"]


# ---------------------------------------------------------------- caps


def test_rows_over_the_cap_are_refused_in_every_format(tmp_path):
    rows = [("good film", "positive"), ("bad film", "negative")] * 3
    csv_body = "".join(f"{t},{lab}\n" for t, lab in rows)
    tsv_body = "".join(f"{t}\t{lab}\n" for t, lab in rows)
    csv_path = write(tmp_path / "t.csv", "text,label\n" + csv_body)
    tsv_path = write(tmp_path / "t.tsv", "text\tlabel\n" + tsv_body)
    jsonl_body = "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows)
    jsonl = write(tmp_path / "t.jsonl", jsonl_body)
    parquet = tmp_path / "t.parquet"
    columns = {"text": [t for t, _ in rows], "label": [lab for _, lab in rows]}
    pq.write_table(pa.table(columns), parquet)
    for path in (csv_path, tsv_path, jsonl, parquet):
        assert len(read_table(path, max_rows=6)) == 6
        with pytest.raises(TableTooLarge) as caught:
            read_table(path, max_rows=5)
        error = caught.value
        assert (error.limit, error.cap) == ("rows", 5)
        assert error.found == 6, path
        assert "5" in str(error) and "rows" in str(error)


def test_a_text_file_over_the_byte_cap_is_refused(tmp_path):
    body = "good film,positive\nbad film,negative\n" * 50
    path = write(tmp_path / "t.csv", "text,label\n" + body)
    size = path.stat().st_size
    assert len(read_table(path, max_bytes=size)) == 100
    with pytest.raises(TableTooLarge) as caught:
        read_table(path, max_bytes=size - 1)
    assert (caught.value.limit, caught.value.cap) == ("bytes", size - 1)


def test_a_parquet_bomb_is_refused_by_its_decoded_size_not_its_file_size(tmp_path):
    path = bomb(tmp_path / "bomb.parquet", rows=20_000, chars=1000)  # 20 MB of text
    assert path.stat().st_size < 100_000
    with pytest.raises(TableTooLarge) as caught:
        read_table(path, max_bytes=10_000_000, max_rows=1_000_000)
    assert (caught.value.limit, caught.value.cap) == ("bytes", 10_000_000)
    assert caught.value.found is None or caught.value.found > 10_000_000
    # under a cap it fits, it is read as before
    table = read_table(path, max_bytes=30_000_000)
    assert len(table) == 20_000 and table.texts[0] == "x" * 1000


def test_a_parquet_list_bomb_is_refused(tmp_path):
    # one row whose label list repeats one string 2,000,000 times: RLE makes it tiny on disk
    indices = pa.array([0] * 2_000_000, pa.int32())
    values = pa.DictionaryArray.from_arrays(indices, pa.array(["a" * 50]))
    labels = pa.ListArray.from_arrays(pa.array([0, 2_000_000], pa.int32()), values)
    path = tmp_path / "lists.parquet"
    pq.write_table(pa.table({"text": ["good"], "labels": labels}), path, compression="zstd")
    with pytest.raises(TableTooLarge) as caught:
        read_table(path, multi_label=True, max_bytes=1_000_000)
    assert caught.value.limit == "bytes"


def test_without_caps_nothing_is_refused(tmp_path):
    path = bomb(tmp_path / "bomb.parquet", rows=2_000, chars=100)
    assert len(read_table(path)) == 2_000


def test_a_file_that_would_amplify_in_memory_is_refused_before_parsing(tmp_path):
    # 3 bytes of "[]," make a 56-byte list: ~20x the file in memory once parsed
    amplifier = '{"text": "good film", "label": [' + "[]," * 300_000 + "[]]}\n"
    path = write(tmp_path / "amp.jsonl", amplifier)
    with pytest.raises(TableTooLarge) as caught:
        read_table(path, max_memory=30_000_000)
    error = caught.value
    assert (error.limit, error.cap) == ("memory", 30_000_000)
    assert error.found is not None and error.found > 30_000_000
    assert "memory" in str(error)
    # a file of ordinary records as large reads under the same cap
    records = "".join(
        json.dumps({"text": f"film {i}", "label": "ab"[i % 2]}) + "\n" for i in range(25_000)
    )
    plain = write(tmp_path / "plain.jsonl", records)
    assert plain.stat().st_size >= path.stat().st_size
    assert len(read_table(plain, max_memory=30_000_000)) == 25_000
    commas = write(tmp_path / "commas.csv", "text,label\n" + "," * 900_000 + "\n")
    with pytest.raises(TableTooLarge):
        read_table(commas, max_memory=30_000_000)


def test_a_parquet_file_of_many_small_values_is_refused_by_its_memory_estimate(tmp_path):
    labels = pa.array([["ab"] * 50] * 20_000)  # 1,000,000 two-byte strings, each a Python str
    path = tmp_path / "many.parquet"
    pq.write_table(pa.table({"text": ["good film"] * 20_000, "labels": labels}), path)
    with pytest.raises(TableTooLarge) as caught:
        read_table(path, multi_label=True, max_memory=30_000_000)
    assert caught.value.limit == "memory"
    assert len(read_table(path, multi_label=True, max_memory=200_000_000)) == 20_000
