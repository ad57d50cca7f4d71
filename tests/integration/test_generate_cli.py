"""``tuneforge generate`` and ``tuneforge chat`` on the tiny Llama: replies in input order,
equal to the library's, an atomic output, exit 2 with nothing written on bad input, and a
chat fed through stdin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.lively_llama import build_lively_llama

from tuneforge.inference.generator import Generator

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Count"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
        {"role": "user", "content": "Why?"},
    ],
    [{"role": "user", "content": "The Eagle is a coffee shop near the river"}],
    [{"role": "user", "content": "Count to five"}],
]


@pytest.fixture(scope="module")
def lively(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lively_llama(tmp_path_factory.mktemp("lively") / "model")


def write_prompts(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_generate_writes_each_line_plus_its_reply_in_input_order(
    lively: Path, tmp_path: Path
) -> None:
    rows = [{"id": i, "messages": m} for i, m in enumerate(CONVERSATIONS)]
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "generate", lively, "--input", prompts, "--output", out,
        "--max-tokens", "12", "--batch-size", "2", "--threads", "1",
    )  # fmt: skip
    assert result.code == 0, result
    assert "wrote 5 replies" in result.stderr
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["id"] for w in written] == list(range(5))
    assert [w["messages"] for w in written] == CONVERSATIONS
    generator = Generator.load(str(lively), threads=1)
    expected = [generator.chat(m, max_tokens=12) for m in CONVERSATIONS]
    assert [w["completion"] for w in written] == [c.text for c in expected]
    assert [w["finish_reason"] for w in written] == ["length"] * 5
    assert len({w["completion"] for w in written}) > 1


def test_generate_with_a_seed_samples_reproducibly(lively: Path, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", [{"messages": CONVERSATIONS[0]}])
    texts = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        out = tmp_path / f"{name}.jsonl"
        result = run_cli(
            "generate", lively, "--input", prompts, "--output", out, "--max-tokens", "12",
            "--temperature", "1", "--seed", seed, "--threads", "1",
        )  # fmt: skip
        assert result.code == 0, result
        texts.append(json.loads(out.read_text())["completion"])
    assert texts[0] == texts[1] != texts[2]


def test_a_bad_line_exits_2_naming_it_and_writes_nothing(lively: Path, tmp_path: Path) -> None:
    rows = [
        {"messages": CONVERSATIONS[0]},
        {"messages": [{"role": "robot", "content": "hi"}]},
        {"prompt": "Hi"},
        {"messages": [{"role": "user", "content": ["a", "b"]}]},
    ]
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "out.jsonl"
    out.write_text("kept\n")
    result = run_cli("generate", lively, "--input", prompts, "--output", out)
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    assert "prompts.jsonl:2" in result.stderr and "messages[0].role" in result.stderr
    assert "unknown role ('robot')" in result.stderr
    assert "prompts.jsonl:3" in result.stderr and 'has no "messages"' in result.stderr
    assert "prompts.jsonl:4" in result.stderr and "messages[0].content" in result.stderr
    assert out.read_text() == "kept\n", "a failed run must not touch the output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "prompts.jsonl"]


def test_a_prompt_too_long_for_max_tokens_names_its_line(lively: Path, tmp_path: Path) -> None:
    rows = [{"messages": CONVERSATIONS[1]}, {"messages": CONVERSATIONS[2]}]
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "generate", lively, "--input", prompts, "--output", out, "--max-tokens", "205",
        "--threads", "1",
    )  # fmt: skip
    assert result.code == 2, result
    assert "prompts.jsonl:2:" in result.stderr and "context of 256 tokens" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--temperature", "3"], "temperature must be between 0 and 2"),
        (["--top-p", "0"], "top_p must be greater than 0"),
        (["--max-tokens", "0"], "max_tokens must be an integer >= 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_options_exit_2_before_loading_anything(
    tmp_path: Path, options: list[str], message: str
) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", [{"messages": CONVERSATIONS[0]}])
    out = tmp_path / "out.jsonl"
    result = run_cli("generate", "no-such-model", "--input", prompts, "--output", out, *options)
    assert result.code == 2, result
    assert message in result.stderr
    assert not out.exists()


def test_an_unknown_model_exits_2(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", [{"messages": CONVERSATIONS[0]}])
    result = run_cli("generate", "no-such-model", "--input", prompts, "--output", tmp_path / "o")
    assert result.code == 2, result
    assert "unknown generative base model 'no-such-model'" in result.stderr


def test_chat_reads_stdin_answers_each_line_and_keeps_the_conversation(
    lively: Path, tmp_path: Path
) -> None:
    generator = Generator.load(str(lively), threads=1)
    first = [{"role": "system", "content": "Count"}, {"role": "user", "content": "Hi"}]
    one = generator.chat(first, max_tokens=8).text
    second = [*first, {"role": "assistant", "content": one}, {"role": "user", "content": "Why?"}]
    two = generator.chat(second, max_tokens=8).text
    after_reset = generator.chat(
        [{"role": "system", "content": "Count"}, {"role": "user", "content": "Why?"}], max_tokens=8
    ).text
    assert two != after_reset, "the test needs the history to change the reply"

    stdin = tmp_path / "stdin.txt"
    stdin.write_text("Hi\nWhy?\n/reset\nWhy?\n/exit\nnot read\n")
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "tuneforge", "chat", str(lively), "--system", "Count",
         "--max-tokens", "8", "--threads", "1"],
        stdin=stdin.open(), capture_output=True, text=True, timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{one}\n{two}\n{after_reset}\n"
    assert "(conversation reset)" in proc.stderr


def test_chat_ends_at_end_of_input_and_its_threads_sleep_when_idle(lively: Path) -> None:
    """A chat session lasts: its idle OpenMP threads sleep (a spinning thread that waits for
    a core another process holds stalls decoding), and it says how many threads it uses."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tuneforge", "chat", str(lively)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "idle threads sleep, so the load is not counted" in proc.stderr


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("generate", ["--input", "--output", "--max-tokens", "--temperature", "--top-p",
                      "--seed", "--stop", "--batch-size", "--precision", "--threads"]),
        ("chat", ["--system", "--max-tokens", "--temperature", "--seed", "--threads"]),
    ],
)  # fmt: skip
def test_help_lists_the_options(command: str, options: list[str]) -> None:
    result = run_cli(command, "--help")
    assert result.code == 0, result
    for option in options:
        assert option in result.stdout, f"{option} missing from `tuneforge {command} --help`"
    assert command in run_cli("--help").stdout


def test_chat_answers_the_next_message_after_one_too_long_for_the_context(
    lively: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    generator = Generator.load(str(lively), threads=1)
    expected = generator.chat([{"role": "user", "content": "Hi"}], max_tokens=6).text
    stdin = tmp_path / "stdin.txt"
    stdin.write_text("Paris is the capital of France. " * 60 + "\nHi\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tuneforge", "chat", str(lively), "--max-tokens", "6",
         "--threads", "1"],
        stdin=stdin.open(), capture_output=True, text=True, timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "error: the conversation is" in proc.stderr and "no room for a reply" in proc.stderr
    assert proc.stdout == f"{expected}\n"
    assert "Traceback" not in proc.stderr


def test_an_output_folder_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", [{"messages": CONVERSATIONS[0]}])
    result = run_cli(
        "generate", "default-chat", "--input", prompts, "--output", tmp_path / "no" / "o.jsonl"
    )
    assert result.code == 2, result
    assert "does not exist" in result.stderr
