"""Task detection: a chat file of labels is a classification set, one of free text a
generation set; the reason gives the numbers. Real data: a slice of banking77 (intents) and
of e2e_nlg (restaurant descriptions)."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest

from tuneforge.data.chat_sets import read_chat_set
from tuneforge.data.checks import table_problems
from tuneforge.data.tables import read_table
from tuneforge.data.task import MAX_CLASSES, choose_task
from tuneforge.errors import InputError

# the public datasets beside the repository (a checkout's ../shared/data), when present
DATA = next(
    (
        d
        for d in (
            Path(__file__).resolve().parents[3].parent / "shared/data",
            Path("/work/shared/data"),
        )
        if d.is_dir()
    ),
    Path("/nonexistent"),
)
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="the shared datasets are not here")


def chat_line(text: str, reply: str) -> str:
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
    return json.dumps({"messages": messages}) + "\n"


@pytest.fixture(scope="module")
def banking_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 banking77 rows (every 20th: the file is sorted by intent) as chat JSONL."""
    with (DATA / "banking77" / "train.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))[::20][:500]
    path = tmp_path_factory.mktemp("banking") / "banking.jsonl"
    path.write_text("".join(chat_line(r["text"], r["label"]) for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def e2e_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 500 lines of e2e_nlg's training file."""
    with (DATA / "e2e_nlg" / "train.jsonl").open(encoding="utf-8") as fh:
        lines = list(itertools.islice(fh, 500))
    path = tmp_path_factory.mktemp("e2e") / "e2e.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@needs_data
def test_an_intent_set_is_classification(banking_chat: Path):
    choice = choose_task(read_chat_set(banking_chat))
    assert choice.task == "classify"
    assert (choice.examples, choice.distinct) == (500, 77)
    assert choice.reason.startswith("77 distinct final replies among 500 examples")
    assert choice.reason.endswith("classify")
    # the same file read as a labelled table gives the same answer
    assert choose_task(read_table(banking_chat)).task == "classify"


@needs_data
def test_a_data_to_text_set_is_generation(e2e_chat: Path):
    choice = choose_task(read_chat_set(e2e_chat))
    assert choice.task == "generate"
    assert choice.examples == 500 and choice.distinct > 450
    assert choice.reason.startswith(f"{choice.distinct} distinct final replies among 500 examples")
    assert "longer than 50 characters" in choice.reason
    assert choice.reason.endswith("generate")


@pytest.mark.parametrize(
    ("replies", "task", "needle"),
    [
        (["positive", "negative"] * 3, "classify", "3.0 examples per reply"),
        # short but nearly all different: answers, not labels
        ([f"answer {i}" for i in range(40)] + ["answer 0"] * 2, "generate", "fewer than 2"),
        # repeated, but too many distinct values for classes
        ([f"c{i}" for i in range(MAX_CLASSES + 1)] * 3, "generate", "more than 100"),
        # few and repeated, but one is a sentence
        (["yes", "no", "It depends on the weather and on " + "x" * 30] * 5, "generate", "1"),
    ],
)
def test_the_rule(replies: list[str], task: str, needle: str):
    choice = choose_task(replies)
    assert choice.task == task, choice.reason
    assert needle in choice.reason


def test_a_requested_task_wins_and_a_bad_one_is_refused():
    choice = choose_task(["a long free-text reply number one", "another reply"], "classify")
    assert choice.task == "classify"
    assert choice.reason == "classify as requested (2 distinct final replies among 2 examples)"
    assert choose_task(["a", "a", "b", "b"], "generate").task == "generate"
    with pytest.raises(InputError, match="auto, classify, generate"):
        choose_task(["a"], "regress")


@needs_data
def test_training_a_generative_chat_file_as_a_classifier_says_why(e2e_chat: Path):
    """Not "class '<long reply>' has 1 example(s)": the file looks generative, why, and
    what to do."""
    problems = table_problems(read_table(e2e_chat), training=True)
    (problem,) = problems
    assert problem.file == str(e2e_chat)
    assert "looks like a generation set" in problem.message
    assert "distinct final replies among 500 examples" in problem.message
    assert "labels" in problem.fix and "free-text replies" in problem.fix


def test_a_chat_classification_file_still_trains(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(chat_line(f"text {i}", ["pos", "neg"][i % 2]) for i in range(8)))
    assert table_problems(read_table(path), training=True) == []
