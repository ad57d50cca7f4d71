"""Length-grouped batches of encoded conversations: far less padding than random batches,
every example once per epoch, a deterministic order that changes between epochs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tuneforge.data.chat_masking import IGNORE_INDEX, EncodedConversation
from tuneforge.training.length_batches import (
    evaluation_batches,
    padded_batches,
    padding_share,
    training_batches,
)


def _examples(n: int, seed: int = 0) -> list[EncodedConversation]:
    """Conversations of 8 to 400 tokens (long-tailed, as chat files are)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = min(400, 8 + int(rng.expovariate(1 / 60)))
        ids = [3 + (i + j) % 50 for j in range(length)]
        labels = [IGNORE_INDEX] * (length // 2) + ids[length // 2 :]
        out.append(EncodedConversation(ids, labels, length - length // 2, False, length))
    return out


def _random_batches(n: int, batch_size: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def test_padding_is_far_below_random_batching():
    examples = _examples(1000)
    grouped = training_batches(examples, 8, seed=0, epoch=0)
    grouped_waste = padding_share(examples, grouped)
    random_waste = padding_share(examples, _random_batches(len(examples), 8, seed=0))
    assert random_waste > 0.4
    assert grouped_waste < 0.1
    assert grouped_waste < random_waste / 5


@pytest.mark.parametrize("batch_size", [1, 3, 8, 64])
def test_every_example_appears_once_per_epoch(batch_size: int):
    examples = _examples(203)
    for epoch in range(3):
        batches = training_batches(examples, batch_size, seed=7, epoch=epoch)
        seen = np.concatenate(batches)
        assert sorted(seen.tolist()) == list(range(len(examples)))
        assert all(1 <= len(b) <= batch_size for b in batches)


def test_the_order_depends_only_on_seed_and_epoch():
    examples = _examples(300)

    def order(seed: int, epoch: int) -> list[int]:
        return np.concatenate(training_batches(examples, 8, seed=seed, epoch=epoch)).tolist()

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != order(2, 0)


def test_batches_are_padded_to_their_own_longest_example():
    examples = _examples(50)
    batches = training_batches(examples, 4, seed=0, epoch=0)
    for idx, batch in zip(batches, padded_batches(examples, batches, pad_id=2), strict=True):
        lengths = [len(examples[int(i)].input_ids) for i in idx]
        assert batch["input_ids"].shape == (len(idx), max(lengths))
        assert batch["attention_mask"].sum(dim=1).tolist() == lengths
        for row, i in enumerate(idx):
            n = lengths[row]
            assert batch["labels"][row, :n].tolist() == examples[int(i)].labels
            assert (batch["labels"][row, n:] == IGNORE_INDEX).all()


def test_evaluation_batches_are_sorted_and_stable():
    examples = _examples(40)
    first = evaluation_batches(examples, 8)
    assert [b.tolist() for b in first] == [b.tolist() for b in evaluation_batches(examples, 8)]
    longest = [max(len(examples[int(i)].input_ids) for i in b) for b in first]
    assert longest == sorted(longest, reverse=True)
    assert sorted(np.concatenate(first).tolist()) == list(range(40))
