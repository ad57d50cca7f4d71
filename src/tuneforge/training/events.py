"""Training events as JSON lines: every step's metrics, evaluations, the summary.

The file is the contract with the API and dashboard: one JSON object per line with a
``type`` (``start``, ``step``, ``eval``, ``checkpoint``, ``resume``, ``early_stop``,
``summary``) and ``time`` (Unix seconds).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Listener = Callable[[dict[str, Any]], None]


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

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Write one event and pass it to the listeners."""
        event = {"type": type_, "time": round(time.time(), 3), **_clean(fields)}
        self._fh.write(json.dumps(event, allow_nan=False) + "\n")
        self._fh.flush()
        for listener in self.listeners:
            listener(event)
        return event

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
