"""A generative fine-tune interrupted after a checkpoint resumes exactly: the same batches,
dropout, learning rates, evaluations and final weights as a run that was never stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.sft_data import conversations, load_tiny

from tuneforge.training.events import EventLog, read_events
from tuneforge.training.sft import SftSettings, train_sft

SETTINGS = SftSettings(
    method="lora",
    lora_dropout=0.1,  # draws random numbers: the RNG state must come back too
    epochs=3,
    batch_size=3,  # 8 conversations: 3 steps per epoch, 9 in all
    learning_rate=1e-2,
    warmup_ratio=0.2,
    eval_every=2,
    precision="fp32",
    device=torch.device("cpu"),
    max_length=128,
    sample_prompts=1,
    sample_max_new_tokens=4,
)


class Crash(Exception):
    pass


def _crash_after_checkpoint(step: int):
    def listener(event: dict) -> None:
        if event["type"] == "checkpoint" and event["step"] == step:
            raise Crash(f"killed after the checkpoint of step {step}")

    return listener


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _adapter(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("crash_at", [2, 3, 4])  # after an evaluation, at an epoch's end
def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(
    tiny_llama: Path, tmp_path: Path, crash_at: int
):
    train, valid = conversations(), conversations()[:3]
    model, tokenizer = load_tiny(tiny_llama)
    whole = train_sft(model, tokenizer, train, valid, SETTINGS)

    checkpoints = tmp_path / "checkpoints"
    log_path = tmp_path / "events.jsonl"
    events = EventLog(log_path, listeners=[_crash_after_checkpoint(crash_at)])
    model, tokenizer = load_tiny(tiny_llama)
    with pytest.raises(Crash):
        train_sft(
            model, tokenizer, train, valid, SETTINGS, events=events, checkpoint_dir=checkpoints
        )
    events.close()

    events = EventLog(log_path)
    model, tokenizer = load_tiny(tiny_llama)
    resumed = train_sft(
        model,
        tokenizer,
        train,
        valid,
        SETTINGS,
        events=events,
        checkpoint_dir=checkpoints,
        resume=True,
    )
    events.close()

    assert resumed.steps == whole.steps == 9
    assert resumed.train_history == whole.train_history
    assert resumed.valid_history == whole.valid_history
    assert resumed.best_step == whole.best_step
    a, b = _adapter(whole.model), _adapter(resumed.model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a)

    lines = read_events(log_path)
    assert [e["step"] for e in lines if e["type"] == "metrics"] == list(range(1, 10))
    assert [e["step"] for e in lines if e["type"] == "resume"] == [crash_at]
    starts = [e["resumed_from"] for e in lines if e["type"] == "start"]
    assert starts == [None, crash_at]
    assert [e["type"] for e in lines][-1] == "summary"


def test_resume_without_a_checkpoint_starts_from_scratch(tiny_llama: Path, tmp_path: Path):
    model, tokenizer = load_tiny(tiny_llama)
    settings = SftSettings(**{**SETTINGS.__dict__, "epochs": 1})
    result = train_sft(
        model, tokenizer, conversations(), None, settings, checkpoint_dir=tmp_path, resume=True
    )
    assert result.steps == 3
    assert (tmp_path / "latest.json").is_file()
