"""Which task a chat file is for: classification (labels) or generation (free text).

The rule, applied to each example's final assistant reply (a labelled table's label):

    **classify** when the replies look like labels — at most ``MAX_CLASSES`` (100) distinct
    replies, each at most ``MAX_LABEL_CHARS`` (50) characters, and each distinct reply seen
    on average at least ``MIN_MEAN_REPEATS`` (2) times (distinct replies <= examples / 2);
    **generate** otherwise.

A banking-intent set (77 short intents over 10,000 examples) is a classification set; a
data-to-text set (thousands of different sentences) is a generation set. Replies are
compared exactly, after stripping surrounding whitespace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tuneforge.data.chat_sets import ChatSet
from tuneforge.data.tables import Table
from tuneforge.errors import InputError

Task = Literal["classify", "generate"]
TASK_CHOICES = ("auto", "classify", "generate")
"""What a user may ask for: ``auto`` applies the rule."""

MAX_CLASSES = 100
"""Most distinct final replies a classification set has."""

MAX_LABEL_CHARS = 50
"""Longest final reply (in characters) a classification set has."""

MIN_MEAN_REPEATS = 2
"""Fewest examples per distinct reply, on average, in a classification set."""


@dataclass(frozen=True)
class TaskChoice:
    """The task chosen for a file and why.

    Attributes:
        task: ``"classify"`` or ``"generate"``.
        reason: A sentence with the numbers the rule looked at, e.g. "412 distinct final
            replies among 500 examples ...: generate".
        examples: Examples looked at.
        distinct: Distinct final replies.
        longest: The longest final reply, in characters.
    """

    task: Task
    reason: str
    examples: int
    distinct: int
    longest: int


def final_replies(data: ChatSet | Table | Sequence[str]) -> list[str]:
    """Each example's final assistant reply: the last assistant turn of a conversation, a
    table's label (several labels joined with ``|``), or the strings given."""
    if isinstance(data, ChatSet):
        replies = []
        for conversation in data.conversations:
            last = [t.content for t in conversation.turns if t.role == "assistant"]
            replies.append(last[-1].strip() if last else "")
        return replies
    if isinstance(data, Table):
        return ["|".join(labels) for labels in data.labels]
    return [str(reply).strip() for reply in data]


def choose_task(data: ChatSet | Table | Sequence[str], requested: str = "auto") -> TaskChoice:
    """Choose classification or generation for a file (see the module's rule).

    Args:
        data: The examples: a chat set, a labelled table, or the final replies themselves.
        requested: ``auto`` (apply the rule), ``classify`` or ``generate`` (taken as given;
            the reason says so and still gives the numbers).

    Returns:
        The task and a human sentence with the numbers behind it.

    Raises:
        InputError: ``requested`` is not ``auto``, ``classify`` or ``generate``.
    """
    if requested not in TASK_CHOICES:
        raise InputError(f"task must be one of {', '.join(TASK_CHOICES)}, got {requested!r}")
    replies = final_replies(data)
    counts = Counter(replies)
    n, distinct = len(replies), len(counts)
    longest = max((len(r) for r in counts), default=0)
    numbers = (
        f"{distinct:,} distinct final repl{'y' if distinct == 1 else 'ies'} among {n:,} examples"
    )
    if requested != "auto":
        task: Task = requested  # type: ignore[assignment]  # checked above
        return TaskChoice(task, f"{requested} as requested ({numbers})", n, distinct, longest)
    if not n:
        return TaskChoice("generate", "no final replies to look at: generate", 0, 0, 0)
    not_labels = []
    if distinct > MAX_CLASSES:
        not_labels.append(f"more than {MAX_CLASSES}")
    if distinct * MIN_MEAN_REPEATS > n:
        not_labels.append(f"fewer than {MIN_MEAN_REPEATS} examples per reply on average")
    if longest > MAX_LABEL_CHARS:
        long = sum(1 for r in replies if len(r) > MAX_LABEL_CHARS)
        not_labels.append(f"{long:,} longer than {MAX_LABEL_CHARS} characters, up to {longest:,}")
    if not_labels:
        reason = f"{numbers} ({'; '.join(not_labels)}): free text, generate"
        return TaskChoice("generate", reason, n, distinct, longest)
    reason = (
        f"{numbers}, each at most {longest} characters, {n / distinct:.1f} examples per reply "
        "on average: labels, classify"
    )
    return TaskChoice("classify", reason, n, distinct, longest)


def generative_file_fix() -> str:
    """What to do when a classifier is asked to learn a file that looks generative."""
    return (
        "a classifier learns labels: if the replies are labels, make each final assistant "
        f"reply one of a few short labels (at most {MAX_CLASSES} distinct, at most "
        f"{MAX_LABEL_CHARS} characters, each used by at least {MIN_MEAN_REPEATS} examples on "
        "average); free-text replies need a generative model: fine-tune a chat model with "
        "`tuneforge train FILE --task generate`"
    )
