"""``tuneforge data check`` on chat files: a generation set gets its own report (task and
reason, turns, characters and tokens per example, duplicates, leakage), a chat file of labels
the classifier report with its task, a bad file every problem with file, line and field.
And ``tuneforge train`` on a generation set says the file looks generative (exit 2)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli

# the public e2e_nlg set beside the repository (a checkout's ../shared/data), when present
E2E = next(
    (
        d / "e2e_nlg"
        for d in (
            Path(__file__).resolve().parents[2].parent / "shared/data",
            Path("/work/shared/data"),
        )
        if (d / "e2e_nlg").is_dir()
    ),
    Path("/nonexistent"),
)
TEMPLATE = "{% for m in messages %}{{ m['content'] }} [SEP] {% endfor %}"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str, **extra) -> dict:
    return {"role": "assistant", "content": text, **extra}


def write(path: Path, conversations: list[list[dict]]) -> Path:
    lines = [json.dumps({"messages": m}) for m in conversations]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# Free-text replies (all different): a generation set. Words from the tiny tokenizer's vocab.
REPLIES = [
    "the movie was good and the music was great",
    "the plot was bad but the actor was fine",
    "i love this film",
    "we hate the ending",
    "the story is sad and the scene is ugly",
    "it was a wonderful film",
]


def generation_rows() -> list[list[dict]]:
    rows = [[user(f"tell me about film {i}"), assistant(reply)] for i, reply in enumerate(REPLIES)]
    rows[0] = [
        {"role": "system", "content": "be nice"},
        user("hi"),
        assistant("hello there", weight=0),
        *rows[0],
    ]
    rows.append(rows[1])  # line 7 repeats line 2
    return rows


@pytest.fixture()
def chat_model(tiny_model: Path, tmp_path: Path) -> Path:
    """The tiny model with a chat template: content [SEP] per message."""
    from transformers import AutoTokenizer

    model = shutil.copytree(tiny_model, tmp_path / "chat-model")
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(model)
    return model


def test_a_generation_set_is_reported_as_one(tmp_path: Path, chat_model: Path):
    train = write(tmp_path / "train.jsonl", generation_rows())
    validation = write(
        tmp_path / "validation.jsonl",
        [
            [user("tell me about film 3"), assistant("we hate the ending")],  # in train: exact
            [user("tell me about film 4"), assistant("a different reply")],  # same prompt
            [user("something new"), assistant("a new reply")],
        ],
    )
    result = run_cli("data", "check", train, validation, "--model", chat_model, "--json")
    assert result.code == 0, result
    report = json.loads(result.stdout)
    assert report["kind"] == "chat"
    assert report["task"]["task"] == "generate"
    assert report["task"]["reason"].startswith("6 distinct final replies among 7 examples")
    assert report["splits"]["validation"]["examples"] == 3
    assert report["examples"] == 7
    assert report["turns"] == {"total": 17, "mean": 2.43, "max": 5}
    assert (report["trained_turns"], report["weight_zero_turns"]) == (7, 1)
    assert report["characters"]["max"] == len("be nice") + len("hi") + len("hello there") + len(
        "tell me about film 0"
    ) + len(REPLIES[0])
    tokens = report["tokens"]
    assert tokens["counted_with"] == "chat template"
    # each message is its words (unknown ones are [UNK]) and a [SEP]: line 1 is
    # "be nice"(2+1) "hi"(1+1) "hello there"(2+1) "tell me about film 0"(5+1) REPLIES[0](9+1)
    assert tokens["max"] == 24
    # lines 2-7: 16, 11, 11, 16, 12, 16
    assert tokens["p50"] == 16 and tokens["tokens_per_epoch"] == 24 + 16 * 3 + 11 * 2 + 12
    assert report["duplicates"]["train"]["exact"] == 1
    assert report["duplicates"]["train"]["examples"][0]["lines"] == [2, 7]
    leak = report["leakage"]["train/validation"]
    assert (leak["exact"], leak["prompt"]) == (1, 2)
    assert [e["line"] for e in leak["examples"]] == [1, 2]
    assert any("duplicate example(s), e.g. lines 2, 7" in w for w in report["warnings"])
    assert any("1 validation example(s) also occur in train" in w for w in report["warnings"])


def test_the_human_report(tmp_path: Path, tiny_model: Path):
    train = write(tmp_path / "train.jsonl", generation_rows())
    result = run_cli("data", "check", train, "--model", tiny_model)
    assert result.code == 0, result
    text = " ".join(result.stdout.split())
    assert "Task: generate (6 distinct final replies among 7 examples" in text
    assert "Tokens per example (train, 7 of 7, texts)" in text  # no chat template
    assert "warning: train: 1 duplicate example(s)" in text
    without_model = run_cli("data", "check", train)
    assert without_model.code == 0, without_model
    assert "Tokens per example" not in without_model.stdout


@pytest.mark.skipif(not E2E.is_dir(), reason="the shared datasets are not here")
def test_e2e_nlg_slice(tmp_path: Path):
    train = tmp_path / "train.jsonl"
    with (E2E / "train.jsonl").open(encoding="utf-8") as fh:
        train.write_text("".join(itertools.islice(fh, 300)), encoding="utf-8")
    validation = tmp_path / "validation.jsonl"
    with (E2E / "validation.jsonl").open(encoding="utf-8") as fh:
        validation.write_text("".join(itertools.islice(fh, 100)), encoding="utf-8")
    result = run_cli("data", "check", train, "--validation", validation, "--json")
    assert result.code == 0, result
    report = json.loads(result.stdout)
    assert report["task"]["task"] == "generate"
    assert report["examples"] == 300 and report["turns"]["mean"] == 3
    assert report["leakage"]["train/validation"]["prompt"] == 0  # no input in two splits


def test_problems_of_every_chat_file_with_line_and_field(tmp_path: Path):
    train = write(
        tmp_path / "train.jsonl",
        [
            [user("hi"), assistant("hello")],
            [{"role": "bot", "content": "x"}, assistant("ok")],
            [user("hi"), assistant("ok", weight=5)],
        ],
    )
    validation = write(tmp_path / "validation.jsonl", [[user("hi")]])
    result = run_cli("data", "check", train, validation)
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    assert "3 problem(s)" in result.stderr
    assert f"{train}:2: column 'messages[0].role': unknown role ('bot')" in result.stderr
    assert f"{train}:3: column 'messages[1].weight': weight must be 0 or 1" in result.stderr
    assert f"{validation}:1: column 'messages': the example has no assistant" in result.stderr


def test_a_chat_file_of_labels_gets_the_classifier_report(tmp_path: Path, tiny_model: Path):
    rows = [[user(f"good film {i}"), assistant(["positive", "negative"][i % 2])] for i in range(20)]
    train = write(tmp_path / "train.jsonl", rows)
    result = run_cli("data", "check", train, "--model", tiny_model, "--json")
    assert result.code == 0, result
    report = json.loads(result.stdout)
    assert report["task"]["task"] == "classify"
    assert "2 distinct final replies among 20 examples" in report["task"]["reason"]
    assert sorted(report["classes"]) == ["negative", "positive"]
    human = run_cli("data", "check", train, "--model", tiny_model)
    assert human.code == 0 and "Task: classify (2 distinct" in human.stdout


def test_training_a_generation_set_as_a_classifier_says_it_looks_generative(
    tmp_path: Path, tiny_model: Path
):
    rows = [[user(f"film {i}"), assistant(f"{REPLIES[i % 6]} {i}")] for i in range(21)]
    train = write(tmp_path / "train.jsonl", rows)
    output = tmp_path / "out"
    result = run_cli(
        "train", train, "--task", "classify", "--model", tiny_model, "--output", output, "--quiet"
    )
    assert result.code == 2, result
    message = " ".join(result.stderr.split())
    assert "has 1 example(s)" not in message
    assert "looks like a generation set" in message
    assert "21 distinct final replies among 21 examples" in message
    assert "free-text replies need a generative model" in message
    assert "--task generate" in message
    assert not output.exists()


def test_a_chat_file_of_labels_may_have_a_labelled_table_beside_it(
    tmp_path: Path, tiny_model: Path
):
    rows = [[user(f"good film {i}"), assistant(["positive", "negative"][i % 2])] for i in range(20)]
    train = write(tmp_path / "train.jsonl", rows)
    validation = tmp_path / "validation.csv"
    validation.write_text("text,label\ngreat film,positive\nbad film,negative\n")
    result = run_cli("data", "check", train, validation, "--model", tiny_model, "--json")
    assert result.code == 0, result
    report = json.loads(result.stdout)
    assert report["task"]["task"] == "classify" and report["splits"]["validation"]["rows"] == 2


def test_a_generation_set_needs_chat_files_for_every_split(tmp_path: Path):
    train = write(tmp_path / "train.jsonl", generation_rows())
    validation = tmp_path / "validation.csv"
    validation.write_text("text,label\ngreat film,positive\n")
    result = run_cli("data", "check", train, validation)
    assert result.code == 2, result
    assert f"{validation}: unsupported file extension '.csv'" in result.stderr
