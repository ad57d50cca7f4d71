"""Lone UTF-16 surrogates in request JSON.

JSON may carry ``"\\ud800"``: Python decodes it to a ``str`` that UTF-8 cannot encode, so a
value holding one breaks the tokenizer, the database driver or the JSON answer that echoes
it. Requests are checked for them up front and refused with a 400 naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from tuneforge.server.errors import APIError

# Matches only unpaired halves: a Python str decoded from valid JSON holds a pair as one
# astral character, so any code point in this range is a lone surrogate.
SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with every lone surrogate written as a ``\\udXXX`` escape (safe to send)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def find_lone_surrogate(value: Any, path: str = "") -> tuple[str, str, int] | None:
    """The first lone surrogate in a JSON-like value: (field path, the character, its index
    in the string), or None. Dict keys are checked as well as values."""
    if isinstance(value, str):
        match = SURROGATE.search(value)
        return (path, match.group(), match.start()) if match else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{printable(str(key))}" if path else printable(str(key))
            if isinstance(key, str) and (match := SURROGATE.search(key)):
                return (path or where, match.group(), match.start())
            found = find_lone_surrogate(item, where)
            if found:
                return found
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_lone_surrogate(item, f"{path}.{index}" if path else str(index))
            if found:
                return found
    return None


def invalid_text_error(param: str, char: str, index: int) -> APIError:
    """The 400 ``invalid_text`` answer for a lone surrogate at ``param``."""
    return APIError(
        400,
        f"'{param}' is not valid Unicode text: it holds a lone UTF-16 surrogate "
        f"(U+{ord(char):04X}) at character {index}, which UTF-8 cannot encode; send valid "
        "Unicode (in JSON, a \\uD800-\\uDFFF escape must be half of a surrogate pair).",
        code="invalid_text",
        param=param,
    )


def check_no_lone_surrogates(value: Any, path: str = "") -> None:
    """Raise the 400 ``invalid_text`` answer if ``value`` holds a lone surrogate anywhere.

    Raises:
        APIError: 400 ``invalid_text`` naming the field.
    """
    found = find_lone_surrogate(value, path)
    if found:
        raise invalid_text_error(*found)
