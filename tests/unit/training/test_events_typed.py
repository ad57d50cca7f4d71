"""Typed training events: each type is a dataclass, the JSON-lines form is unchanged, and a
written file reads back as the same typed events."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from tuneforge.jobs.results import metrics_csv
from tuneforge.training import events as ev
from tuneforge.training.events import (
    EVENT_TYPES,
    CheckpointEvent,
    EvalEvent,
    EventLog,
    StepEvent,
    event_type,
    parse_event,
    read_events,
)

STEP = dict(
    step=3,
    epoch=0.75,
    loss=0.6931,
    lr=2e-5,
    grad_norm=None,
    examples_per_s=41.5,
    total_steps=12,
)


def test_every_event_round_trips(tmp_path: Path):
    seen: list[dict] = []
    log = EventLog(tmp_path / "events.jsonl", listeners=[seen.append])
    written = [
        log.emit(
            "start",
            total_steps=12,
            steps_per_epoch=4,
            epochs=3,
            batch_size=8,
            learning_rate=5e-5,
            train_examples=30,
        ),
        log.emit(
            "warning",
            code="duplicates",
            message="train: 2 duplicate row(s)",
            split="train",
            count=2,
            example={"lines": [2, 9]},
        ),
        log.emit("resume", step=4, epoch=1, checkpoint="step-000004"),
        log.emit(StepEvent(**STEP)),
        log.emit(
            "eval",
            split="validation",
            step=4,
            epoch=1.0,
            score=0.8,
            improved=True,
            metrics={"accuracy": 0.8, "log_loss": math.nan},
        ),
        log.emit(CheckpointEvent(step=4, path="step-000004")),
        log.emit("early_stop", step=8, best_step=4),
        log.emit(
            "summary",
            best_step=4,
            steps=8,
            epochs_planned=3,
            epochs_trained=2.0,
            steps_planned=12,
            stopped_early=True,
            train_seconds=1.5,
            train_examples_per_s=40.0,
            trained_tokens=900,
            validation={"accuracy": 0.8},
            test={"accuracy": 0.7},
        ),
    ]
    log.close()
    assert seen == written
    lines = read_events(tmp_path / "events.jsonl")
    assert lines == written
    assert [line["type"] for line in lines] == [
        "start",
        "warning",
        "resume",
        "step",
        "eval",
        "checkpoint",
        "early_stop",
        "summary",
    ]
    # the JSON-lines form: type, time, then the fields; non-finite floats as null
    assert list(lines[3]) == ["type", "time", *STEP]
    assert lines[4]["metrics"]["log_loss"] is None
    assert lines[1]["count"] == 2 and lines[1]["step"] is None  # fields that don't apply: null
    typed = [parse_event(line) for line in lines]
    assert typed[3] == StepEvent(time=lines[3]["time"], **STEP)
    assert isinstance(typed[4], EvalEvent) and typed[4].metrics["accuracy"] == 0.8
    assert [parse_event(e.to_dict()) for e in typed] == typed
    # existing readers of the file keep working
    csv = metrics_csv(tmp_path / "events.jsonl").splitlines()
    assert csv[1].startswith("3,0.75,0.6931,")


def test_wrong_fields_and_unknown_types_are_refused(tmp_path: Path):
    log = EventLog(tmp_path / "events.jsonl")
    with pytest.raises(ValueError, match=r"'step'.*unexpected keyword argument 'lost'"):
        log.emit("step", **STEP, lost=1)
    with pytest.raises(ValueError, match=r"'checkpoint'.*missing"):
        log.emit("checkpoint", step=1)
    with pytest.raises(ValueError, match="unknown training event type 'progress'"):
        log.emit("progress", epochs=3)
    with pytest.raises(ValueError, match="without a type"):
        parse_event({"step": 1})
    log.close()
    assert (tmp_path / "events.jsonl").read_text() == ""  # nothing half-written


def test_a_new_event_type_is_one_small_dataclass(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(ev, "EVENT_TYPES", dict(EVENT_TYPES))

    @event_type("note")
    @dataclass(frozen=True, kw_only=True)
    class NoteEvent(ev.Event):
        text: str

    log = EventLog(tmp_path / "events.jsonl")
    line = log.emit("note", text="hello")
    log.close()
    assert json.loads((tmp_path / "events.jsonl").read_text()) == line
    assert parse_event(line) == NoteEvent(time=line["time"], text="hello")
    with pytest.raises(ValueError, match="registered twice"):
        event_type("note")(NoteEvent)
