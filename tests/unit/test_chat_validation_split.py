"""A generative run without a validation file carves one from train: seeded, at least one
example, never all of them."""

from __future__ import annotations

from tests.sft_data import conversations

from tuneforge.data.chat_sets import ChatSet
from tuneforge.recipes.finetune_chat import carve_validation


def _set(n: int) -> ChatSet:
    pairs = [(f"q{i}", f"a{i}") for i in range(n)]
    return ChatSet("chat.jsonl", conversations(pairs), "0" * 64, "chat")


def test_the_carve_is_seeded_and_disjoint():
    train, valid = carve_validation(_set(50), 0.1, seed=42)
    assert len(valid) == 5 and len(train) == 45
    assert {c.line for c in train}.isdisjoint(c.line for c in valid)
    again = carve_validation(_set(50), 0.1, seed=42)
    assert [c.line for c in again[1]] == [c.line for c in valid]
    other = carve_validation(_set(50), 0.1, seed=7)
    assert [c.line for c in other[1]] != [c.line for c in valid]
    assert [c.line for c in train] == sorted(c.line for c in train)  # file order kept


def test_small_files_keep_a_training_example():
    assert [len(x) for x in carve_validation(_set(2), 0.1, seed=0)] == [1, 1]
    assert [len(x) for x in carve_validation(_set(1), 0.1, seed=0)] == [1, 0]
