"""build_data_report on a hand-made dataset with known duplicates, leakage and conflicts."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from tuneforge.data import report as report_module
from tuneforge.data.report import build_data_report, normalise_text, render_data_report
from tuneforge.data.splits import Splits
from tuneforge.data.tables import Table

WORDS = ["good", "bad", "film", "movie", "plot", "great", "awful", "the", "a", "was", "so"]


def make_table(rows: list[tuple[str, str]], source: str) -> Table:
    return Table(
        source=source,
        texts=[text for text, _ in rows],
        labels=[(label,) for _, label in rows],
        lines=[i + 2 for i in range(len(rows))],
        sha256="0" * 64,
        format="csv",
    )


TRAIN = [
    ("Great movie!", "pos"),  # line 2
    ("great movie", "pos"),  # 3: normalised duplicate of 2
    ("Great movie!", "pos"),  # 4: exact duplicate of 2
    ("Awful film", "neg"),  # 5
    ("awful   film.", "pos"),  # 6: normalised duplicate of 5, conflicting label
    ("so so", "neg"),  # 7
    ("fine", "pos"),  # 8
]
VALIDATION = [("Great movie!", "pos"), ("FINE", "pos"), ("unique val", "neg")]
TEST = [("unique val", "neg"), ("so so!", "pos"), ("new", "neg")]


@pytest.fixture()
def splits() -> Splits:
    return Splits(
        train=make_table(TRAIN, "train.csv"),
        validation=make_table(VALIDATION, "val.csv"),
        test=make_table(TEST, "test.csv"),
        carved={"validation": False, "test": False},
    )


@pytest.fixture()
def tokenizer(tmp_path):
    from transformers import BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab.write_text("\n".join(specials + WORDS) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab=str(vocab), do_lower_case=True)


def test_normalise_text():
    assert normalise_text("  Ｈello,   WORLD!! «ok» ") == "hello world ok"
    assert normalise_text("好，很好。") == "好很好"


def test_counts_of_duplicates_leakage_and_conflicts(splits):
    report = build_data_report(splits)
    json.dumps(report)
    assert report["splits"]["validation"] == {"rows": 3, "source": "val.csv", "carved": False}
    assert report["classes"] == {
        "neg": {"train": 2, "validation": 1, "test": 2},
        "pos": {"train": 5, "validation": 2, "test": 1},
    }
    assert report["imbalance"] == {
        "ratio": 2.5,
        "largest": {"label": "pos", "count": 5},
        "smallest": {"label": "neg", "count": 2},
    }
    train = report["duplicates"]["train"]
    assert (train["exact"], train["normalised"]) == (1, 3)
    assert train["exact_examples"] == [{"text": "Great movie!", "lines": [2, 4]}]
    assert train["normalised_examples"] == [
        {"texts": ["Great movie!", "great movie"], "lines": [2, 3, 4]},
        {"texts": ["Awful film", "awful   film."], "lines": [5, 6]},
    ]
    assert report["duplicates"]["test"]["exact"] == report["duplicates"]["test"]["normalised"] == 0
    leakage = {pair: (v["exact"], v["normalised"]) for pair, v in report["leakage"].items()}
    assert leakage == {"train/validation": (1, 2), "train/test": (0, 1), "validation/test": (1, 1)}
    assert report["leakage"]["train/validation"]["normalised_examples"] == [
        {"train": {"text": "fine", "lines": [8]}, "validation": {"text": "FINE", "lines": [3]}}
    ]
    assert report["conflicts"]["count"] == 2
    so_so = report["conflicts"]["examples"][1]
    assert so_so["occurrences"] == [
        {"split": "train", "line": 7, "labels": ["neg"]},
        {"split": "test", "line": 3, "labels": ["pos"]},
    ]
    assert report["token_lengths"] is None and report["estimated_training"] is None


def test_warnings_name_the_counts(splits):
    warnings = build_data_report(splits)["warnings"]
    assert "train: 1 exact duplicate row(s)" in warnings
    assert "train: 2 more duplicate row(s) after normalisation" in warnings
    assert "leakage: 1 validation row(s) also occur in train" in warnings
    assert "leakage: 1 more test row(s) match train after normalisation" in warnings
    assert "2 text(s) carry conflicting labels" in warnings
    assert not any("imbalance" in w for w in warnings)


def test_strong_imbalance_warns():
    rows = [(f"text {i}", "big") for i in range(22)] + [("x", "small"), ("y", "small")]
    table = make_table(rows, "t.csv")
    splits = Splits(table, table.subset([0]), table.subset([1]), {"validation": True, "test": True})
    report = build_data_report(splits)
    assert report["imbalance"]["ratio"] == 11.0
    assert "strong class imbalance: 'big' has 11x the examples of 'small'" in report["warnings"]


def length_splits(word_counts: list[int]) -> Splits:
    rows = [(" ".join(["good"] * n), "pos") for n in word_counts]
    table = make_table(rows, "t.csv")
    return Splits(table, table.subset([0]), table.subset([1]), {"validation": True, "test": True})


def test_token_lengths_and_time_estimate(tokenizer):
    splits = length_splits([3] * 99 + [30])  # 5 tokens each with [CLS]/[SEP], one of 32
    report = build_data_report(splits, tokenizer, throughput_tokens_per_s=100.0)
    lengths = report["token_lengths"]
    assert (lengths["p50"], lengths["p99"], lengths["max"]) == (5.0, 5.3, 32)
    assert lengths["recommended_max_length"] == 16  # ceil(5.27) -> 8, raised to the minimum 16
    assert lengths["fraction_over_recommended"] == 0.01
    assert lengths["tokens_per_epoch"] == 99 * 5 + 16
    assert report["estimated_training"] == {
        "tokens_per_epoch": 511,
        "throughput_tokens_per_s": 100.0,
        "seconds_per_epoch": 5.1,
    }
    assert "1.0% of training texts are longer than 16 tokens" in report["warnings"][-1]


def test_recommended_length_rounds_up_to_8_and_is_capped(tokenizer):
    lengths = build_data_report(length_splits([20] * 10), tokenizer)["token_lengths"]
    assert lengths["recommended_max_length"] == 24  # 22 tokens -> next multiple of 8
    capped = build_data_report(length_splits([40] * 10), tokenizer, max_length_cap=32)
    assert capped["token_lengths"]["recommended_max_length"] == 32
    assert capped["token_lengths"]["fraction_over_recommended"] == 1.0


def test_token_lengths_use_a_seeded_sample(tokenizer, monkeypatch):
    monkeypatch.setattr(report_module, "TOKEN_SAMPLE", 10)
    splits = length_splits(list(range(1, 41)))
    first = build_data_report(splits, tokenizer)["token_lengths"]
    assert (first["sampled"], first["rows"]) == (10, 40)
    assert build_data_report(splits, tokenizer)["token_lengths"] == first


def test_render_shows_tables_and_warnings(splits, tokenizer):
    report = build_data_report(splits, tokenizer, throughput_tokens_per_s=50.0)
    console = Console(record=True, width=120)
    console.print(render_data_report(json.loads(json.dumps(report))))
    out = console.export_text()
    for expected in ("Examples per class", "Duplicates, leakage", "recommended max_length"):
        assert expected in out
    assert "warning: 2 text(s) carry conflicting labels" in out
    assert "Estimated training time" in out
