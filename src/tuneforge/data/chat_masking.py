"""Loss masks for generative fine-tuning: which tokens of a conversation the model learns.

A conversation is rendered with the base model's chat template and tokenised once; the
labels copy the token ids where the loss applies and hold ``IGNORE_INDEX`` (-100)
everywhere else. Labels line up with ``input_ids`` (Hugging Face causal LMs shift them
themselves: position ``i`` is predicted from the tokens before it).

What is trained: each trained assistant turn (:attr:`Turn.trained`: weight not 0) from the
first token of its reply up to and including the end-of-turn token that closes it
(``<|im_end|>`` in ChatML) — the model must learn to stop. What is not: system and user
turns, weight-0 assistant turns, the role header before a reply (``<|im_start|>assistant\\n``
is prompt: the generator writes it), and the whitespace the template puts after the
end-of-turn token (``\\n`` in ChatML: never generated, since generation stops at the
end-of-turn token). The mask comes from where the template puts each reply, never from
comparing tokens with the pad token: SmolLM2's pad token *is* its end-of-turn token.

Where a reply lies, found in one of two ways:

- **Generation markers.** A template with ``{% generation %}...{% endgeneration %}`` marks
  the tokens itself (``apply_chat_template(..., return_assistant_tokens_mask=True)``). The
  markers must wrap every assistant message once (the k-th marked span is the k-th
  assistant message). Most such templates wrap the content only, so the end-of-turn token
  that follows (after whitespace, if any) is added; a span that already ends with a
  special token is taken as it is.
- **Rendered prefixes** (templates without markers, like SmolLM2's). For a trained turn k,
  the conversation up to it is rendered with the generation prompt, and the conversation
  up to and including it without; both must be prefixes of the whole rendering, and the
  reply is the text between the two, trailing whitespace removed. Text (not token)
  prefixes are compared, and the character spans are mapped to tokens through the
  tokenizer's offsets on the whole text, so byte-pair merges across a boundary cannot
  shift the mask (a token that straddles a boundary is trained). A template that renders
  earlier turns differently once later turns follow is refused (:class:`ChatTemplateError`).

Either way the trained span must end with a special token (the end-of-turn): a template
that closes replies with plain text could never teach the model to stop, and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneforge.data.conversations import Conversation
from tuneforge.errors import InputError, Problem

if TYPE_CHECKING:  # both load lazily: importing this module stays cheap
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
"""Label of a token without loss (what PyTorch's cross-entropy ignores by default)."""

_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
_MARKERS_FIX = (
    "put {% generation %}...{% endgeneration %} around each assistant message's content in "
    "the chat template (tokenizer_config.json or chat_template.jinja), or use a template that "
    "renders earlier turns the same whatever follows them"
)


class ChatTemplateError(InputError):
    """The base model's chat template cannot show which tokens are the assistant's replies."""


@dataclass(frozen=True)
class EncodedConversation:
    """One conversation as token ids and labels, ready for a causal LM.

    Attributes:
        input_ids: Token ids of the rendered conversation, right-truncated to max_length.
        labels: ``input_ids`` where the loss applies, ``IGNORE_INDEX`` elsewhere (same length).
        trained_tokens: How many labels carry loss (after truncation).
        truncated: Whether the rendering was longer than max_length.
        full_length: Token count before truncation.
    """

    input_ids: list[int]
    labels: list[int]
    trained_tokens: int
    truncated: bool
    full_length: int

    @property
    def lost_to_truncation(self) -> bool:
        """Whether truncation cut every trained token: the example teaches nothing."""
        return self.truncated and self.trained_tokens == 0


def has_generation_markers(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer's chat template marks replies with ``{% generation %}``.

    Raises:
        ChatTemplateError: The tokenizer has no chat template.
    """
    return bool(_GENERATION_MARKER.search(_template_of(tokenizer)))


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    conversation: Conversation,
    max_length: int,
    *,
    file: str = "",
) -> EncodedConversation:
    """Render, tokenise and mask one conversation for supervised fine-tuning.

    Args:
        tokenizer: A fast ``transformers`` tokenizer with a chat template.
        conversation: The example; at least one turn must be trained.
        max_length: Most tokens to keep; longer renderings are cut on the right and
            reported (``truncated``; ``lost_to_truncation`` when no trained token is left).
        file: The example's file as the user named it, for error messages.

    Returns:
        The token ids and labels.

    Raises:
        ChatTemplateError: The template cannot be masked (no template; not prefix-preserving
            and no generation markers; no generation prompt; no end-of-turn token).
        InputError: The example has no trained turn, an empty assistant turn, or (with a
            template without markers) starts with a trained assistant turn.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    _check_example(conversation, file)
    if has_generation_markers(tokenizer):
        ids, trained = _mask_from_markers(tokenizer, conversation, file)
    else:
        ids, trained = _mask_from_prefixes(tokenizer, conversation, file)
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(ids, trained, strict=True)]
    full_length = len(ids)
    ids, labels = ids[:max_length], labels[:max_length]
    return EncodedConversation(
        input_ids=ids,
        labels=labels,
        trained_tokens=sum(label != IGNORE_INDEX for label in labels),
        truncated=full_length > max_length,
        full_length=full_length,
    )


def pad_batch(examples: Sequence[EncodedConversation], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad encoded conversations on the right to the longest one.

    Args:
        examples: At least one encoded conversation.
        pad_id: Token id written into the padding.

    Returns:
        ``input_ids``, ``attention_mask`` (0 on padding, set by length, never by comparing
        with ``pad_id``, which may be the end-of-turn token) and ``labels``
        (``IGNORE_INDEX`` on padding), each a ``(batch, longest)`` int64 tensor.
    """
    import torch

    if not examples:
        raise ValueError("pad_batch needs at least one example")
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# ------------------------------------------------------------------ the two ways to mask


def _mask_from_markers(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation, file: str
) -> tuple[list[int], list[bool]]:
    """Token ids and trained flags from the template's ``{% generation %}`` spans."""
    out: Any = _apply_template(
        tokenizer,
        conversation,
        file,
        conversation.messages(),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids = [int(i) for i in out["input_ids"]]
    marked = [bool(m) for m in out["assistant_masks"]]
    spans = _runs(marked)
    assistants = [k for k, turn in enumerate(conversation.turns) if turn.role == "assistant"]
    if len(spans) != len(assistants):
        raise _template_error(
            f"the chat template's {{% generation %}} markers wrap {len(spans)} span(s) but the "
            f"example has {len(assistants)} assistant message(s)",
            "put {% generation %}...{% endgeneration %} around the content of every assistant "
            "message, once each",
            conversation,
            file,
        )
    special = _special_ids(tokenizer)
    trained = [False] * len(ids)
    for (start, end), k in zip(spans, assistants, strict=True):
        if not conversation.turns[k].trained:
            continue
        stop = _through_end_of_turn(tokenizer, ids, end, special)
        if stop is None:
            raise _no_end_of_turn(conversation, file, k)
        trained[start:stop] = [True] * (stop - start)
    return ids, trained


def _mask_from_prefixes(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation, file: str
) -> tuple[list[int], list[bool]]:
    """Token ids and trained flags from renderings of the conversation's prefixes."""
    messages = conversation.messages()
    full = _render(tokenizer, conversation, file, messages, False)
    spans: list[tuple[int, int, int]] = []  # (first char, end char, message index)
    for k, turn in enumerate(conversation.turns):
        if not turn.trained:
            continue
        if k == 0:
            raise InputError(
                "cannot mask the example",
                [
                    Problem(
                        file,
                        "the first message is a trained assistant turn: with this chat template "
                        "(no {% generation %} markers) a reply is found after the prompt before "
                        "it, and there is none",
                        "start the example with a system or user message, or give this turn "
                        "weight 0",
                        line=conversation.line,
                    )
                ],
            )
        prompt = _render(tokenizer, conversation, file, messages[:k], True)
        if prompt == _render(tokenizer, conversation, file, messages[:k], False):
            raise _template_error(
                "the chat template ignores add_generation_prompt, so the assistant header "
                "cannot be told apart from the reply",
                "make the template write the assistant header when add_generation_prompt is "
                "true, or " + _MARKERS_FIX,
                conversation,
                file,
            )
        upto = _render(tokenizer, conversation, file, messages[: k + 1], False)
        for part, what in ((prompt, "the prompt before"), (upto, "the conversation up to")):
            if not full.startswith(part):
                raise _template_error(
                    f"the chat template is not prefix-preserving: {what} message {k + 1} "
                    "renders differently from the start of the whole conversation "
                    f"({_divergence(part, full)}), so the reply's tokens cannot be located",
                    _MARKERS_FIX,
                    conversation,
                    file,
                )
        if len(upto) < len(prompt):
            raise _template_error(
                f"the chat template renders message {k + 1} shorter than its own generation "
                "prompt, so the reply's tokens cannot be located",
                _MARKERS_FIX,
                conversation,
                file,
            )
        spans.append((len(prompt), len(prompt) + len(upto[len(prompt) :].rstrip()), k))

    encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(i) for i in encoding["input_ids"]]
    offsets = encoding["offset_mapping"]
    special = _special_ids(tokenizer)
    trained = [False] * len(ids)
    for first, end, k in spans:
        tokens = [i for i, (a, b) in enumerate(offsets) if b > first and a < end]
        if not tokens or ids[tokens[-1]] not in special:
            raise _no_end_of_turn(conversation, file, k)
        for i in tokens:
            trained[i] = True
    return ids, trained


# ------------------------------------------------------------------ helpers


def _check_example(conversation: Conversation, file: str) -> None:
    if not conversation.has_trained_turn:
        raise InputError(
            "cannot mask the example",
            [
                Problem(
                    file,
                    "the example has no trained assistant turn (all have weight 0, or there are "
                    "none), so it carries no loss",
                    "add an assistant reply, or set weight 1 on one",
                    line=conversation.line,
                )
            ],
        )
    for k, turn in enumerate(conversation.turns):
        if turn.role == "assistant" and not turn.content:
            raise InputError(
                "cannot mask the example",
                [
                    Problem(
                        file,
                        f"message {k + 1} is an empty assistant turn",
                        "give the assistant message its reply, or remove it",
                        line=conversation.line,
                    )
                ],
            )


def _template_of(tokenizer: PreTrainedTokenizerBase) -> str:
    try:
        return str(tokenizer.get_chat_template())
    except ValueError as exc:
        raise ChatTemplateError(
            "the base model's tokenizer has no chat template; "
            "set chat_template in its tokenizer_config.json (or chat_template.jinja)"
        ) from exc


def _render(
    tokenizer: PreTrainedTokenizerBase,
    conversation: Conversation,
    file: str,
    messages: list[dict[str, str]],
    prompt: bool,
) -> str:
    text = _apply_template(
        tokenizer, conversation, file, messages, tokenize=False, add_generation_prompt=prompt
    )
    if not isinstance(text, str):  # pragma: no cover - tokenize=False always gives text
        raise TypeError(f"apply_chat_template gave {type(text).__name__}, not text")
    return text


def _apply_template(
    tokenizer: PreTrainedTokenizerBase,
    conversation: Conversation,
    file: str,
    messages: list[dict[str, str]],
    **options: Any,
) -> Any:
    """``apply_chat_template``; the template refusing (``raise_exception``) is an input error."""
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, **options)
    except TemplateError as exc:
        raise InputError(
            "the base model's chat template refused the example",
            [
                Problem(
                    file,
                    f"the chat template refused the example: {exc}",
                    "arrange the messages as the base model's chat template requires, or "
                    "choose another base model",
                    line=conversation.line,
                )
            ],
        ) from exc


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Ids of special tokens: the declared ones and every added token flagged special."""
    ids = {int(i) for i in tokenizer.all_special_ids}
    ids.update(int(i) for i, token in tokenizer.added_tokens_decoder.items() if token.special)
    return ids


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(start, end) of each run of True, end exclusive."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _through_end_of_turn(
    tokenizer: PreTrainedTokenizerBase, ids: list[int], end: int, special: set[int]
) -> int | None:
    """End (exclusive) of a marked span extended through the end-of-turn token after it.

    A span that ends with a special token already holds it. Otherwise whitespace tokens are
    skipped to the next token, which must be special. None when there is no such token.
    """
    if ids[end - 1] in special:
        return end
    j = end
    while j < len(ids) and ids[j] not in special and not str(tokenizer.decode([ids[j]])).strip():
        j += 1
    return j + 1 if j < len(ids) and ids[j] in special else None


def _divergence(part: str, full: str) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(part, full, strict=False)) if a != b),
        min(len(part), len(full)),
    )
    start = max(0, at - 20)
    return (
        f"at character {at}: {part[start : at + 20]!r} where the whole conversation has "
        f"{full[start : at + 20]!r}"
    )


def _template_error(
    message: str, fix: str, conversation: Conversation, file: str
) -> ChatTemplateError:
    return ChatTemplateError(
        "the chat template cannot be masked for training",
        [Problem(file, message, fix, line=conversation.line)],
    )


def _no_end_of_turn(conversation: Conversation, file: str, k: int) -> ChatTemplateError:
    return _template_error(
        f"the chat template closes assistant message {k + 1} with no end-of-turn token (a "
        "special token such as the eos token), so a model trained on it would never learn to stop",
        "make the template write the tokenizer's end-of-turn (eos) token right after each "
        "assistant message's content",
        conversation,
        file,
    )
