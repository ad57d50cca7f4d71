"""``CheckpointKeeper``: the last N checkpoints' weights outlive the loop's own pruning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tuneforge.recipes.checkpoint_bundles import CheckpointKeeper


def _save(checkpoints: Path, step: int) -> str:
    """What ``training.checkpoint.save_checkpoint`` leaves (keeping only the newest)."""
    for old in checkpoints.glob("step-*"):
        shutil.rmtree(old)
    folder = checkpoints / f"step-{step:09d}"
    folder.mkdir(parents=True)
    save_file({"w": torch.full((2,), float(step))}, folder / "trainable.safetensors")
    return folder.name


def _run(keeper: CheckpointKeeper, checkpoints: Path, steps: range) -> None:
    for step in steps:
        keeper({"type": "step", "step": step, "loss": 0.5})
        keeper({"type": "eval", "step": step, "metrics": {"macro_f1": step / 10, "extra": [1]}})
        keeper({"type": "checkpoint", "step": step, "path": _save(checkpoints, step)})


def test_keeps_the_last_n_with_their_weights_and_metrics(tmp_path: Path):
    checkpoints = tmp_path / "checkpoints"
    keeper = CheckpointKeeper(checkpoints, keep=3)
    _run(keeper, checkpoints, range(1, 7))
    kept = keeper.kept(last_step=6)
    assert [p.name for p in kept] == [f"step-{s:09d}" for s in (4, 5, 6)]
    for path, step in zip(kept, (4, 5, 6), strict=True):
        assert load_file(path / "trainable.safetensors")["w"].tolist() == [step, step]
        info = json.loads((path / "checkpoint.json").read_text())
        assert info == {"step": step, "metrics": {"macro_f1": step / 10}, "metrics_step": step}
    assert len(list(keeper.kept_dir.iterdir())) == 3  # older ones are gone from disk


def test_a_resumed_run_keeps_the_checkpoint_it_resumed_from(tmp_path: Path):
    checkpoints = tmp_path / "checkpoints"
    first = CheckpointKeeper(checkpoints, keep=3)
    _run(first, checkpoints, range(1, 5))
    # the attempt died after saving step 5's checkpoint, before its event reached the keeper
    name = _save(checkpoints, 5)
    again = CheckpointKeeper(checkpoints, keep=3)  # the next attempt, same stage directory
    again({"type": "resume", "step": 5, "checkpoint": name})
    _run(again, checkpoints, range(6, 7))
    kept = again.kept(last_step=6)
    assert [p.name for p in kept] == [f"step-{s:09d}" for s in (4, 5, 6)]
    assert load_file(kept[1] / "trainable.safetensors")["w"].tolist() == [5, 5]
    assert json.loads((kept[1] / "checkpoint.json").read_text())["metrics"] == {}


def test_a_resume_forgets_what_was_kept_past_its_step(tmp_path: Path):
    checkpoints = tmp_path / "checkpoints"
    first = CheckpointKeeper(checkpoints, keep=3)
    _run(first, checkpoints, range(1, 6))
    again = CheckpointKeeper(checkpoints, keep=3)
    again({"type": "resume", "step": 4, "checkpoint": "step-000000004"})
    assert [p.name for p in again.kept(last_step=9)] == ["step-000000003", "step-000000004"]


def test_keep_zero_keeps_nothing(tmp_path: Path):
    checkpoints = tmp_path / "checkpoints"
    keeper = CheckpointKeeper(checkpoints, keep=0)
    _run(keeper, checkpoints, range(1, 3))
    assert keeper.kept(last_step=2) == [] and not keeper.kept_dir.exists()
