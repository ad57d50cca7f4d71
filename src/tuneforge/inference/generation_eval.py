"""Score a generative model on a reference file: one greedy reply per prompt, decoded in
batches of similar length, then BLEU, ROUGE-L and (with meaning representations) slot
coverage from ``tuneforge.evaluation.generation``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tuneforge.errors import InputError
from tuneforge.evaluation.generation import generation_metrics
from tuneforge.inference.generator import Completion, Generator
from tuneforge.inference.reference_files import ReferenceItem


@dataclass(frozen=True)
class ModelRun:
    """One model's replies to every prompt of a reference file, and their scores.

    Attributes:
        model: The model as the user named it.
        completions: One reply per prompt, in file order.
        metrics: ``generation_metrics`` of the replies.
        seconds: Wall-clock seconds spent generating.
    """

    model: str
    completions: list[Completion]
    metrics: dict[str, Any]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """The model, its metrics and its generation speed, for a report."""
        tokens = sum(c.completion_tokens for c in self.completions)
        return {
            "model": self.model,
            "metrics": self.metrics,
            "seconds": round(self.seconds, 2),
            "completion_tokens": tokens,
            "tokens_per_second": round(tokens / max(self.seconds, 1e-9), 2),
            "cut_at_max_tokens": sum(c.finish_reason == "length" for c in self.completions),
        }


def score_replies(items: list[ReferenceItem], replies: list[str]) -> dict[str, Any]:
    """``generation_metrics`` of replies to ``items``; slot coverage when every item has an
    ``mr``."""
    mrs = [i.mr for i in items]
    return generation_metrics(
        replies,
        [i.references for i in items],
        None if any(m is None for m in mrs) else [m for m in mrs if m is not None],
    )


def run_model(
    generator: Generator,
    model: str,
    items: list[ReferenceItem],
    *,
    source: str,
    max_tokens: int | None = None,
    batch_size: int = 8,
    on_batch: Callable[[int, int], None] | None = None,
) -> ModelRun:
    """Generate one greedy reply per prompt and score them.

    Args:
        generator: The loaded model.
        model: Its name as the user gave it (for the report).
        items: The prompts with their references.
        source: The reference file as the user named it (for errors: file:line).
        max_tokens: Tokens per reply at most (None: the generator's default).
        batch_size: Prompts decoded together; prompts of similar length go together and
            the replies keep the file order.
        on_batch: Called after each batch with (replies done, tokens generated so far).

    Raises:
        InputError: A prompt leaves no room to answer in the model's context
            (``file:line``).
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1 (got {batch_size})")
    lengths = []
    for item in items:
        try:
            lengths.append(generator.prompt_tokens(item.messages))
            generator.check_room(lengths[-1], max_tokens)
        except InputError as exc:
            raise InputError(f"{source}:{item.line}: {exc}") from None
    order = sorted(range(len(items)), key=lambda i: lengths[i])
    replies: dict[int, Completion] = {}
    started, tokens = time.monotonic(), 0
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        done = generator.chat_batch([items[i].messages for i in chunk], max_tokens=max_tokens)
        for i, completion in zip(chunk, done, strict=True):
            replies[i] = completion
            tokens += completion.completion_tokens
        if on_batch is not None:
            on_batch(len(replies), tokens)
    seconds = time.monotonic() - started
    completions = [replies[i] for i in range(len(items))]
    metrics = score_replies(items, [c.text for c in completions])
    return ModelRun(model, completions, metrics, seconds)
