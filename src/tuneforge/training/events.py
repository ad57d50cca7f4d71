"""Training events as JSON lines: every step's metrics, evaluations, the summary.

The file is the contract with the API and dashboard: one JSON object per line with a
``type`` (``plan``, ``warning``, ``start``, ``step``, ``metrics``, ``eval``, ``samples``,
``checkpoint``, ``resume``, ``early_stop``, ``summary``) and ``time`` (Unix seconds). Each
type is a dataclass here (``EVENT_TYPES``); ``EventLog.emit`` checks every event against its
dataclass, ``parse_event`` reads one back.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

Listener = Callable[[dict[str, Any]], None]

EVENT_TYPES: dict[str, type[Event]] = {}


@dataclass(frozen=True, kw_only=True)
class Event:
    """One line of ``events.jsonl``. Subclasses are the event types, registered by name with
    ``@event_type("name")``; their fields are the line's keys after ``type`` and ``time``.

    To add an event: a frozen, keyword-only dataclass subclass here, decorated with
    ``@event_type``; readers that do not know it skip it by its ``type``.

    Attributes:
        time: Unix seconds (set when the event is written).
    """

    type: ClassVar[str]
    time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON-lines form: ``type``, ``time``, then the fields (non-finite floats as
        null)."""
        return {
            "type": self.type,
            **{f.name: _clean(getattr(self, f.name)) for f in dataclass_fields(self)},
        }


E = TypeVar("E", bound=type[Event])


def event_type(name: str) -> Callable[[E], E]:
    """Register an Event subclass under its ``type`` name."""

    def register(cls: E) -> E:
        if name in EVENT_TYPES:
            raise ValueError(f"event type {name!r} is registered twice")
        cls.type = name
        EVENT_TYPES[name] = cls
        return cls

    return register


def make_event(type_: str, **fields: Any) -> Event:
    """The typed event for a type name and its fields.

    Raises:
        ValueError: An unregistered type, or fields that are not that type's.
    """
    cls = EVENT_TYPES.get(type_)
    if cls is None:
        raise ValueError(
            f"unknown training event type {type_!r}: add a dataclass for it in "
            "tuneforge/training/events.py"
        )
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"training event {type_!r}: {exc}") from None


def parse_event(line: dict[str, Any]) -> Event:
    """A JSON-lines event (a dict with ``type``) as its typed event.

    Raises:
        ValueError: No ``type``, an unknown type, or keys that are not that type's.
    """
    fields = dict(line)
    type_ = fields.pop("type", None)
    if not isinstance(type_, str):
        raise ValueError(f"training event without a type: {line!r}")
    return make_event(type_, **fields)


@event_type("start")
@dataclass(frozen=True, kw_only=True)
class StartEvent(Event):
    """Training (re)starts: the plan it runs."""

    total_steps: int
    steps_per_epoch: int
    epochs: int
    batch_size: int
    learning_rate: float
    train_examples: int
    resumed_from: int | None = None


@event_type("resume")
@dataclass(frozen=True, kw_only=True)
class ResumeEvent(Event):
    """Training continues from a checkpoint."""

    step: int
    epoch: int
    checkpoint: str


@event_type("step")
@dataclass(frozen=True, kw_only=True)
class StepEvent(Event):
    """One optimizer step."""

    step: int
    epoch: float
    loss: float | None
    lr: float
    grad_norm: float | None
    examples_per_s: float
    total_steps: int


@event_type("metrics")
@dataclass(frozen=True, kw_only=True)
class MetricsEvent(Event):
    """One optimizer step of generative fine-tuning, with the metrics OpenAI reports for it.

    Attributes:
        train_loss: Mean cross-entropy over the step's trained (assistant) tokens.
        train_mean_token_accuracy: Share of those tokens the model predicted (argmax).
        trained_tokens: Tokens that carried loss in this step.
        tokens_per_s: Tokens processed per second in this step (padding excluded).
    """

    step: int
    epoch: float
    train_loss: float | None
    train_mean_token_accuracy: float
    lr: float
    grad_norm: float | None
    trained_tokens: int
    tokens_per_s: float
    total_steps: int


@event_type("eval")
@dataclass(frozen=True, kw_only=True)
class EvalEvent(Event):
    """An evaluation of the model on a split."""

    split: str
    step: int
    epoch: float
    score: float | None
    improved: bool
    metrics: dict[str, Any]


@event_type("samples")
@dataclass(frozen=True, kw_only=True)
class SamplesEvent(Event):
    """Greedy replies of the model being fine-tuned to a few fixed validation prompts, at
    an evaluation.

    Attributes:
        samples: One object per prompt: ``line`` (of the validation file), ``prompt`` (the
            messages before the reply), ``reference`` (the reply in the file) and
            ``completion`` (the model's reply).
    """

    step: int
    samples: list[dict[str, Any]]


@event_type("task")
@dataclass(frozen=True, kw_only=True)
class TaskEvent(Event):
    """Which task the run trains (``classify`` or ``generate``) and why.

    Attributes:
        task: ``classify`` or ``generate``.
        reason: The rule's numbers and verdict, or "as requested".
    """

    task: str
    reason: str


@event_type("checkpoint")
@dataclass(frozen=True, kw_only=True)
class CheckpointEvent(Event):
    """A complete, resumable checkpoint was written."""

    step: int
    path: str


@event_type("early_stop")
@dataclass(frozen=True, kw_only=True)
class EarlyStopEvent(Event):
    """Training stopped: validation stopped improving."""

    step: int
    best_step: int


@event_type("plan")
@dataclass(frozen=True, kw_only=True)
class PlanEvent(Event):
    """What the run will do, every ``auto`` resolved, before the first step; the time
    estimate comes from a measurement of the real model on this machine (``measured``)."""

    epochs: int | float
    total_steps: int
    steps_per_epoch: int
    batch_size: int
    gradient_accumulation: int
    learning_rate: float
    head_learning_rate: float | None
    head_lr_multiplier: float
    max_length: int
    truncated_texts: int
    method: str
    precision: str
    threads: int
    threads_reason: str
    train_examples: int
    validation_examples: int
    eval_every: int
    evaluations: int
    patience: int
    patience_configured: int
    min_steps_before_stopping: int
    estimated_seconds: float
    measured: dict[str, Any]


@event_type("warning")
@dataclass(frozen=True, kw_only=True)
class WarningEvent(Event):
    """Something the user should know about the data or the run; ``code`` says what
    (``duplicates``, ``leakage``, ``conflicting_labels``, ``barely_moved``,
    ``slow_training``); the other fields are set where they apply."""

    code: str
    message: str
    split: str | None = None
    splits: list[str] | None = None
    count: int | None = None
    example: dict[str, Any] | None = None
    step: int | None = None
    tokens_per_s: float | None = None
    expected_tokens_per_s: float | None = None


@event_type("summary")
@dataclass(frozen=True, kw_only=True)
class SummaryEvent(Event):
    """The run's outcome: steps, speed, headline metrics of the best checkpoint."""

    best_step: int
    steps: int
    epochs_planned: int | float
    epochs_trained: float
    steps_planned: int
    stopped_early: bool
    train_seconds: float
    train_examples_per_s: float
    trained_tokens: int
    validation: dict[str, Any]
    test: dict[str, Any]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class EventLog:
    """Append-only JSON-lines event file with in-process listeners.

    Args:
        path: The ``events.jsonl`` file (created if missing).
        listeners: Callables that receive every event (a progress bar, a job heartbeat).
    """

    def __init__(self, path: Path, listeners: list[Listener] | None = None) -> None:
        self.path = path
        self.listeners = list(listeners or [])
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")

    def emit(self, event: Event | str, **fields: Any) -> dict[str, Any]:
        """Write one event and pass it (as its JSON dict) to the listeners.

        Args:
            event: A typed event, or a registered type name with ``fields`` (checked
                against that type's dataclass).

        Raises:
            ValueError: An unknown type name or fields that are not that type's.
        """
        if isinstance(event, str):
            event = make_event(event, **fields)
        elif fields:
            raise TypeError("pass fields only with an event type name")
        line = event.to_dict()
        line["time"] = round(time.time(), 3)
        self._fh.write(json.dumps(line, allow_nan=False) + "\n")
        self._fh.flush()
        for listener in self.listeners:
            listener(line)
        return line

    def count(self) -> int:
        """Number of events written so far."""
        self._fh.flush()
        with self.path.open("rb") as fh:
            return sum(1 for _ in fh)

    def truncate(self, n_events: int) -> None:
        """Keep only the first ``n_events`` lines (on resume: drop what the crash lost)."""
        self._fh.close()
        lines = self.path.read_bytes().splitlines(keepends=True)[:n_events]
        self.path.write_bytes(b"".join(lines))
        self._fh = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        """Flush and close the file."""
        self._fh.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    """Read an events file, skipping a torn last line."""
    events = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return events
