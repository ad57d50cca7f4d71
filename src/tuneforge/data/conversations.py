"""Conversations for generative fine-tuning: the turns of one OpenAI chat example.

A generation set is a list of conversations; the assistant turns are what the model learns
to write. OpenAI's rule decides which: every assistant turn is trained unless its
``weight`` is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    """One message of a conversation.

    Attributes:
        role: ``system``, ``user`` or ``assistant``.
        content: The message text.
        weight: For an assistant turn, OpenAI's ``weight``: 0 (not trained) or 1 (trained);
            None when the file gives none (trained). Always None for other roles.
    """

    role: Role
    content: str
    weight: int | None = None

    @property
    def trained(self) -> bool:
        """Whether the loss covers this turn: an assistant turn whose weight is not 0."""
        return self.role == "assistant" and self.weight != 0


@dataclass(frozen=True)
class Conversation:
    """One training example: its turns in order, and where it came from.

    Attributes:
        turns: The messages, in order.
        line: 1-based line of the example in its file.
    """

    turns: tuple[Turn, ...]
    line: int

    @property
    def has_trained_turn(self) -> bool:
        """Whether at least one turn carries loss."""
        return any(turn.trained for turn in self.turns)

    def messages(self) -> list[dict[str, str]]:
        """The turns as chat-template messages (``{"role", "content"}``)."""
        return [{"role": turn.role, "content": turn.content} for turn in self.turns]
