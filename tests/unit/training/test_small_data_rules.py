"""Early stopping on small data: the minimum training and the patience scaled to the
validation size; the speed measurement restores the model exactly; the slow-run warning."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import sentiment_rows
from tuneforge.data.encode import encode_texts
from tuneforge.models.classifier import build_classifier, load_tokenizer
from tuneforge.training import auto, loop
from tuneforge.training.events import EventLog, read_events
from tuneforge.training.seed import seed_everything
from tuneforge.training.speed import estimate_seconds, measure_training_speed


@pytest.mark.parametrize(
    ("patience", "n_valid", "expected"),
    [(3, 20, 14), (3, 100, 6), (3, 400, 3), (3, 5_000, 3), (0, 20, 0), (1, 0, 1)],
)
def test_patience_grows_as_the_validation_split_shrinks(patience, n_valid, expected):
    assert auto.effective_patience(patience, n_valid) == expected
    if 0 < n_valid < auto.PATIENCE_REFERENCE_VALIDATION and patience:
        assert expected == math.ceil(patience * math.sqrt(400 / n_valid))


def test_min_steps_before_stopping():
    # auto: one epoch and at least 100 steps, never past the planned run
    assert auto.min_steps_before_stopping("auto", 10, 200) == 100
    assert auto.min_steps_before_stopping("auto", 1_000, 3_000) == 1_000
    assert auto.min_steps_before_stopping("auto", 10, 40) == 40
    assert auto.min_steps_before_stopping(2.5, 10, 200) == 25
    assert auto.min_steps_before_stopping(0, 10, 200) == 0


def test_min_epochs_is_validated():
    from tuneforge.config import TrainConfig
    from tuneforge.errors import InputError

    assert TrainConfig(min_epochs=0).min_epochs == 0
    with pytest.raises(InputError, match="min_epochs"):
        TrainConfig(min_epochs=-1)
    with pytest.raises(InputError, match="min_epochs"):
        TrainConfig(min_epochs="soon")


@pytest.fixture()
def tiny_setup(tiny_model: Path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and fair to a busy CPU
    seed_everything(0)
    tokenizer = load_tokenizer(tiny_model)
    rows = sentiment_rows(64)
    encoded = encode_texts(tokenizer, [t for t, _ in rows], 64)
    targets = torch.tensor([0 if label == "negative" else 1 for _, label in rows])
    model = build_classifier(tiny_model, ["negative", "positive"])
    yield model, encoded, targets, tokenizer.pad_token_id
    torch.set_num_threads(threads)


def test_speed_measurement_leaves_weights_and_randomness_exactly_as_they_were(tiny_setup):
    model, encoded, targets, pad_id = tiny_setup
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng_before = torch.get_rng_state().clone()
    speed = measure_training_speed(
        model,
        encoded,
        targets,
        batch_size=8,
        gradient_accumulation=1,
        loss_fn=torch.nn.CrossEntropyLoss(),
        pad_id=pad_id,
        device=torch.device("cpu"),
        autocast_dtype=None,
        learning_rate=1e-2,  # large: any leftover update would show
        weight_decay=0.01,
    )
    assert speed.measured_batches == 3 and speed.tokens_per_s > 0 and speed.optimizer_step_s > 0
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
        assert param.grad is None, name
    assert torch.equal(torch.get_rng_state(), rng_before)
    seconds = estimate_seconds(
        speed,
        train_tokens_per_epoch=10_000,
        epochs=2,
        total_steps=50,
        validation_tokens=1_000,
        evaluations=4,
    )
    expected = 20_000 / speed.tokens_per_s + 50 * speed.optimizer_step_s
    assert seconds > expected  # plus the evaluations


def _settings(**overrides) -> loop.LoopSettings:
    values = dict(
        epochs=3,
        batch_size=8,
        learning_rate=1e-3,
        weight_decay=0.0,
        warmup_ratio=0.0,
        gradient_accumulation=1,
        max_grad_norm=1.0,
        seed=0,
        patience=0,
        eval_every=4,
        checkpoint_every=None,
        device=torch.device("cpu"),
        autocast_dtype=None,
    )
    values.update(overrides)
    return loop.LoopSettings(**values)


def _fit(tiny_setup, tmp_path: Path, settings: loop.LoopSettings, score=lambda: 0.5):
    model, encoded, targets, pad_id = tiny_setup
    events = EventLog(tmp_path / "events.jsonl")
    result = loop.fit(
        model,
        encoded,
        targets,
        settings=settings,
        loss_fn=torch.nn.CrossEntropyLoss(),
        evaluate=lambda: (score(), {"accuracy": 0.5}),
        pad_id=pad_id,
        checkpoint_dir=tmp_path / "checkpoints",
        events=events,
    )
    events.close()
    return result, read_events(tmp_path / "events.jsonl")


def test_early_stopping_waits_for_the_minimum_steps(tiny_setup, tmp_path: Path):
    # A flat score: patience 1 would stop at the second evaluation (step 8) ...
    result, _ = _fit(tiny_setup, tmp_path / "a", _settings(patience=1))
    assert result.stopped_early and result.steps == 8
    # ... but not before min_steps; it stops at the first evaluation past them.
    result, events = _fit(tiny_setup, tmp_path / "b", _settings(patience=1, min_steps=13))
    assert result.stopped_early and result.steps == 16
    assert result.epochs_trained == pytest.approx(16 * 8 / 64)
    assert [e["step"] for e in events if e["type"] == "early_stop"] == [16]


def test_slow_training_is_warned_about_once(tiny_setup, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(loop, "SLOW_WINDOW_SECONDS", 0.0)
    # Expect an impossible speed: every window is "far below" it.
    settings = _settings(epochs=2, expected_tokens_per_s=1e12)
    _, events = _fit(tiny_setup, tmp_path / "slow", settings)
    warnings = [e for e in events if e["type"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["code"] == "slow_training"
    assert warnings[0]["step"] == loop.SLOW_WINDOW_STEPS
    assert "tokens/s" in warnings[0]["message"]
    # At a speed the machine reaches, no warning.
    _, events = _fit(tiny_setup, tmp_path / "fast", _settings(epochs=2, expected_tokens_per_s=1.0))
    assert not [e for e in events if e["type"] == "warning"]
