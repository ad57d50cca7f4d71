"""Length-grouped batches of encoded conversations, padded only as far as each batch needs.

Conversations vary from a few dozen tokens to the max length; random batches pad every row to
the longest one and waste most of the compute on padding. The batches here come from
``data.encode.length_grouped_batches`` (the classifier's sampler): shuffle the examples with
the run seed and the epoch, sort each mega-batch of 50 batches by length, cut it into
batches, shuffle the batches. Every example appears once per epoch, the order depends only on
(seed, epoch), and a batch is padded on the right to its own longest example
(``data.chat_masking.pad_batch``: dynamic padding).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from tuneforge.data.chat_masking import EncodedConversation, pad_batch
from tuneforge.data.encode import length_grouped_batches, sorted_batches


def conversation_lengths(examples: Sequence[EncodedConversation]) -> np.ndarray:
    """Token count of each encoded conversation (int64 array)."""
    return np.fromiter((len(e.input_ids) for e in examples), dtype=np.int64, count=len(examples))


def training_batches(
    examples: Sequence[EncodedConversation], batch_size: int, *, seed: int, epoch: int
) -> list[np.ndarray]:
    """One epoch's batches of example indices, grouped by length (shuffled, deterministic).

    Args:
        examples: The encoded training conversations.
        batch_size: Examples per batch (some batches may hold fewer).
        seed: The run seed.
        epoch: The epoch (0-based): each epoch draws a new order.

    Returns:
        Index arrays that together hold every example exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return length_grouped_batches(
        conversation_lengths(examples), batch_size, seed=seed, epoch=epoch
    )


def evaluation_batches(
    examples: Sequence[EncodedConversation], batch_size: int
) -> list[np.ndarray]:
    """Batches for evaluation: sorted by length, longest first, the same on every call."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return sorted_batches(conversation_lengths(examples), batch_size)


def padded_batches(
    examples: Sequence[EncodedConversation], batches: Sequence[np.ndarray], pad_id: int
) -> Iterator[dict[str, torch.Tensor]]:
    """``pad_batch`` of each batch in turn (``input_ids``, ``attention_mask``, ``labels``)."""
    for idx in batches:
        yield pad_batch([examples[int(i)] for i in idx], pad_id)


def padding_share(examples: Sequence[EncodedConversation], batches: Sequence[np.ndarray]) -> float:
    """The share of the padded batches' token slots that are padding (0 = none)."""
    lengths = conversation_lengths(examples)
    slots = sum(len(idx) * int(lengths[idx].max()) for idx in batches if len(idx))
    real = sum(int(lengths[idx].sum()) for idx in batches)
    return 1.0 - real / slots if slots else 0.0
