"""Read and validate generation sets: OpenAI chat JSONL, or prompt/completion JSONL.

Two line formats, chosen by the file's first record:

* **chat** (OpenAI's fine-tuning format): ``{"messages": [{"role": ..., "content": ...},
  ...]}`` with roles ``system``, ``user`` and ``assistant``, any number of turns. An
  assistant message may carry ``"weight": 0`` or ``1``; every assistant turn is trained
  unless its weight is 0 (OpenAI's rule). ``content`` is a string or a list of text parts
  (``{"type": "text", "text": ...}``), joined with a line break as chat servers do. A
  message's ``name`` and a record's other keys are ignored.
* **prompt_completion**: ``{"prompt": ..., "completion": ...}``, read as one user turn and
  one trained assistant turn. Texts are kept verbatim (not stripped).

Tool use is refused: a record with ``tools`` or ``functions``, a message with
``tool_calls`` or ``function_call``, or a ``tool``/``function`` turn. Fine-tuning tool
calls needs a base model whose chat template renders tools, and training does not do it.

Every problem of the file is collected with its line and field and reported at once, as
``read_table`` does for labelled files; the file is read with the same safeguards (caps on
lines, bytes and memory; bad bytes; lines nested too deeply; lone surrogates).

Examples longer than the model's maximum length need a tokenizer: ``check_lengths``
counts them, then refuses the file or reports how many will be truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tuneforge.data.conversations import ROLES, Conversation, Role, Turn
from tuneforge.data.tables import SURROGATE_FIX, FileProblems, read_json_lines, surrogate_error
from tuneforge.errors import InputError, Problem

ChatFormat = Literal["chat", "prompt_completion"]
LengthPolicy = Literal["refuse", "truncate"]

CHAT_EXAMPLE = (
    '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}'
)
PROMPT_COMPLETION_EXAMPLE = '{"prompt": "Hi", "completion": "Hello!"}'

TOOL_KEYS = ("tools", "functions")
"""Record keys that declare tools (OpenAI's tool-use fine-tuning format)."""

TOOL_MESSAGE_KEYS = ("tool_calls", "function_call")
"""Message keys that hold tool calls."""

TOOL_ROLES = ("tool", "function")
"""Roles of the messages that return a tool's result."""

MAX_LISTED_LINES = 10
"""Lines listed when ``check_lengths`` refuses over-long examples."""

_TOOLS_MESSAGE = (
    "the example uses tools ({what}); fine-tuning tool use needs a base model whose chat "
    "template supports tools, and tool-use training is not supported"
)
_TOOLS_FIX = (
    "remove the tool definitions, tool calls and tool results from the example, or leave "
    "the example out"
)
_NESTED_FIX = "an example holds messages of text: flatten the nested arrays or objects"
_ROLES_TEXT = ", ".join(repr(r) for r in ROLES)


@dataclass
class ChatSet:
    """The conversations of one generation file.

    Attributes:
        source: The file name as the user gave it (used in messages).
        conversations: One per example, in file order, each with its line.
        sha256: Hex sha256 of the whole file's bytes.
        format: ``"chat"`` (OpenAI messages) or ``"prompt_completion"``.
    """

    source: str
    conversations: list[Conversation]
    sha256: str
    format: ChatFormat

    def __len__(self) -> int:
        return len(self.conversations)


def read_chat_set(
    path: str | Path,
    *,
    max_problems: int = 50,
    max_rows: int | None = None,
    max_bytes: int | None = None,
    max_memory: int | None = None,
) -> ChatSet:
    """Read and validate a generation file (OpenAI chat JSONL or prompt/completion JSONL).

    The first record decides the format (``messages`` -> chat; ``prompt`` and
    ``completion`` -> prompt_completion); a later record in the other format is a problem.
    Each example must have at least one trained assistant turn; every message a known role
    and non-blank text content; ``weight`` only on assistant messages, and only 0 or 1.

    Args:
        path: The ``.jsonl`` (or ``.json``, read as JSON lines) file.
        max_problems: How many problems to list before summarising the rest.
        max_rows: Refuse a file with more lines (checked before parsing).
        max_bytes: Refuse a larger file.
        max_memory: Refuse a file that reading may take more memory for (estimated).

    Returns:
        The conversations, with their lines, and the file's sha256 and format.

    Raises:
        TableTooLarge: The file exceeds a cap.
        InputError: The file is missing, unreadable or invalid; ``problems`` lists each
            problem with its line, field (e.g. ``messages[2].content``) and fix.
    """
    read = read_json_lines(
        path,
        example=CHAT_EXAMPLE,
        nested_fix=_NESTED_FIX,
        max_problems=max_problems,
        max_rows=max_rows,
        max_bytes=max_bytes,
        max_memory=max_memory,
    )
    problems = read.problems
    fmt = _format_of(read.objects)
    conversations = []
    for line, obj in read.objects:
        conversation = _conversation(line, obj, fmt, problems)
        if conversation is not None:
            conversations.append(conversation)
    if not read.objects and not problems.total:
        problems.add("the file has no examples", f"write one example per line, e.g. {CHAT_EXAMPLE}")
    problems.raise_if_any()
    return ChatSet(read.source, conversations, read.sha256, fmt)


def looks_like_chat_set(path: str | Path) -> bool:
    """Whether a file's first record is a generation example (``messages``, or ``prompt``
    and ``completion``); False for anything unreadable or another format.

    Reads up to the first non-blank line only; for choosing how to read a file, not for
    validating it.
    """
    import json

    if Path(path).suffix.lower() not in (".jsonl", ".json"):
        return False
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if raw.strip():
                    first = json.loads(raw.removeprefix(b"\xef\xbb\xbf"))
                    return isinstance(first, dict) and _format_key(first) is not None
    except (OSError, ValueError, RecursionError):
        return False
    return False


# ---------------------------------------------------------------- records


def _format_key(obj: dict) -> ChatFormat | None:
    if "messages" in obj:
        return "chat"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    return None


def _format_of(objects: Sequence[tuple[int, dict]]) -> ChatFormat:
    """The first record's format (chat when it has neither: its problem says why)."""
    for _, obj in objects[:1]:
        return _format_key(obj) or "chat"
    return "chat"


def _conversation(
    line: int, obj: dict, fmt: ChatFormat, problems: FileProblems
) -> Conversation | None:
    """One example as a Conversation, or None after reporting its problems."""
    found = _format_key(obj)
    if found is None:
        keys = ", ".join(repr(k) for k in list(obj)[:10]) or "none"
        problems.add(
            f'the record has no "messages" (nor "prompt" and "completion"); its keys: {keys}',
            f"write one example per line, e.g. {CHAT_EXAMPLE}",
            line,
        )
        return None
    if found != fmt:
        first = "chat (messages)" if fmt == "chat" else "prompt/completion"
        problems.add(
            f"the file's first example is {first}, this one is not",
            "write every example of a file in one format",
            line,
        )
        return None
    if fmt == "prompt_completion":
        return _prompt_completion(line, obj, problems)
    return _chat(line, obj, problems)


def _prompt_completion(line: int, obj: dict, problems: FileProblems) -> Conversation | None:
    texts = {}
    for field in ("prompt", "completion"):
        text, error = _text(obj[field], field)
        if error:
            problems.add(error, _content_fix(error, field), line, field)
        else:
            texts[field] = text
    if len(texts) < 2:
        return None
    turns = (Turn("user", texts["prompt"]), Turn("assistant", texts["completion"]))
    return Conversation(turns, line)


def _chat(line: int, obj: dict, problems: FileProblems) -> Conversation | None:
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        problems.add(
            '"messages" is not a non-empty list of messages',
            f"give the conversation as a list, e.g. {CHAT_EXAMPLE}",
            line,
            "messages",
        )
        return None
    tools = _tool_use(obj, messages)
    if tools:
        problems.add(_TOOLS_MESSAGE.format(what=tools), _TOOLS_FIX, line, tools.split(",")[0])
        return None
    before = problems.total
    turns = []
    for index, message in enumerate(messages):
        turn = _turn(line, index, message, problems)
        if turn is not None:
            turns.append(turn)
    if problems.total > before:
        return None
    conversation = Conversation(tuple(turns), line)
    if not conversation.has_trained_turn:
        if any(turn.role == "assistant" for turn in turns):
            message = "every assistant message has weight 0: the example trains nothing"
            fix = 'give at least one assistant message "weight": 1 (or no weight)'
        else:
            message = "the example has no assistant message: nothing to learn from it"
            fix = 'add the reply to learn as {"role": "assistant", "content": TEXT}'
        problems.add(message, fix, line, "messages")
        return None
    return conversation


def _tool_use(obj: dict, messages: list) -> str:
    """Which tool-use fields the example holds (``"tools, messages[2].tool_calls"``), or ""."""
    found = [key for key in TOOL_KEYS if key in obj]
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        found += [f"messages[{index}].{key}" for key in TOOL_MESSAGE_KEYS if key in message]
        if message.get("role") in TOOL_ROLES:
            found.append(f"messages[{index}].role {message['role']!r}")
    return ", ".join(found)


def _turn(line: int, index: int, message: Any, problems: FileProblems) -> Turn | None:
    """One message as a Turn, or None after reporting its problems."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        problems.add(
            f"message {index + 1} is not an object",
            'write each message as {"role": ..., "content": ...}',
            line,
            where,
        )
        return None
    role = message.get("role")
    ok = True
    if role not in ROLES:
        shown = "missing" if role is None else repr(role)
        fix = f"use one of {_ROLES_TEXT}"
        if role == "developer":
            fix = "use 'system' for instructions to the model"
        problems.add(
            f"unknown role ({shown}); the roles are {_ROLES_TEXT}", fix, line, f"{where}.role"
        )
        ok = False
    content, error = _content(message.get("content"))
    if error:
        problems.add(error, _content_fix(error, "content"), line, f"{where}.content")
        ok = False
    weight = message.get("weight")
    if "weight" in message:
        weight_error = _weight_error(weight, role)
        if weight_error:
            message_text, fix = weight_error
            problems.add(message_text, fix, line, f"{where}.weight")
            ok = False
    if not ok:
        return None
    checked: Role = role  # type: ignore[assignment]  # in ROLES, checked above
    return Turn(checked, content, weight if checked == "assistant" else None)


def _weight_error(weight: Any, role: Any) -> tuple[str, str] | None:
    if role != "assistant" and role in ROLES:
        return (
            f"a {role} message has a weight; only assistant messages carry one",
            "remove the weight (only assistant turns are trained or skipped)",
        )
    if isinstance(weight, bool) or weight not in (0, 1) or not isinstance(weight, int):
        return (
            f"weight must be 0 or 1, got {_json_repr(weight)}",
            "use weight 0 to leave an assistant turn out of training, 1 (or none) to train it",
        )
    return None


def _content(value: Any) -> tuple[str, str | None]:
    """A message's text: a string or the joined text parts; or an error."""
    if isinstance(value, list):
        texts = []
        for number, part in enumerate(value, 1):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else None
                shown = f"a {kind!r} part" if isinstance(kind, str) else "not a text part"
                return "", f"content part {number} is {shown}; only text parts are supported"
            if not isinstance(part.get("text"), str):
                return "", f'content part {number} has no string "text"'
            texts.append(part["text"])
        value = "\n".join(texts)
    return _text(value, "content")


def _text(value: Any, field: str) -> tuple[str, str | None]:
    """A string field, verbatim; an error when missing, not a string, blank or not UTF-8."""
    if value is None:
        return "", f"no {field}"
    if not isinstance(value, str):
        return "", f"the {field} is {_kind(value)}, not a string"
    if not value.strip():
        return "", f"empty {field}"
    return value, surrogate_error(field, value)


def _content_fix(error: str, field: str) -> str:
    if "surrogate" in error:
        return SURROGATE_FIX
    if "part" in error:
        return 'give the content as a string or a list of {"type": "text", "text": ...} parts'
    if error.startswith(("empty", "no ")):
        return f"write the {field} text, or leave the message out"
    return f"give the {field} as a string"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _json_repr(value: Any) -> str:
    import json

    try:
        return json.dumps(value)[:40]
    except (TypeError, ValueError):
        return repr(value)[:40]


# ---------------------------------------------------------------- lengths


@dataclass(frozen=True)
class LengthCheck:
    """What ``check_lengths`` found.

    Attributes:
        max_length: The limit, in tokens.
        policy: ``"refuse"`` or ``"truncate"``.
        over: How many examples are longer than ``max_length``.
        lines: The lines of the longer examples, in file order (at most
            ``MAX_LISTED_LINES``).
        longest: The longest example, in tokens.
    """

    max_length: int
    policy: LengthPolicy
    over: int
    lines: tuple[int, ...]
    longest: int

    def message(self, source: str, total: int) -> str:
        """One sentence for the user (``truncate``) about the examples over the limit."""
        if not self.over:
            return f"{source}: every example fits in {self.max_length} tokens"
        return (
            f"{source}: {self.over} of {total} example(s) are longer than {self.max_length} "
            f"tokens (the longest {self.longest}) and will be truncated to their first "
            f"{self.max_length} tokens (lines {_lines(self.lines, self.over)})"
        )


def check_lengths(
    chat_set: ChatSet,
    tokenize: Callable[[Conversation], int],
    max_length: int,
    policy: LengthPolicy = "refuse",
) -> LengthCheck:
    """Count the examples longer than ``max_length`` tokens, and apply the policy to them.

    The policy, for each example longer than ``max_length`` tokens (the whole conversation
    as the model sees it, chat template included):

    * ``refuse`` (the default): the file is refused, naming the first lines; nothing is
      trained. Shorten or split those examples, or raise the maximum length.
    * ``truncate``: the example is cut to its first ``max_length`` tokens; turns (or the
      part of a turn) past the cut carry no loss. The result says how many are cut.

    Args:
        chat_set: The examples.
        tokenize: An example's length in tokens (e.g. ``conversation_length(tokenizer)``).
        max_length: The longest example the model trains on, in tokens.
        policy: ``"refuse"`` or ``"truncate"``.

    Returns:
        The count and lines of the longer examples (with ``truncate``, or when none is
        longer).

    Raises:
        InputError: ``policy`` is ``refuse`` and at least one example is longer; its problems
            name the first lines with their lengths. Also for an unknown policy or a
            ``max_length`` below 1.
    """
    if policy not in ("refuse", "truncate"):
        raise InputError(f"the length policy must be 'refuse' or 'truncate', got {policy!r}")
    if max_length < 1:
        raise InputError(f"the maximum length must be at least 1 token, got {max_length}")
    over: list[tuple[int, int]] = []
    longest = 0
    for conversation in chat_set.conversations:
        length = tokenize(conversation)
        longest = max(longest, length)
        if length > max_length:
            over.append((conversation.line, length))
    listed = over[:MAX_LISTED_LINES]
    result = LengthCheck(max_length, policy, len(over), tuple(ln for ln, _ in listed), longest)
    if over and policy == "refuse":
        fix = (
            "shorten or split the example, raise the maximum length, or let longer examples "
            "be truncated"
        )
        problems = [
            Problem(
                chat_set.source,
                f"the example is {length} tokens long; the maximum length is {max_length}",
                fix,
                line,
            )
            for line, length in listed
        ]
        if len(over) > len(listed):
            problems.append(
                Problem(chat_set.source, f"{len(over) - len(listed)} more example(s) too long")
            )
        raise InputError(
            f"{chat_set.source}: {len(over)} of {len(chat_set)} example(s) are longer than "
            f"{max_length} tokens",
            problems,
        )
    return result


def conversation_length(tokenizer) -> Callable[[Conversation], int]:
    """A ``tokenize`` function for ``check_lengths``: an example's length in tokens.

    With a chat template, the rendered conversation's tokens; without one, the tokens of the
    turns' texts joined with line breaks (special tokens included).

    Args:
        tokenizer: A Hugging Face tokenizer.

    Returns:
        A function of one Conversation.
    """
    if getattr(tokenizer, "chat_template", None):

        def templated(conversation: Conversation) -> int:
            ids = tokenizer.apply_chat_template(
                conversation.messages(), tokenize=True, return_dict=False
            )
            return len(ids)

        return templated

    def plain(conversation: Conversation) -> int:
        text = "\n".join(turn.content for turn in conversation.turns)
        return len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    return plain


def _lines(lines: Sequence[int], total: int) -> str:
    shown = ", ".join(str(n) for n in lines)
    return shown + (", …" if total > len(lines) else "")
