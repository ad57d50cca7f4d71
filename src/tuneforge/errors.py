"""Errors that tuneforge raises on purpose.

Every error carries what went wrong and how to fix it. The CLI turns an
``InputError`` into one clear message on stderr and exit code 2, and any other
``TuneforgeError`` into exit code 1, never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem found in the user's input.

    Attributes:
        file: The file the problem is in (as the user named it), or "" if none.
        message: What is wrong, in one sentence.
        fix: What the user should do about it.
        line: 1-based line number in the file (row number for Parquet), if known.
        column: The column the problem is in, if any.
    """

    file: str
    message: str
    fix: str = ""
    line: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file or "input"
        if self.line is not None:
            where += f":{self.line}"
        col = f" column '{self.column}':" if self.column else ""
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{where}:{col} {self.message}{fix}"


class TuneforgeError(Exception):
    """Base class; a failure of a run (CLI exit code 1)."""

    exit_code = 1


class InputError(TuneforgeError):
    """Bad input from the user: a file, an option, a path (CLI exit code 2).

    Args:
        message: A one-line summary.
        problems: Every problem found (validation collects all of them, up to a limit).
    """

    exit_code = 2

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        self.problems = list(problems)
        super().__init__(message)

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        return head + "\n" + "\n".join(f"  - {p}" for p in self.problems)
