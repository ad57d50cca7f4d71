"""Interrupt and resume: an interrupted run resumed from its checkpoint ends with exactly the
weights of an uninterrupted run, and a crash never leaves a bundle that looks complete."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import PRECISIONS, run_cli, sentiment_rows, write_csv
from tuneforge import (
    DataConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    finetune_classifier,
)
from tuneforge.bundle import staging_dir
from tuneforge.training import checkpoint as ckpt

CHECKPOINT_EVERY = 5
INTERRUPT_AT = CHECKPOINT_EVERY + 2  # after the checkpoint and after an evaluation (step 6)


def _config(
    train: Path, output: Path, model: Path, precision: str = "auto", **overrides
) -> RunConfig:
    return RunConfig(
        data=DataConfig(train=str(train)),
        output=str(output),
        model=ModelConfig(name=str(model)),
        method=MethodConfig(name="full"),
        train=TrainConfig(
            epochs=4,
            batch_size=16,
            learning_rate=1e-3,
            seed=7,
            patience=0,
            num_threads=1,
            precision=precision,
            checkpoint_every=CHECKPOINT_EVERY,
            # The best checkpoint by validation loss keeps moving late in training, so the
            # bundle holds weights from after the interruption.
            selection_metric="log_loss",
        ),
        **overrides,
    )


def _events(bundle: Path) -> list[dict]:
    return [json.loads(line) for line in (bundle / "events.jsonl").read_text().splitlines()]


def _interrupt_at(step: int):
    def listener(event: dict) -> None:
        if event["type"] == "step" and event["step"] == step:
            raise KeyboardInterrupt

    return listener


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("resume-data") / "train.csv", sentiment_rows(120))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_resume_reproduces_the_uninterrupted_run(
    tiny_model: Path, train_csv: Path, tmp_path: Path, precision: str
) -> None:
    run_a = tmp_path / "a"
    finetune_classifier(_config(train_csv, run_a, tiny_model, precision))

    run_b = tmp_path / "b"
    config_b = _config(train_csv, run_b, tiny_model, precision)
    with pytest.raises(KeyboardInterrupt):
        finetune_classifier(config_b, listeners=[_interrupt_at(INTERRUPT_AT)])
    assert not run_b.exists()
    stage = staging_dir(run_b)
    checkpoints = stage / "checkpoints"
    assert (checkpoints / f"step-{CHECKPOINT_EVERY:09d}" / "state.json").is_file()
    assert json.loads((checkpoints / "latest.json").read_text())["step"] == CHECKPOINT_EVERY
    assert not (stage / "bundle").exists()
    # A crash in the middle of writing the next checkpoint leaves an orphan temp dir.
    orphan = checkpoints / ".tmp-crashed"
    orphan.mkdir()
    (orphan / "state.json").write_text("{not json")

    result = finetune_classifier(dataclasses.replace(config_b, resume=True))
    assert result.bundle == run_b
    assert not stage.exists()

    events_a, events_b = _events(run_a), _events(run_b)
    resumes = [e for e in events_b if e["type"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["step"] == CHECKPOINT_EVERY
    steps_b = [e["step"] for e in events_b if e["type"] == "step"]
    assert steps_b == list(range(1, len(steps_b) + 1)), "duplicated or missing step events"
    # The whole trajectory is the same: every step's loss and every evaluation.
    loss_a = [(e["step"], e["loss"]) for e in events_a if e["type"] == "step"]
    loss_b = [(e["step"], e["loss"]) for e in events_b if e["type"] == "step"]
    assert loss_a == loss_b
    evals_a = [(e["step"], e["score"]) for e in events_a if e["type"] == "eval"]
    evals_b = [(e["step"], e["score"]) for e in events_b if e["type"] == "eval"]
    assert evals_a == evals_b
    summary_a, summary_b = events_a[-1], events_b[-1]
    assert summary_a["type"] == summary_b["type"] == "summary"
    assert summary_a["best_step"] == summary_b["best_step"]
    assert summary_b["best_step"] > INTERRUPT_AT, "best weights predate the interruption"

    weights_a = load_file(run_a / "model" / "model.safetensors")
    weights_b = load_file(run_b / "model" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name, tensor in weights_a.items():
        assert torch.equal(tensor, weights_b[name]), f"{name} differs after resume"
    assert json.loads((run_a / "eval.json").read_text()) == json.loads(
        (run_b / "eval.json").read_text()
    )


def test_cli_interrupt_then_resume(
    tiny_model: Path, train_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C exits 130 and keeps the checkpoints; ``--resume`` then finishes the bundle."""
    from tuneforge.cli import progress

    output = tmp_path / "run"
    args = ["train", train_csv, "--model", tiny_model, "--output", output]
    args += ["--epochs", "2", "--threads", "1"]
    original = progress.TrainingProgress.__call__

    def interrupting(self, event: dict) -> None:
        original(self, event)
        if event["type"] == "step" and event["step"] == 4:  # after the eval at step 3
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.TrainingProgress, "__call__", interrupting)
    result = run_cli(*args)
    assert result.code == 130, result
    assert "--resume" in result.stderr and "Traceback" not in result.stderr
    assert not output.exists()
    assert ckpt.latest_checkpoint(staging_dir(output) / "checkpoints") is not None

    monkeypatch.setattr(progress.TrainingProgress, "__call__", original)
    result = run_cli(*args, "--resume", "--quiet")
    assert result.code == 0, result
    assert (output / "tuneforge.json").is_file()
    assert not staging_dir(output).exists()
    kinds = [e["type"] for e in _events(output)]
    assert kinds.count("resume") == 1 and kinds[-1] == "summary"


def test_resume_without_a_checkpoint_exits_2(
    tiny_model: Path, train_csv: Path, tmp_path: Path
) -> None:
    output = tmp_path / "run"
    result = run_cli(
        "train", train_csv, "--model", tiny_model, "--output", output, "--resume", "--quiet"
    )
    assert result.code == 2, result
    assert "no checkpoint found" in result.stderr and "start without --resume" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists() and not staging_dir(output).exists()


def test_a_crash_while_writing_the_bundle_leaves_the_old_bundle(
    tiny_model: Path, train_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "run"
    config = _config(train_csv, output, tiny_model)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1))
    finetune_classifier(config)
    before = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}

    import tuneforge.recipes.finetune_classifier as recipe

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    # The model card is written last, after the weights and the manifest are staged.
    monkeypatch.setattr(recipe, "render_model_card", crash)
    result = run_cli(
        "train", train_csv, "--model", tiny_model, "--output", output, "--overwrite",
        "--epochs", "1", "--threads", "1", "--quiet",
    )  # fmt: skip
    assert result.code == 1, result
    assert "error: RuntimeError: disk full" in result.stderr
    assert "Traceback" not in result.stderr
    after = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert after == before, "the old bundle was touched by a run that failed"
    # The half-written bundle stays in the staging dir, never at the output path.
    assert (staging_dir(output) / "bundle" / "tuneforge.json").is_file()
    assert not (staging_dir(output) / "bundle" / "README.md").exists()

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="disk full"):
        finetune_classifier(dataclasses.replace(config, output=str(fresh)))
    assert not fresh.exists()


def test_latest_checkpoint_ignores_orphan_temp_dirs(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    directory = tmp_path / "checkpoints"
    assert ckpt.latest_checkpoint(directory) is None

    rng = {"torch_cpu": torch.get_rng_state()}
    first = ckpt.save_checkpoint(
        directory, step=3, model=model, optimizer=optimizer, rng=rng, state={"step": 3}
    )
    orphan = directory / ".tmp-abc123"  # a save that crashed before its rename
    orphan.mkdir()
    (orphan / "state.json").write_text(json.dumps({"step": 4}))
    (orphan / "trainable.safetensors").write_bytes(b"\x00" * 10)
    assert ckpt.latest_checkpoint(directory) == first

    second = ckpt.save_checkpoint(
        directory, step=6, model=model, optimizer=optimizer, rng=rng, state={"step": 6}
    )
    assert ckpt.latest_checkpoint(directory) == second
    assert not first.exists()  # keep=1
    assert orphan.exists()  # never mistaken for a checkpoint, never deleted as one
    fresh = torch.nn.Linear(3, 2)
    state, _ = ckpt.load_checkpoint(second, fresh, torch.optim.AdamW(fresh.parameters()))
    assert state == {"step": 6}
    assert torch.equal(fresh.weight, model.weight)
