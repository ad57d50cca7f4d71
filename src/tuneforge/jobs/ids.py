"""Object ids in the OpenAI style: a prefix and 24 random characters."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A fresh random id such as ``ftjob-3fQ...``; ``prefix`` includes its separator."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))
