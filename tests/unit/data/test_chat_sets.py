"""Reading generation sets: OpenAI chat JSONL in full, prompt/completion as an alias, and
every problem reported with its file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.data.chat_sets import (
    ChatSet,
    check_lengths,
    conversation_length,
    looks_like_chat_set,
    read_chat_set,
)
from tuneforge.data.conversations import Conversation, Turn
from tuneforge.data.tables import TableTooLarge
from tuneforge.errors import InputError


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str, **extra) -> dict:
    return {"role": "assistant", "content": text, **extra}


def write(path: Path, records: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def problems_of(path: Path, **kwargs) -> list[str]:
    with pytest.raises(InputError) as info:
        read_chat_set(path, **kwargs)
    return [str(p) for p in info.value.problems]


def test_multi_turn_chat_with_system_and_weights(tmp_path: Path):
    messages = [
        {"role": "system", "content": "Be brief."},
        user("Hi"),
        assistant("Hello!", weight=0),
        user("Capital of France?"),
        assistant("Paris.", weight=1),
        user("And of Spain?"),
        assistant("Madrid."),
    ]
    path = write(tmp_path / "chat.jsonl", [{"messages": messages}, {"messages": messages[1:3]}])
    path.write_text(path.read_text() + json.dumps({"messages": messages[3:5]}) + "\n")
    with pytest.raises(InputError) as info:  # line 2 trains nothing (weight 0 only)
        read_chat_set(path)
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == (2, "messages")
    assert "weight 0" in problem.message

    path = write(tmp_path / "ok.jsonl", [{"messages": messages}, {"messages": messages[3:5]}])
    chat = read_chat_set(path)
    assert isinstance(chat, ChatSet) and chat.format == "chat" and len(chat) == 2
    first = chat.conversations[0]
    assert first.line == 1 and len(first.turns) == 7
    assert first.turns[0] == Turn("system", "Be brief.")
    assert [t.trained for t in first.turns] == [False, False, False, False, True, False, True]
    assert first.turns[2].weight == 0 and first.turns[4].weight == 1
    assert first.turns[6].weight is None
    assert chat.conversations[1].line == 2
    assert len(chat.sha256) == 64


def test_text_parts_are_joined_and_texts_kept_verbatim(tmp_path: Path):
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": " second "}]
    path = write(tmp_path / "c.jsonl", [{"messages": [user("  hi  "), assistant(parts)]}])
    (conversation,) = read_chat_set(path).conversations
    assert conversation.turns[0].content == "  hi  "
    assert conversation.turns[1].content == "first\n second "


def test_prompt_completion_is_a_user_turn_and_an_assistant_turn(tmp_path: Path):
    path = write(
        tmp_path / "pc.jsonl",
        [{"prompt": "2+2=", "completion": " 4"}, {"prompt": "3+3=", "completion": " 6", "x": 1}],
    )
    chat = read_chat_set(path)
    assert chat.format == "prompt_completion"
    assert chat.conversations[0] == Conversation((Turn("user", "2+2="), Turn("assistant", " 4")), 1)
    assert chat.conversations[1].has_trained_turn


def test_every_problem_is_reported_with_line_and_field(tmp_path: Path):
    good = {"messages": [user("hi"), assistant("hello")]}
    records = [
        good,
        {"messages": [{"role": "robot", "content": "x"}, assistant("ok")]},  # 2
        {"messages": [user("   "), assistant("ok")]},  # 3 blank content
        {"messages": [user(42), assistant("ok")]},  # 4 non-string content
        {"messages": [user("hi")]},  # 5 no assistant turn
        {"messages": [user("hi"), assistant("ok", weight=2)]},  # 6 weight other than 0|1
        {"messages": [{"role": "user", "content": "hi", "weight": 1}, assistant("ok")]},  # 7
        {"messages": [user("hi"), assistant([{"type": "image_url", "image_url": {}}])]},  # 8
        "{not json",  # 9
        {"messages": [user("hi"), assistant("ok", weight=True)]},  # 10 a boolean is no weight
        {"text": "a", "label": "b"},  # 11 another format
        {"prompt": "p", "completion": "c"},  # 12 a second format in one file
        {"messages": []},  # 13
        {"messages": [{"content": "no role"}, assistant("ok")]},  # 14
    ]
    found = problems_of(write(tmp_path / "bad.jsonl", records))
    expected = {
        2: ("messages[0].role", "unknown role ('robot')"),
        3: ("messages[0].content", "empty content"),
        4: ("messages[0].content", "the content is a number, not a string"),
        5: ("messages", "no assistant message"),
        6: ("messages[1].weight", "weight must be 0 or 1, got 2"),
        7: ("messages[0].weight", "a user message has a weight"),
        8: ("messages[1].content", "content part 1 is a 'image_url' part"),
        9: (None, "invalid JSON"),
        10: ("messages[1].weight", "weight must be 0 or 1, got true"),
        11: (None, 'the record has no "messages"'),
        12: (None, "the file's first example is chat"),
        13: ("messages", "not a non-empty list"),
        14: ("messages[0].role", "unknown role (missing)"),
    }
    assert len(found) == len(expected), found
    for (line, (field, needle)), problem in zip(sorted(expected.items()), found, strict=True):
        where = f"bad.jsonl:{line}:" + (f" column '{field}':" if field else "")
        assert where in problem and needle in problem, (line, problem)
        assert "(fix: " in problem


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"tools": [{"type": "function"}], "messages": [user("hi"), assistant("ok")]}, "tools"),
        ({"functions": [{"name": "f"}], "messages": [user("hi"), assistant("ok")]}, "functions"),
        (
            {"messages": [user("hi"), {"role": "assistant", "content": None, "tool_calls": []}]},
            "messages[1].tool_calls",
        ),
        (
            {
                "messages": [
                    user("hi"),
                    assistant("calling", function_call={"name": "f", "arguments": "{}"}),
                    {"role": "function", "name": "f", "content": "42"},
                    assistant("42"),
                ]
            },
            "messages[1].function_call",
        ),
        (
            {"messages": [user("hi"), {"role": "tool", "content": "42"}, assistant("ok")]},
            "messages[1].role 'tool'",
        ),
    ],
)
def test_tool_use_examples_are_refused_with_the_line(tmp_path: Path, record: dict, field: str):
    good = {"messages": [user("hi"), assistant("hello")]}
    (problem,) = problems_of(write(tmp_path / "tools.jsonl", [good, record]))
    assert f"tools.jsonl:2: column '{field}':" in problem
    assert "chat template supports tools" in problem


def test_hostile_lines_are_problems_not_crashes(tmp_path: Path):
    deep = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    surrogate = '{"messages": [{"role": "user", "content": "a\\ud800b"}, ' + (
        '{"role": "assistant", "content": "ok"}]}'
    )
    good = json.dumps({"messages": [user("hi"), assistant("hello")]})
    found = problems_of(write(tmp_path / "hostile.jsonl", [good, deep, surrogate]))
    assert len(found) == 2, found
    assert "hostile.jsonl:2:" in found[0] and "nested too deeply" in found[0]
    assert "hostile.jsonl:3: column 'messages[0].content':" in found[1]
    assert "surrogate" in found[1]


def test_caps_and_bad_files(tmp_path: Path):
    rows = [{"messages": [user(f"q{i}"), assistant(f"a{i}")]} for i in range(5)]
    path = write(tmp_path / "c.jsonl", rows)
    with pytest.raises(TableTooLarge) as info:
        read_chat_set(path, max_rows=3)
    assert info.value.limit == "rows"
    with pytest.raises(TableTooLarge):
        read_chat_set(path, max_bytes=10)
    with pytest.raises(TableTooLarge):
        read_chat_set(path, max_memory=100)
    with pytest.raises(InputError, match="file not found"):
        read_chat_set(tmp_path / "missing.jsonl")
    (tmp_path / "c.csv").write_text("text,label\na,b\n")
    with pytest.raises(InputError, match=r"\.jsonl"):
        read_chat_set(tmp_path / "c.csv")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        read_chat_set(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9", "completion": "x"}\n')
    assert "not valid UTF-8" in problems_of(tmp_path / "latin1.jsonl")[0]


def test_only_the_first_problems_are_listed(tmp_path: Path):
    rows = [{"messages": [user("hi")]} for _ in range(30)]
    found = problems_of(write(tmp_path / "c.jsonl", rows), max_problems=5)
    assert len(found) == 6 and "25 more problem(s)" in found[-1]


def test_looks_like_chat_set(tmp_path: Path):
    chat = write(tmp_path / "a.jsonl", [{"messages": []}])
    pc = write(tmp_path / "b.jsonl", [{"prompt": "a", "completion": "b"}])
    table = write(tmp_path / "c.jsonl", [{"text": "a", "label": "b"}])
    (tmp_path / "d.csv").write_text("messages\n")
    (tmp_path / "e.jsonl").write_text("{broken\n")
    assert looks_like_chat_set(chat) and looks_like_chat_set(pc)
    assert not looks_like_chat_set(table)
    assert not looks_like_chat_set(tmp_path / "d.csv")
    assert not looks_like_chat_set(tmp_path / "e.jsonl")
    assert not looks_like_chat_set(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------- lengths


def _set_of_lengths(tmp_path: Path, lengths: list[int]) -> ChatSet:
    rows = [{"messages": [user("w " * n), assistant("ok")]} for n in lengths]
    return read_chat_set(write(tmp_path / "len.jsonl", rows))


def _words(conversation: Conversation) -> int:
    return sum(len(t.content.split()) for t in conversation.turns)


def test_over_long_examples_are_refused_naming_their_lines(tmp_path: Path):
    chat = _set_of_lengths(tmp_path, [3, 20, 4, 30])
    with pytest.raises(InputError) as info:
        check_lengths(chat, _words, max_length=10)
    assert "2 of 4 example(s) are longer than 10 tokens" in str(info.value)
    assert [(p.line, p.message) for p in info.value.problems] == [
        (2, "the example is 21 tokens long; the maximum length is 10"),
        (4, "the example is 31 tokens long; the maximum length is 10"),
    ]


def test_over_long_examples_are_counted_when_truncated(tmp_path: Path):
    chat = _set_of_lengths(tmp_path, [3, 20, 4, 30])
    result = check_lengths(chat, _words, max_length=10, policy="truncate")
    assert (result.over, result.lines, result.longest) == (2, (2, 4), 31)
    assert "2 of 4 example(s) are longer than 10 tokens" in result.message("len.jsonl", 4)
    assert check_lengths(chat, _words, max_length=31).over == 0
    with pytest.raises(InputError, match="policy"):
        check_lengths(chat, _words, max_length=10, policy="drop")  # type: ignore[arg-type]


def test_conversation_length_uses_the_chat_template(tiny_model: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    conversation = Conversation((Turn("user", "good film"), Turn("assistant", "great")), 1)
    # no template: the texts joined, with [CLS] and [SEP]
    assert conversation_length(tokenizer)(conversation) == 5
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} [SEP] {% endfor %}"
    )
    # "user good film [SEP] assistant great [SEP]": user and assistant are unknown words
    assert conversation_length(tokenizer)(conversation) == 7
