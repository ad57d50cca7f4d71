"""The progress display follows a chat model's training: loss and tokens/s per step, the
validation loss and token accuracy per evaluation."""

from __future__ import annotations

import io

from rich.console import Console

from tuneforge.cli.progress import TrainingProgress


def test_chat_training_events_are_shown():
    buffer = io.StringIO()
    progress = TrainingProgress(Console(file=buffer, width=200, force_terminal=False))
    progress({"type": "start", "total_steps": 2, "resumed_from": None})
    progress({"type": "metrics", "step": 1, "train_loss": 2.5, "tokens_per_s": 321.0})
    progress(
        {
            "type": "eval",
            "step": 1,
            "epoch": 0.5,
            "improved": True,
            "metrics": {"valid_loss": 1.25, "valid_mean_token_accuracy": 0.75},
        }
    )
    progress({"type": "summary", "epochs_trained": 1.0, "epochs_planned": 1, "steps": 2,
              "steps_planned": 2})  # fmt: skip
    text = buffer.getvalue()
    assert "validation loss 1.2500 token accuracy 0.7500" in text
    assert "321 tokens/s" in text and "loss 2.5000" in text
