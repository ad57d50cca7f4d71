"""`--epochs auto` of a chat model follows OpenAI's rule: 3 epochs, enough for 100
conversations on small files (at most 25), at most 25,000 conversations on large ones."""

from __future__ import annotations

import pytest

from tuneforge.training.auto import auto_sft_epochs


@pytest.mark.parametrize(
    ("n", "epochs"),
    [(1, 25.0), (8, 13.0), (33, 4.0), (34, 3.0), (4521, 3.0), (8333, 3.0), (10_000, 2.5),
     (100_000, 1.0)],
)  # fmt: skip
def test_auto_sft_epochs(n: int, epochs: float):
    assert auto_sft_epochs(n) == epochs
