"""Generation metrics: BLEU equals sacrebleu's own multi-reference corpus BLEU, a perfect
prediction scores 100 / 1.0, ROUGE-L takes the best reference, and slot coverage follows
the E2E rule on hand-checked examples."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from tuneforge.evaluation.generation import generation_metrics, missing_slots, parse_mr

PREDICTIONS = [
    "The Eagle is a pub near Burger King.",
    "Blue Spice is a coffee shop in the city centre.",
    "Zizzi serves cheap food.",
]
REFERENCES = [
    ["The Eagle is a pub near Burger King.", "Near Burger King is The Eagle, a pub."],
    ["Blue Spice is a coffee shop in city centre.", "A coffee shop called Blue Spice.", "x"],
    ["Zizzi is a cheap restaurant."],
]


def test_bleu_equals_sacrebleu_corpus_bleu_with_padded_reference_streams() -> None:
    streams = [
        [REFERENCES[0][0], REFERENCES[1][0], REFERENCES[2][0]],
        [REFERENCES[0][1], REFERENCES[1][1], None],
        [None, REFERENCES[1][2], None],
    ]
    expected = sacrebleu.corpus_bleu(PREDICTIONS, streams).score  # type: ignore[arg-type]
    metrics = generation_metrics(PREDICTIONS, REFERENCES)
    assert metrics["bleu"] == pytest.approx(expected, abs=1e-9)
    assert 0 < metrics["bleu"] < 100
    assert metrics["examples"] == 3
    assert "slot_coverage" not in metrics


def test_rouge_l_is_the_best_reference_per_example_averaged_times_100() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    best = [
        max(scorer.score(r, p)["rougeL"].fmeasure for r in refs)
        for p, refs in zip(PREDICTIONS, REFERENCES, strict=True)
    ]
    metrics = generation_metrics(PREDICTIONS, REFERENCES)
    assert metrics["rouge_l"] == pytest.approx(100 * sum(best) / 3)
    # example 0 matches its first reference exactly, so its best is 1.0, not the mean
    assert best[0] == 1.0


def test_a_perfect_prediction_scores_100_bleu_and_100_rouge_l() -> None:
    refs = [["The Eagle is a pub near Burger King in the riverside area."]]
    metrics = generation_metrics([refs[0][0]], refs)
    assert metrics["bleu"] == pytest.approx(100.0)
    assert metrics["rouge_l"] == pytest.approx(100.0)


def test_parse_mr_reads_attributes_with_spaces_and_symbols() -> None:
    mr = "name[The Vaults], eatType[pub], priceRange[£20-25], customer rating[5 out of 5]"
    assert parse_mr(mr) == [
        ("name", "The Vaults"),
        ("eatType", "pub"),
        ("priceRange", "£20-25"),
        ("customer rating", "5 out of 5"),
    ]


@pytest.mark.parametrize(
    ("mr", "text", "missing"),
    [
        # literal values, case- and accent-insensitive, punctuation ignored
        ("name[Café Rouge], eatType[pub]", "the cafe rouge is a PUB.", []),
        ("name[The Eagle], eatType[pub]", "The Eagle is a public house.", [("eatType", "pub")]),
        ("eatType[coffee shop]", "a coffeeshop", []),
        ("area[city centre]", "It is downtown.", []),
        ("area[riverside]", "by the river", []),
        # price and rating pairs are equivalent, with synonyms
        ("priceRange[£20-25]", "prices are 20-25 pounds", []),
        ("priceRange[less than £20]", "it is cheap", []),
        ("priceRange[more than £30]", "it is cheap", [("priceRange", "more than £30")]),
        ("customer rating[5 out of 5]", "rated five stars", []),
        ("customer rating[1 out of 5]", "it has a 1/5 rating", []),
        # familyFriendly: any mention of families, children or kids; polarity unchecked
        ("familyFriendly[yes]", "It is family-friendly.", []),
        ("familyFriendly[no]", "not family friendly", []),
        ("familyFriendly[yes]", "It welcomes kids.", []),
        ("familyFriendly[no]", "A place.", [("familyFriendly", "no")]),
        # whole words only
        ("food[Indian]", "Indiana food", [("food", "Indian")]),
    ],
)
def test_missing_slots_follows_the_e2e_rule(mr: str, text: str, missing: list) -> None:
    assert missing_slots(mr, text) == missing


def test_slot_coverage_is_the_share_of_outputs_mentioning_every_value() -> None:
    mrs = [
        "name[The Eagle], eatType[pub], near[Burger King]",
        "name[Blue Spice], eatType[coffee shop], area[city centre]",
        "name[Zizzi], priceRange[cheap], familyFriendly[yes]",
    ]
    metrics = generation_metrics(PREDICTIONS, REFERENCES, mrs)
    # 1 and 2 mention everything; 3 says nothing about families
    assert metrics["slot_coverage"] == pytest.approx(2 / 3)
    assert metrics["slots_missing"] == 1


def test_mismatched_lengths_and_empty_reference_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1"):
        generation_metrics(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no reference"):
        generation_metrics(["a"], [[]])
    with pytest.raises(ValueError, match="no predictions"):
        generation_metrics([], [])
