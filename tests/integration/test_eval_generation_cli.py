"""``tuneforge eval`` on a generative model (the tiny lively Llama): one greedy reply per
prompt, scored, written as JSON and Markdown; --compare puts a second model beside it;
--limit; a bad reference line exits 2 naming it with nothing written; classifier-only
use of the generative options is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.lively_llama import build_lively_llama

from tuneforge.evaluation.generation import generation_metrics
from tuneforge.inference.generator import Generator

SYSTEM = {"role": "system", "content": "Describe the restaurant."}
ROWS = [
    {
        "mr": "name[The Eagle], eatType[pub]",
        "messages": [SYSTEM, {"role": "user", "content": "name[The Eagle], eatType[pub]"}],
        "references": ["The Eagle is a pub.", "A pub called The Eagle."],
    },
    {
        "mr": "name[Zizzi], food[Italian], area[riverside]",
        "messages": [
            SYSTEM,
            {"role": "user", "content": "name[Zizzi], food[Italian], area[riverside]"},
        ],
        "references": ["Zizzi serves Italian food by the river."],
    },
    {
        "mr": "name[Café Rouge], familyFriendly[yes]",
        "messages": [SYSTEM, {"role": "user", "content": "name[Café Rouge], familyFriendly[yes]"}],
        "references": ["Café Rouge is family friendly.", "Kids are welcome at Café Rouge."],
    },
]


@pytest.fixture(scope="module")
def lively(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lively_llama(tmp_path_factory.mktemp("lively") / "model")


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lively_llama(tmp_path_factory.mktemp("other") / "model", seed=7)


def write_refs(path: Path, rows: list) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_eval_scores_one_greedy_reply_per_prompt(lively: Path, tmp_path: Path) -> None:
    refs = write_refs(tmp_path / "refs.jsonl", ROWS)
    out = tmp_path / "eval.json"
    result = run_cli("eval", lively, refs, "--json", out, "--max-tokens", "10")
    assert result.code == 0, result
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["task"] == "generate"
    assert [e["line"] for e in report["examples"]] == [1, 2, 3]
    assert [e["references"] for e in report["examples"]] == [r["references"] for r in ROWS]
    generator = Generator.load(str(lively))
    expected = [generator.chat(r["messages"], max_tokens=10).text for r in ROWS]
    outputs = [e["output"] for e in report["examples"]]
    assert outputs == expected
    metrics = generation_metrics(outputs, [r["references"] for r in ROWS], [r["mr"] for r in ROWS])
    assert report["metrics"] == pytest.approx(metrics)
    assert set(report["metrics"]) == {
        "bleu",
        "rouge_l",
        "examples",
        "slot_coverage",
        "slots_missing",
    }
    assert report["metrics"]["examples"] == 3
    assert report["models"][0]["model"] == str(lively)
    assert "compare" not in report
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| BLEU |" in markdown and "| Slot coverage |" in markdown
    assert "name[Zizzi], food[Italian], area[riverside]" in markdown
    assert "BLEU" in result.stdout and "wrote" in result.stdout


def test_compare_writes_both_models_metrics_and_replies_side_by_side(
    lively: Path, other: Path, tmp_path: Path
) -> None:
    refs = write_refs(tmp_path / "refs.jsonl", ROWS)
    out = tmp_path / "cmp.json"
    result = run_cli(
        "eval", lively, refs, "--json", out, "--max-tokens", "8", "--compare", other
    )  # fmt: skip
    assert result.code == 0, result
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [m["model"] for m in report["models"]] == [str(lively), str(other)]
    assert report["compare"]["model"] == str(other)
    theirs = Generator.load(str(other))
    expected = [theirs.chat(r["messages"], max_tokens=8).text for r in ROWS]
    assert [e["compare_output"] for e in report["examples"]] == expected
    assert [e["output"] for e in report["examples"]] != expected  # two different models
    compare_metrics = generation_metrics(
        expected, [r["references"] for r in ROWS], [r["mr"] for r in ROWS]
    )
    assert report["compare"]["metrics"] == pytest.approx(compare_metrics)
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    header = next(line for line in markdown.splitlines() if line.startswith("| Metric |"))
    assert str(lively) in header and str(other) in header
    for reply in expected:
        assert " ".join(reply.split()).replace("|", "\\|") in markdown


def test_limit_scores_the_first_n_prompts(lively: Path, tmp_path: Path) -> None:
    refs = write_refs(tmp_path / "refs.jsonl", ROWS)
    out = tmp_path / "eval.json"
    result = run_cli("eval", lively, refs, "--json", out, "--max-tokens", "4", "--limit", "2")
    assert result.code == 0, result
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [e["line"] for e in report["examples"]] == [1, 2]
    assert report["metrics"]["examples"] == 2


def test_a_bad_reference_line_exits_2_naming_it_and_writes_nothing(
    lively: Path, tmp_path: Path
) -> None:
    bad = dict(ROWS[1])
    bad["references"] = []
    refs = write_refs(tmp_path / "refs.jsonl", [ROWS[0], bad, ROWS[2]])
    out = tmp_path / "eval.json"
    result = run_cli("eval", lively, refs, "--json", out)
    assert result.code == 2, result
    assert "refs.jsonl:2:" in result.stderr
    assert "references" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_generative_options_are_refused_for_a_classifier_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    refs = write_refs(tmp_path / "refs.jsonl", ROWS)
    result = run_cli("eval", bundle, refs, "--compare", "default-chat", "--limit", "2")
    assert result.code == 2, result
    assert "--compare, --limit apply to generative models only" in result.stderr


def test_classifier_options_are_refused_for_a_generative_model(
    lively: Path, tmp_path: Path
) -> None:
    refs = write_refs(tmp_path / "refs.jsonl", ROWS)
    result = run_cli("eval", lively, refs, "--text-column", "text", "--json", tmp_path / "e.json")
    assert result.code == 2, result
    assert "--text-column apply to classifier bundles only" in result.stderr
    assert not (tmp_path / "e.json").exists()
