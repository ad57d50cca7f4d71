"""What a job's error may say: no traceback, no path on the server.

A job's ``error.message`` and events are read by API clients, who must never see the
server's directories or the insides of a crash. The full story (the training child's output,
tracebacks included) stays in the attempt's log file in the job's directory and in the
worker's log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

# An absolute POSIX path of two or more components (not part of a URL or a word).
_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s'\"`(),;:/]+/)+[^\s'\"`(),;:/]*")
_TRACEBACK_LINE = re.compile(r'^\s*(Traceback \(most recent call last\):|File ".*", line \d+)')
# The last line of a Python traceback: ``package.module.SomeError: message``.
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))(?::|$)")


def scrub_paths(text: str, replacements: Mapping[str, str] | None = None) -> str:
    """``text`` without server paths: ``replacements`` first (e.g. a stored file's path ->
    ``file-abc (train.csv)``), then every other absolute path shortened to its last
    component; traceback lines are dropped."""
    for old in sorted(replacements or {}, key=len, reverse=True):
        text = text.replace(old, (replacements or {})[old])
    lines = [line for line in text.splitlines() if not _TRACEBACK_LINE.match(line)]
    text = "\n".join(lines)
    return _PATH.sub(lambda m: Path(m.group(0)).name or "/", text)


def crash_cause(log_text: str) -> str | None:
    """The exception class a crashed process's output ends with (``SafetensorError``), if
    any: its name only, never its message (which may hold paths or data)."""
    for line in reversed(log_text.strip().splitlines()):
        match = _EXCEPTION_LINE.match(line.strip())
        if match:
            return match.group(1).rsplit(".", 1)[-1]
    return None
