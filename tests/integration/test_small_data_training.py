"""What a run says about itself: the plan before training (measured speed, resolved
``auto``), the epochs actually trained, warnings when the model barely moved, and the data
report's checks (duplicates, leakage, conflicting labels) as warnings or as a stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli, sentiment_rows, write_csv
from tuneforge import (
    DataConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    finetune_classifier,
)
from tuneforge.bundle import staging_dir
from tuneforge.data.checks import DataCheckError


def _events(bundle: Path) -> list[dict]:
    return [json.loads(line) for line in (bundle / "events.jsonl").read_text().splitlines()]


def test_small_run_plans_trains_past_the_minimum_and_reports_it(tiny_model: Path, tmp_path):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(200, seed=3))
    seen: list[dict] = []
    config = RunConfig(
        data=DataConfig(train=str(train)),
        output=str(tmp_path / "bundle"),
        model=ModelConfig(name=str(tiny_model)),
        method=MethodConfig(freeze_embeddings=False),  # the tiny model's are random
        # auto epochs and batch size (20 epochs of 10 steps on 160 rows), default patience
        train=TrainConfig(learning_rate=1e-3, num_threads=1),
    )
    result = finetune_classifier(config, listeners=[seen.append])

    kinds = [e["type"] for e in seen]
    assert kinds.index("plan") < kinds.index("start") < kinds.index("step")
    plan = seen[kinds.index("plan")]
    assert plan["epochs"] == 20 and plan["steps_per_epoch"] == 10 and plan["total_steps"] == 200
    assert plan["batch_size"] == 16 and plan["threads"] == 1 and plan["method"] == "full"
    assert plan["precision"] in ("bf16", "fp32") and plan["max_length"] >= 16
    assert plan["validation_examples"] == 20
    assert plan["patience"] == 14 and plan["patience_configured"] == 3  # 3 x sqrt(400 / 20)
    assert plan["min_steps_before_stopping"] == 100
    assert plan["measured"]["tokens_per_s"] > 0 and plan["estimated_seconds"] > 0

    summary = seen[-1]
    assert summary["type"] == "summary"
    assert summary["steps"] >= 100  # early stopping cannot fire before step 100
    assert summary["epochs_planned"] == 20
    assert summary["epochs_trained"] == pytest.approx(summary["steps"] / 10, abs=0.01)
    assert {"macro_f1", "ece", "accuracy"} <= set(summary["test"])
    assert result.metrics["test"]["accuracy"] >= 0.9
    assert not [e for e in seen if e["type"] == "warning" and e["code"] == "barely_moved"]

    training = json.loads((result.bundle / "training.json").read_text())
    assert training["plan"] == {k: v for k, v in plan.items() if k not in ("type", "time")}
    assert training["trained"]["epochs_trained"] == summary["epochs_trained"]
    run_config = json.loads((result.bundle / "run_config.json").read_text())
    assert run_config["train"]["epochs"] == 20 and run_config["train"]["min_epochs"] == 10
    card = (result.bundle / "README.md").read_text()
    assert f"Trained {summary['epochs_trained']:g} of 20 planned epochs" in card
    assert "estimated" in card and "thread(s)" in card


def _problem_files(tmp_path: Path) -> tuple[Path, Path]:
    rows = sentiment_rows(120, seed=4)
    rows += [rows[0], rows[0]]  # two exact duplicates (the conflict below makes a third)
    rows.append((rows[1][0], "negative" if rows[1][1] == "positive" else "positive"))  # conflict
    test_rows = [*sentiment_rows(30, seed=5), rows[2]]  # one test row leaks from train
    return write_csv(tmp_path / "train.csv", rows), write_csv(tmp_path / "test.csv", test_rows)


def test_cli_prints_the_plan_and_warns_about_data_and_a_model_that_barely_moved(
    tiny_model: Path, tmp_path
):
    train, test = _problem_files(tmp_path)
    bundle = tmp_path / "bundle"
    result = run_cli(
        "train", train, "--test", test, "--model", tiny_model, "--output", bundle,
        "--epochs", "1", "--learning-rate", "1e-12", "--threads", "1",
    )  # fmt: skip
    assert result.code == 0, result
    err = " ".join(result.stderr.split())  # rich wraps long lines
    assert "plan: 1 epochs" in err and "thread(s)" in err and "measured here" in err
    assert "warning: train: 3 duplicate row(s)" in err
    assert "warning: leakage: 1 test row(s) also occur in train" in err
    assert "text(s) carry conflicting labels" in err
    assert "warning: the model barely moved" in err

    warnings = {e["code"]: e for e in _events(bundle) if e["type"] == "warning"}
    assert {"duplicates", "leakage", "conflicting_labels", "barely_moved"} <= set(warnings)
    dup = warnings["duplicates"]
    assert dup["count"] == 3 and dup["split"] == "train"
    assert dup["example"]["lines"] == [2, 122, 123]  # header is line 1
    assert warnings["leakage"]["count"] == 1 and warnings["leakage"]["splits"] == ["train", "test"]
    conflict = warnings["conflicting_labels"]["example"]["occurrences"]
    assert {tuple(o["labels"]) for o in conflict} == {("positive",), ("negative",)}
    assert "uniform guess over 2 classes" in warnings["barely_moved"]["message"]
    training = json.loads((bundle / "training.json").read_text())
    assert {w["code"] for w in training["warnings"]} == set(warnings)
    assert "Warning (barely_moved)" in (bundle / "README.md").read_text()


def test_data_checks_off_emits_no_data_warnings(tiny_model: Path, tmp_path):
    train, test = _problem_files(tmp_path)
    events: list[dict] = []
    config = RunConfig(
        data=DataConfig(train=str(train), test=str(test), quality_checks="off"),
        output=str(tmp_path / "bundle"),
        model=ModelConfig(name=str(tiny_model)),
        train=TrainConfig(epochs=1, learning_rate=1e-3, num_threads=1),
    )
    finetune_classifier(config, listeners=[events.append])
    codes = {e["code"] for e in events if e["type"] == "warning"}
    assert not codes & {"duplicates", "leakage", "conflicting_labels"}


def test_data_checks_as_errors_stop_before_anything_is_written(tiny_model: Path, tmp_path):
    train, test = _problem_files(tmp_path)
    output = tmp_path / "bundle"
    config = RunConfig(
        data=DataConfig(train=str(train), test=str(test), quality_checks="error"),
        output=str(output),
        model=ModelConfig(name=str(tiny_model)),
        train=TrainConfig(epochs=1, num_threads=1),
    )
    with pytest.raises(DataCheckError) as info:
        finetune_classifier(config)
    assert info.value.exit_code == 2  # an InputError: the CLI exits 2
    messages = [str(p) for p in info.value.problems]
    assert len(messages) == 3
    assert any("3 duplicate row(s)" in m and "lines 2, 122, 123" in m for m in messages)
    assert any("leakage" in m for m in messages)
    assert not output.exists() and not staging_dir(output).exists()


def test_quality_checks_option_is_validated():
    from tuneforge.errors import InputError

    with pytest.raises(InputError, match="quality_checks must be one of warn, error, off"):
        DataConfig(train="x.csv", quality_checks="strict")
