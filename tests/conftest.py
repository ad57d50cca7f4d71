"""Shared fixtures: a tiny random BERT built in-process and small synthetic datasets.

Everything is offline: the model is created from a config and a hand-written vocabulary.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import pytest

from tuneforge.training.device import cpu_has_fast_bf16

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

POSITIVE = ["good", "great", "excellent", "love", "wonderful", "happy", "fine", "nice"]
NEGATIVE = ["bad", "awful", "terrible", "hate", "poor", "sad", "worse", "ugly"]
NEUTRAL = [
    "the",
    "a",
    "movie",
    "film",
    "was",
    "is",
    "plot",
    "actor",
    "it",
    "this",
    "very",
    "really",
    "and",
    "but",
    "story",
    "ending",
    "music",
    "scene",
    "i",
    "we",
]
TOPICS = {"sports": ["match", "team", "goal"], "money": ["bank", "price", "market"]}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab() -> list[str]:
    words = POSITIVE + NEGATIVE + NEUTRAL + [w for ws in TOPICS.values() for w in ws]
    return SPECIALS + sorted(set(words))


def build_tiny_model(directory: Path, seed: int = 0) -> Path:
    """Save a 2-layer, hidden-32 random BERT and its tokenizer to ``directory``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)
    tokenizer.model_max_length = 128
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    return directory


NO_FAST_BF16 = (
    "this CPU has no fast bf16 (no AVX-512 BF16/AMX): --precision bf16 is refused here "
    "and auto trains in fp32, so only the fp32 case runs"
)
# Training precisions to run precision-dependent tests in: `--precision auto` is bf16 on
# CPUs with AVX-512 BF16/AMX and fp32 elsewhere, so both paths are exercised explicitly.
PRECISIONS = [
    "fp32",
    pytest.param("bf16", marks=pytest.mark.skipif(not cpu_has_fast_bf16(), reason=NO_FAST_BF16)),
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny random BERT checkpoint (built once per session)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Texts whose label follows from their words, so a tiny model can learn it fast."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        cue = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        filler = rng.sample(NEUTRAL, rng.randint(1, 8))
        filler.insert(rng.randint(0, len(filler)), cue)
        rows.append((" ".join(filler), label))
    return rows


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def multilabel_rows(n: int, seed: int = 0) -> list[dict]:
    """Texts with 1-2 topic labels signalled by topic words."""
    rng = random.Random(seed)
    rows = []
    names = sorted(TOPICS)
    for i in range(n):
        chosen = [names[i % 2]] if i % 3 else names[:]
        words = rng.sample(NEUTRAL, 3)
        for name in chosen:
            words.append(rng.choice(TOPICS[name]))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": chosen})
    return rows


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def sentiment_csv(tmp_path: Path) -> Path:
    """A 200-row two-class CSV."""
    return write_csv(tmp_path / "train.csv", sentiment_rows(200))


# ---------------------------------------------------------------- running the CLI


class CliResult:
    """Exit code and captured output of one ``tuneforge`` invocation."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self) -> str:  # shown by pytest when an assertion on it fails
        return f"CliResult(code={self.code!r}, stdout={self.stdout!r}, stderr={self.stderr!r})"


def run_cli(*args) -> CliResult:
    """Run the ``tuneforge`` console entry point in this process.

    ``main()`` is the real entry point (it maps errors to exit codes and messages); running
    it in-process saves the ~5-10 s of importing torch/transformers in a fresh interpreter.
    """
    import contextlib
    import io
    import sys

    from tuneforge.cli.main import main

    stdout, stderr = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["tuneforge", *map(str, args)]
    code = None
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
    assert isinstance(code, int), f"main() did not exit with an int code: {code!r}"
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


def run_cli_subprocess(*args, cwd=None, env=None, timeout: float = 180) -> CliResult:
    """Run ``python -m tuneforge ARGS`` in a fresh, offline interpreter."""
    import subprocess
    import sys

    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    full_env.pop("TUNEFORGE_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tuneforge", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


# ---------------------------------------------------------------- tiny generative models
# A tiny random Llama chat model (tests/tiny_llama.py): SmolLM2-like ChatML, pad == eos.


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny random Llama whose chat template has no generation markers."""
    from tests.tiny_llama import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), markers=False)


@pytest.fixture(scope="session")
def tiny_llama_markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model whose template wraps assistant content in ``{% generation %}``."""
    from tests.tiny_llama import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-markers"), markers=True)
