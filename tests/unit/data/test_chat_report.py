"""The generation-set report: duplicates compare whole conversations (weights included),
leakage also finds a shared prompt (every turn before the last assistant turn)."""

from __future__ import annotations

from rich.console import Console

from tuneforge.data.chat_report import build_chat_report, render_chat_report
from tuneforge.data.chat_sets import ChatSet
from tuneforge.data.conversations import Conversation, Turn
from tuneforge.data.task import choose_task


def conversation(line: int, *texts: str, weight: int | None = None) -> Conversation:
    turns = [
        Turn("user" if i % 2 == 0 else "assistant", text, weight if i % 2 else None)
        for i, text in enumerate(texts)
    ]
    return Conversation(tuple(turns), line)


def chat_set(name: str, *conversations: Conversation) -> ChatSet:
    return ChatSet(name, list(conversations), "0" * 64, "chat")


def test_duplicates_and_leakage_of_multi_turn_examples():
    train = chat_set(
        "train.jsonl",
        conversation(1, "hi", "hello", "how are you?", "fine"),
        conversation(2, "hi", "hello", "how are you?", "fine", weight=0),  # not a duplicate
        conversation(3, "hi", "hello", "how are you?", "fine"),  # duplicate of line 1
    )
    validation = chat_set(
        "validation.jsonl",
        conversation(1, "hi", "hello", "how are you?", "great"),  # same prompt as train 1
        conversation(2, "hi", "hello", "how are you?", "fine"),  # the whole of train 1
        conversation(3, "hi", "hey"),  # a prefix of a train prompt is no leak
    )
    report = build_chat_report(
        {"train": train, "validation": validation}, choose_task(train), tokenizer=None
    )
    assert report["turns"] == {"total": 12, "mean": 4.0, "max": 4}
    assert (report["trained_turns"], report["weight_zero_turns"]) == (4, 2)
    assert report["duplicates"]["train"]["exact"] == 1
    assert report["duplicates"]["train"]["examples"][0]["lines"] == [1, 3]
    leak = report["leakage"]["train/validation"]
    assert (leak["exact"], leak["prompt"]) == (1, 2)
    assert [(e["line"], e["first_line"], e["exact"]) for e in leak["examples"]] == [
        (1, 1, False),
        (2, 1, True),
    ]
    assert "leakage: 1 more validation example(s) share their prompt" in " ".join(
        report["warnings"]
    )
    console = Console(width=200, record=True)
    console.print(render_chat_report(report))
    text = console.export_text()
    assert (
        "Task: classify (1 distinct final reply among 3 examples" in text
        and "validation examples also in train" in text
    )
