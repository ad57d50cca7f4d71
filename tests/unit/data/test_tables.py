"""read_table: every format round-trips, and every bad input is one InputError with a fix."""

from __future__ import annotations

import hashlib
import json
import shutil
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuneforge.data.tables import read_table, read_texts
from tuneforge.errors import InputError, Problem

# The banking77 sample shipped in examples/ (real data, always in the repository).
BANKING77 = Path(__file__).resolve().parents[3] / "examples/banking77/train.csv"


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def jsonl(path: Path, records: list) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


def problems_of(path: Path, **options) -> list[Problem]:
    with pytest.raises(InputError) as info:
        read_table(path, **options)
    assert str(path) in str(info.value)
    return info.value.problems


def only_problem(path: Path, **options) -> Problem:
    problems = problems_of(path, **options)
    assert len(problems) == 1, problems
    return problems[0]


# ---------------------------------------------------------------- formats round-trip


def test_csv_keeps_quoted_commas_and_counts_physical_lines(tmp_path):
    content = (
        'text,label\n"hello, world",greet\n"two\nlines",multi\n plain , x \n\n"a ""quote""",y\n'
    )
    path = write(tmp_path / "train.csv", content)
    table = read_table(path)
    assert table.texts == ["hello, world", "two\nlines", "plain", 'a "quote"']
    assert table.labels == [("greet",), ("multi",), ("x",), ("y",)]
    assert table.lines == [2, 3, 5, 7]
    assert table.format == "csv"
    assert table.source == str(path)
    assert table.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not table.multi_label


def test_csv_with_bom_and_crlf(tmp_path):
    path = write(tmp_path / "t.csv", b'\xef\xbb\xbftext,label\r\n"a\r\nb",x\r\nc,y\r\n')
    table = read_table(path)
    assert table.texts == ["a\r\nb", "c"]
    assert table.lines == [2, 4]


def test_tsv(tmp_path):
    path = write(tmp_path / "t.tsv", "label\ttext\npos\tgood, really\nneg\tbad\n")
    table = read_table(path)
    assert (table.texts, table.labels, table.lines) == (
        ["good, really", "bad"],
        [("pos",), ("neg",)],
        [2, 3],
    )
    assert table.format == "tsv"


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_jsonl_with_number_labels_and_blank_lines(tmp_path, suffix):
    content = '{"text": " a ", "label": "x"}\n\n{"text": "b", "label": 3, "extra": 1}\n'
    table = read_table(write(tmp_path / f"t{suffix}", content))
    assert table.texts == ["a", "b"]
    assert table.labels == [("x",), ("3",)]
    assert table.lines == [1, 3]
    assert table.format == "jsonl"


def test_chat_jsonl_with_system_and_list_content(tmp_path):
    records = [
        {
            "messages": [
                {"role": "system", "content": "Classify the ticket."},
                {"role": "user", "content": "My card is lost"},
                {"role": "user", "content": [{"type": "text", "text": "please help"}]},
                {"role": "assistant", "content": [{"type": "text", "text": " lost_card "}]},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "greet"},
            ]
        },
    ]
    table = read_table(jsonl(tmp_path / "chat.jsonl", records))
    assert table.format == "chat"
    assert table.texts == ["My card is lost\nplease help", "hi"]
    assert table.labels == [("lost_card",), ("greet",)]
    assert table.lines == [1, 2]


def test_parquet_with_int_and_bool_labels(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"text": ["a", "b", "c"], "label": [1, 0, 1], "flag": [True] * 3}), path
    )
    table = read_table(path)
    assert table.labels == [("1",), ("0",), ("1",)]
    assert table.lines == [1, 2, 3]
    assert table.format == "parquet"
    assert read_table(path, label_column="flag").labels[0] == ("True",)


def test_parquet_list_labels_for_multi_label(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "labels": [["x", "y"], ["y"]]}), path)
    assert read_table(path, multi_label=True).labels == [("x", "y"), ("y",)]
    problems = problems_of(path)
    assert [p.line for p in problems] == [1, 2] and "row 1" in problems[0].message
    assert "--multi-label" in problems[0].fix


# ---------------------------------------------------------------- column mapping


def test_columns_detected_case_insensitively_from_alternatives(tmp_path):
    path = write(tmp_path / "t.csv", "id,Sentence,Intent\n1,hello,greet\n")
    table = read_table(path)
    assert (table.texts, table.labels) == (["hello"], [("greet",)])


def test_explicit_columns(tmp_path):
    path = write(tmp_path / "t.csv", "body,tag,text\nhello,greet,ignored\n")
    table = read_table(path, text_column="body", label_column="tag")
    assert (table.texts, table.labels) == (["hello"], [("greet",)])


def test_missing_columns_list_the_present_ones_and_the_option(tmp_path):
    problems = problems_of(write(tmp_path / "t.csv", "body,tag\nhello,greet\n"))
    assert [p.line for p in problems] == [1, 1]
    assert "'body', 'tag'" in problems[0].message and "text column" in problems[0].message
    assert "--text-column" in problems[0].fix
    assert "--label-column" in problems[1].fix


def test_named_column_missing(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": "b"}\n')
    problem = only_problem(path, label_column="intent")
    assert "'intent' not found" in problem.message and "'text', 'label'" in problem.message
    assert "--label-column" in problem.fix


def test_tab_separated_file_named_csv_gets_a_hint(tmp_path):
    problems = problems_of(write(tmp_path / "t.csv", "text\tlabel\na\tb\n"))
    assert ".tsv" in problems[0].fix


# ---------------------------------------------------------------- multi-label


def test_multi_label_csv_splits_strips_and_dedupes(tmp_path):
    path = write(tmp_path / "t.csv", "text,labels\na, b | a ||c \nb,x\n")
    table = read_table(path, multi_label=True)
    assert table.labels == [("b", "a", "c"), ("x",)]
    assert table.multi_label
    other = write(tmp_path / "u.csv", "text,label\na,b;c\n")
    assert read_table(other, multi_label=True, label_separator=";").labels == [("b", "c")]
    assert read_table(other).labels == [("b;c",)]


def test_multi_label_jsonl_lists(tmp_path):
    path = jsonl(tmp_path / "t.jsonl", [{"text": "a", "labels": ["x", " y ", "x"]}])
    assert read_table(path, multi_label=True).labels == [("x", "y")]


def test_list_label_without_multi_label_names_the_option(tmp_path):
    path = jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": ["x"]}])
    problem = only_problem(path)
    assert (problem.line, problem.column) == (2, "label")
    assert "--multi-label" in problem.fix


# ---------------------------------------------------------------- file-level problems


def test_missing_file_suggests_a_close_name(tmp_path):
    write(tmp_path / "train.csv", "text,label\na,b\n")
    problem = only_problem(tmp_path / "trian.csv")
    assert "not found" in problem.message
    assert "check the path" in problem.fix and "train.csv" in problem.fix


def test_directory(tmp_path):
    write(tmp_path / "train.csv", "text,label\na,b\n")
    problem = only_problem(tmp_path)
    assert "directory" in problem.message and "train.csv" in problem.fix


def test_unsupported_extension(tmp_path):
    problem = only_problem(write(tmp_path / "t.xlsx", b"PK"))
    assert "'.xlsx'" in problem.message and ".csv" in problem.message
    assert ".parquet" in problem.message and "convert" in problem.fix


@pytest.mark.parametrize("content", [b"", b"  \n\n\t", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_empty_file(tmp_path, content, suffix):
    problem = only_problem(write(tmp_path / f"t{suffix}", content))
    assert "empty" in problem.message and "write" in problem.fix


def test_header_only(tmp_path):
    problem = only_problem(write(tmp_path / "t.csv", "text,label\n\n"))
    assert problem.line == 1 and "no records" in problem.message
    assert "add" in problem.fix


def test_parquet_without_rows(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}), path
    )
    assert "no rows" in only_problem(path).message


# ---------------------------------------------------------------- record-level problems


def test_empty_text_and_label_are_reported_per_line(tmp_path):
    path = write(tmp_path / "t.csv", "Sentence,label\n  ,x\nok,\nfine,y\n")
    problems = problems_of(path)
    assert [(p.line, p.column, p.message) for p in problems] == [
        (2, "Sentence", "empty text"),
        (3, "label", "empty label"),
    ]
    assert "delete" in problems[0].fix and "label the record" in problems[1].fix


def test_empty_text_in_parquet_says_row(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a", None], "label": ["x", "y"]}), path)
    problem = only_problem(path)
    assert (problem.line, problem.column) == (2, "text") and "row 2" in problem.message


def test_ragged_rows(tmp_path):
    path = write(tmp_path / "t.csv", "text,label\na,b\nc,d,e\nf\n")
    problems = problems_of(path)
    assert [p.line for p in problems] == [3, 4]
    assert "3 field(s), the header has 2" in problems[0].message
    assert "missing or extra delimiter" in problems[0].fix


def test_unclosed_quote(tmp_path):
    path = write(tmp_path / "t.csv", 'text,label\na,b\n"never closed,c\nd,e\n')
    problem = only_problem(path)
    assert problem.line == 3 and "never closed" in problem.message
    assert "double quotes" in problem.fix


def test_text_after_closing_quote(tmp_path):
    problem = only_problem(write(tmp_path / "t.csv", 'text,label\n"hi" there,a\nok,b\n'))
    assert problem.line == 2 and "malformed quoting" in problem.message


def test_undecodable_bytes_name_the_line_and_iconv(tmp_path):
    path = write(tmp_path / "t.csv", b"text,label\nok,a\n" + "café,b\n".encode("latin-1"))
    problem = only_problem(path)
    assert problem.line == 3 and "0xe9" in problem.message
    assert "iconv -f latin1 -t utf-8" in problem.fix


def test_utf16_file(tmp_path):
    problem = only_problem(write(tmp_path / "t.csv", "text,label\na,b\n".encode("utf-16")))
    assert problem.line == 1 and "UTF-16" in problem.message and "iconv" in problem.fix


def test_nul_byte_is_a_problem_not_a_traceback(tmp_path):
    problem = only_problem(write(tmp_path / "t.csv", b"text,label\na,b\nc\x00,d\n"))
    assert problem.line == 3 and "NUL" in problem.message and "UTF-8" in problem.fix


def test_invalid_json_line(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": "b"}\n{"text": "c", "label": }\n')
    problem = only_problem(path)
    assert problem.line == 2 and "invalid JSON" in problem.message
    assert "one JSON object per line" in problem.fix


def test_json_line_that_is_not_an_object(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": "b"}\n["c", "d"]\n')
    problem = only_problem(path)
    assert problem.line == 2 and "not an object" in problem.message
    assert "one JSON object per line" in problem.fix


def test_csv_named_jsonl_is_one_problem_with_a_hint(tmp_path):
    problem = only_problem(write(tmp_path / "t.jsonl", "text,label\na,b\nc,d\n"))
    assert problem.line == 1 and "looks like CSV" in problem.message
    assert "rename" in problem.message and "one JSON object per line" in problem.fix


def test_json_array_named_jsonl_gets_a_hint(tmp_path):
    path = write(tmp_path / "t.json", json.dumps([{"text": "a", "label": "b"}], indent=1))
    assert "one JSON array" in problems_of(path)[0].message


def test_json_record_missing_a_key(tmp_path):
    path = jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "b"}, {"text": "c"}])
    problem = only_problem(path)
    assert (problem.line, problem.column) == (2, "label") and "add 'label'" in problem.fix


def test_chat_without_user_or_final_assistant(tmp_path):
    records = [
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "user", "content": "b"}]},
    ]
    problems = problems_of(jsonl(tmp_path / "chat.jsonl", records))
    assert [(p.line, p.column) for p in problems] == [(2, "messages"), (3, "messages")]
    assert "no user message" in problems[0].message and '"role": "user"' in problems[0].fix
    assert "assistant" in problems[1].message and '"role": "assistant"' in problems[1].fix


def test_file_that_is_not_parquet(tmp_path):
    problem = only_problem(write(tmp_path / "t.parquet", "text,label\na,b\n"))
    assert "not Parquet" in problem.message and "looks like CSV" in problem.message
    assert "export" in problem.fix


def test_truncated_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a"] * 50, "label": ["b"] * 50}), path)
    data = path.read_bytes()
    write(path, data[:20] + data[-8:])
    problem = only_problem(path)
    assert "Parquet" in problem.message and "export" in problem.fix


def test_all_problems_are_collected_in_one_error(tmp_path):
    path = write(tmp_path / "t.csv", "text,label\n,a\nb,c,d\ne,\nok,f\n")
    assert [p.line for p in problems_of(path)] == [2, 3, 4]


def test_problems_are_capped_with_a_summary(tmp_path):
    path = write(tmp_path / "t.csv", "text,label\n" + "a,\n" * 60)
    with pytest.raises(InputError) as info:
        read_table(path, max_problems=5)
    problems = info.value.problems
    assert len(problems) == 6 and [p.line for p in problems[:5]] == [2, 3, 4, 5, 6]
    assert "55 more" in problems[-1].message and problems[-1].fix
    assert str(info.value).startswith(f"{path}: 60 problems found")


def test_duplicates_and_long_texts_are_not_errors(tmp_path):
    long_text = "word " * 40_000  # longer than the csv module's default field limit
    path = write(tmp_path / "t.csv", f'text,label\na,x\na,x\n"{long_text}",y\n')
    table = read_table(path)
    assert len(table) == 3 and len(table.texts[2]) == len(long_text.strip())


def test_first_200_lines_of_banking77(tmp_path):
    with BANKING77.open(encoding="utf-8") as fh:
        head = "".join(islice(fh, 200))
    table = read_table(write(tmp_path / "train.csv", head))
    assert len(table) == 199 and table.lines[0] == 2 and table.lines[-1] == 200
    assert table.texts[0].startswith("My thoughts were that you offered crypto top up")
    assert table.labels[0] == ("top_up_reverted",)
    assert all(len(labels) == 1 and labels[0] for labels in table.labels)


def test_read_texts_from_txt_and_unlabelled_files(tmp_path):
    assert read_texts(write(tmp_path / "t.txt", "a\n\n b \n")) == ["a", "b"]
    assert read_texts(write(tmp_path / "t.csv", "review\nx\ny\n")) == ["x", "y"]
    shutil.copy(tmp_path / "t.csv", tmp_path / "u.csv")
    assert read_texts(tmp_path / "u.csv", text_column="review") == ["x", "y"]
