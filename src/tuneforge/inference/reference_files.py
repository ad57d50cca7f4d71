"""Reference files for scoring generated text: JSON lines, one prompt per line with the
answers it should get.

Each line holds ``"messages"`` (the conversation to answer: the reply generated is the
next assistant turn) and its reference answers: ``"references"`` (a list of strings), or
one string as ``"reference"`` or ``"completion"``. An optional ``"mr"`` (an E2E-style
meaning representation, ``name[The Eagle], eatType[pub]``) turns on slot coverage when
every line has one. Other fields are kept and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.inference.generator import message_problem

EXAMPLE = (
    '{"messages": [{"role": "user", "content": "name[The Eagle], eatType[pub]"}], '
    '"references": ["The Eagle is a pub."]}'
)
_REFERENCE_FIX = (
    'give the expected answers as "references": ["...", ...] (or one as "reference": "...")'
)


@dataclass(frozen=True)
class ReferenceItem:
    """One prompt of a reference file.

    Attributes:
        line: Its 1-based line in the file.
        messages: The conversation to answer (``[{"role", "content"}, ...]``).
        references: The acceptable answers (at least one).
        mr: The meaning representation, when the line has one.
    """

    line: int
    messages: list[dict[str, str]]
    references: list[str]
    mr: str | None = None


def _references(obj: dict[str, Any]) -> tuple[list[str] | None, str | None, str]:
    """``(references, problem, field)``: the answers of one line, or what is wrong."""
    if "references" in obj:
        refs = obj["references"]
        if not isinstance(refs, list) or not refs:
            return None, "references is not a non-empty list of strings", "references"
        for index, ref in enumerate(refs):
            if not isinstance(ref, str) or not ref.strip():
                return None, f"reference {index + 1} is not a non-empty string", "references"
        return list(refs), None, "references"
    for field in ("reference", "completion"):
        if field in obj:
            value = obj[field]
            if not isinstance(value, str) or not value.strip():
                return None, f"{field} is not a non-empty string", field
            return [value], None, field
    return None, 'the record has no "references" (nor "reference" or "completion")', "references"


def read_references(path: str, limit: int | None = None) -> list[ReferenceItem]:
    """Read and check a whole reference file (every problem at once, with its line).

    Args:
        path: The ``.jsonl`` file as the user named it.
        limit: Keep only the first ``limit`` prompts (the whole file is still checked).

    Returns:
        The prompts in file order.

    Raises:
        InputError: The file is missing, unreadable or has bad lines (file, line, field
            and fix for each); nothing is generated.
    """
    from tuneforge.data.tables import read_json_lines

    read = read_json_lines(
        path, example=EXAMPLE, nested_fix="a conversation is a list of messages of text"
    )
    problems = read.problems
    items: list[ReferenceItem] = []
    for line, obj in read.objects:
        bad = problems.total
        messages = obj.get("messages")
        if not isinstance(messages, list) or not messages:
            what = "has no" if messages is None else "has a bad"
            problems.add(
                f'the record {what} "messages": a non-empty list of messages',
                f"write one prompt per line, e.g. {EXAMPLE}",
                line,
                "messages",
            )
        else:
            for index, message in enumerate(messages):
                problem = message_problem(message, index)
                if problem is not None:
                    field, what, fix = problem
                    problems.add(what, fix, line, field)
            last = messages[-1]
            if isinstance(last, dict) and last.get("role") == "assistant":
                problems.add(
                    "the conversation ends with an assistant turn, so there is nothing to answer",
                    "end it with the user's turn and give the expected reply as "
                    '"references": [...]',
                    line,
                    f"messages[{len(messages) - 1}].role",
                )
        refs, ref_problem, ref_field = _references(obj)
        if ref_problem is not None:
            problems.add(ref_problem, _REFERENCE_FIX, line, ref_field)
        mr = obj.get("mr")
        if mr is not None and (not isinstance(mr, str) or not mr.strip()):
            problems.add(
                "mr is not a non-empty string",
                'write the meaning representation as "mr": "name[...], eatType[...]", or '
                "leave it out",
                line,
                "mr",
            )
        if problems.total == bad and refs is not None and isinstance(messages, list):
            chat = [{"role": m["role"], "content": m["content"]} for m in messages]
            items.append(ReferenceItem(line, chat, refs, mr))
    if not read.objects and not problems.total:
        problems.add("the file has no prompts", f"write one per line, e.g. {EXAMPLE}")
    problems.raise_if_any()
    return items if limit is None else items[:limit]
