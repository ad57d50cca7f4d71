"""Task metrics for generated text scored against references: corpus BLEU, ROUGE-L and,
for E2E-style meaning representations, slot coverage.

- **BLEU**: ``sacrebleu.corpus_bleu`` with its defaults (13a tokenisation, case-sensitive),
  every reference of an example used (examples may have different numbers of references;
  the missing slots are padded with ``None``, which sacrebleu skips). 0-100.
- **ROUGE-L**: the ``rouge-score`` F-measure of each prediction against its best-matching
  reference (``RougeScorer.score_multi``: the maximum over the references), averaged over
  examples, times 100 (0-100, like BLEU).
- **Slot coverage**: the share (0-1) of outputs that mention *every* attribute value of
  their meaning representation (``name[The Eagle], eatType[pub], ...``). Matching is
  case-, accent- and punctuation-insensitive and whole-word: ``name``, ``near``, ``food``
  and ``eatType`` values must appear literally (``coffeeshop`` also counts for
  ``coffee shop``); ``area``, ``priceRange`` and ``customer rating`` accept the listed
  synonyms (``city center``, ``downtown``; ``cheap`` = ``less than £20`` = ``affordable``;
  ``5 out of 5`` = ``high`` = ``excellent``, ...); ``familyFriendly`` (yes or no) counts
  as mentioned when the output speaks of families, children, kids or adults: the
  polarity is not checked. It is a cheap proxy for omitted attributes, not a slot-error
  rate (wrong polarity, a value attached to the wrong attribute and invented attributes
  go unnoticed). This is the E2E data set's published rule.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from typing import Any


def _norm(text: str) -> str:
    """Lower-case, strip accents (Café -> cafe), keep letters and digits, as `` tok tok ``."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return " " + " ".join(re.findall(r"[a-z0-9]+", plain)) + " "


_MR_SLOT = re.compile(r"([A-Za-z ]+?)\[([^\]]*)\](?:, |$)")


def parse_mr(mr: str) -> list[tuple[str, str]]:
    """The ``(attribute, value)`` pairs of a meaning representation, in order.

    ``"name[The Eagle], eatType[pub]"`` -> ``[("name", "The Eagle"), ("eatType", "pub")]``.
    """
    return [(a.strip(), v) for a, v in _MR_SLOT.findall(mr.strip())]


_PRICE_CHEAP = ["cheap", "cheaply", "inexpensive", "affordable", "low", "budget"]
_PRICE_CHEAP += ["less than 20", "under 20"]
_PRICE_MID = ["moderate", "moderately", "average", "mid", "medium", "reasonable"]
_PRICE_MID += ["reasonably", "20 25"]
_PRICE_HIGH = ["high", "expensive", "pricey", "costly", "more than 30", "over 30"]
_RATE_LOW = ["low", "poor", "poorly", "bad", "badly", "1 out of 5", "one out of five", "1 5"]
_RATE_LOW += ["1 star", "one star"]
_RATE_MID = ["average", "mid", "medium", "middle", "ok", "okay", "decent", "3 out of 5"]
_RATE_MID += ["three out of five", "3 5", "3 star", "3 stars", "three star", "three stars"]
_RATE_HIGH = ["high", "highly", "excellent", "great", "top", "5 out of 5", "five out of five"]
_RATE_HIGH += ["5 5", "5 star", "5 stars", "five star", "five stars"]
_PHRASES: dict[tuple[str, str], list[str]] = {
    ("area", "city centre"): ["city centre", "city center", "centre", "center", "downtown"],
    ("area", "riverside"): ["riverside", "river"],
    ("eatType", "coffee shop"): ["coffee shop", "coffeeshop"],
    ("priceRange", "cheap"): _PRICE_CHEAP,
    ("priceRange", "less than £20"): _PRICE_CHEAP,
    ("priceRange", "moderate"): _PRICE_MID,
    ("priceRange", "£20-25"): _PRICE_MID,
    ("priceRange", "high"): _PRICE_HIGH,
    ("priceRange", "more than £30"): _PRICE_HIGH,
    ("customer rating", "low"): _RATE_LOW,
    ("customer rating", "1 out of 5"): _RATE_LOW,
    ("customer rating", "average"): _RATE_MID,
    ("customer rating", "3 out of 5"): _RATE_MID,
    ("customer rating", "high"): _RATE_HIGH,
    ("customer rating", "5 out of 5"): _RATE_HIGH,
}
_FAMILY = ["family", "families", "child", "children", "childrens", "kid", "kids"]
_FAMILY += ["adult", "adults"]


def slot_mentioned(attribute: str, value: str, text: str) -> bool:
    """Whether ``text`` mentions the value of one MR attribute (the rule in the module doc)."""
    normalised = _norm(text)
    if attribute == "familyFriendly":
        phrases = _FAMILY
    else:
        phrases = _PHRASES.get((attribute, value), [value])
    return any(_norm(p) in normalised for p in phrases if _norm(p).strip())


def missing_slots(mr: str, text: str) -> list[tuple[str, str]]:
    """The ``(attribute, value)`` pairs of ``mr`` that ``text`` does not mention."""
    return [(a, v) for a, v in parse_mr(mr) if not slot_mentioned(a, v, text)]


def generation_metrics(
    predictions: list[str], references: list[list[str]], mrs: list[str] | None = None
) -> dict[str, Any]:
    """Score predictions against their references (the metrics of the module doc).

    Args:
        predictions: One generated text per example.
        references: The references of each example (at least one each).
        mrs: E2E-style meaning representations, one per example, for slot coverage;
            None leaves it out.

    Returns:
        ``{"bleu", "rouge_l", "examples"}`` and, with ``mrs``, ``"slot_coverage"``
        (0-1) and ``"slots_missing"`` (how many attribute values went unmentioned, in
        all).

    Raises:
        ValueError: The lists differ in length, are empty, or an example has no reference.
    """
    import sacrebleu
    from rouge_score import rouge_scorer

    if not predictions:
        raise ValueError("no predictions to score")
    if len(references) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets")
    if mrs is not None and len(mrs) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(mrs)} meaning representations")
    for index, refs in enumerate(references):
        if not refs:
            raise ValueError(f"example {index} has no reference")
    streams = [list(s) for s in itertools.zip_longest(*references)]
    bleu = sacrebleu.corpus_bleu(predictions, streams)  # the None padding is skipped
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [
        scorer.score_multi(refs, pred)["rougeL"].fmeasure
        for pred, refs in zip(predictions, references, strict=True)
    ]
    metrics: dict[str, Any] = {
        "bleu": float(bleu.score),
        "rouge_l": 100.0 * sum(rouge) / len(rouge),
        "examples": len(predictions),
    }
    if mrs is not None:
        missing = [missing_slots(mr, pred) for mr, pred in zip(mrs, predictions, strict=True)]
        metrics["slot_coverage"] = sum(not m for m in missing) / len(missing)
        metrics["slots_missing"] = sum(len(m) for m in missing)
    return metrics
