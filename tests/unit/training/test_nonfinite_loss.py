"""A loss that becomes inf or nan stops training at that step, with a message that says what
to change; nothing after it trains on garbage, and the run's staging directory is not kept."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import sentiment_rows
from tuneforge.data.encode import encode_texts
from tuneforge.errors import InputError
from tuneforge.models.classifier import build_classifier, load_tokenizer
from tuneforge.training import loop
from tuneforge.training.events import EventLog, read_events
from tuneforge.training.seed import seed_everything


def _settings(**overrides) -> loop.LoopSettings:
    values = dict(
        epochs=2,
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


class LossTurnsTo:
    """Cross-entropy, until call ``at`` (1-based) where it returns ``value`` (inf or nan)."""

    def __init__(self, value: float, at: int) -> None:
        self.value, self.at, self.calls = value, at, 0
        self.ce = torch.nn.CrossEntropyLoss()

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = self.ce(logits, targets)
        return loss * self.value if self.calls == self.at else loss


@pytest.mark.parametrize(
    ("value", "accumulation"), [(math.inf, 1), (math.nan, 2)], ids=["inf", "nan, accumulating"]
)
def test_a_non_finite_loss_stops_the_run_at_that_step(
    tiny_model: Path, tmp_path: Path, value: float, accumulation: int
):
    torch.set_num_threads(1)
    seed_everything(0)
    tokenizer = load_tokenizer(tiny_model)
    rows = sentiment_rows(64)
    encoded = encode_texts(tokenizer, [t for t, _ in rows], 64)
    targets = torch.tensor([0 if label == "negative" else 1 for _, label in rows])
    model = build_classifier(tiny_model, ["negative", "positive"])
    loss_fn = LossTurnsTo(value, at=5)  # the 5th batch
    events = EventLog(tmp_path / "events.jsonl")
    with pytest.raises(loop.TrainingDivergedError) as caught:
        loop.fit(
            model,
            encoded,
            targets,
            settings=_settings(gradient_accumulation=accumulation),
            loss_fn=loss_fn,
            evaluate=lambda: (0.5, {"accuracy": 0.5}),
            pad_id=tokenizer.pad_token_id,
            checkpoint_dir=tmp_path / "checkpoints",
            events=events,
        )
    events.close()
    assert loss_fn.calls == 5  # stopped at once: no batch after the bad one
    error = caught.value
    assert isinstance(error, InputError)  # the CLI's exit 2; a job fails without retry
    step = 5 if accumulation == 1 else 3
    message = str(error)
    assert f"step {step}" in message and ("inf" in message or "nan" in message), message
    assert "learning_rate" in message  # what to change
    assert error.job_error_code == "training_diverged"
    steps = [e["step"] for e in read_events(tmp_path / "events.jsonl") if e["type"] == "step"]
    assert steps == list(range(1, step))
    for param in model.parameters():
        assert torch.isfinite(param).all()  # the bad step was never applied
