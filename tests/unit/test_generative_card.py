"""The model card of a chat model names its base and the base's licence (the Gemma Terms
of Use when gemma is the base), its data, metrics and sample replies."""

from __future__ import annotations

from tuneforge.bundle import BaseModelRef, GenerationDefaults, Manifest
from tuneforge.card import render_generative_card
from tuneforge.models.registry import GEMMA_TERMS

MANIFEST = Manifest(
    task="generate",
    method="lora",
    adapter=True,
    labels=(),
    max_length=256,
    base_model=BaseModelRef(name="gemma-3-270m", source="package", sha256="cd" * 32),
    generation=GenerationDefaults(eos_token_ids=(1, 106), context=32768),
)
RUN = {
    "train": {"epochs": 3, "batch_size": 8, "learning_rate": 2e-4, "warmup_ratio": 0.06,
              "seed": 42},
    "method": {"lora_r": 16, "lora_alpha": 32},
}  # fmt: skip
METRICS = {
    "train": {"n_examples": 90, "train_loss": 0.8, "train_mean_token_accuracy": 0.7},
    "validation": {"n_examples": 10, "valid_loss": 1.1, "valid_mean_token_accuracy": 0.65,
                   "perplexity": 3.004},
}  # fmt: skip
DATA = {
    "splits": {
        "train": {"rows": 90, "source": "chat.jsonl", "carved_from_train": False},
        "validation": {"rows": 10, "source": "chat.jsonl", "carved_from_train": True},
    }
}
TRAINING = {
    "task": {"task": "generate", "reason": "90 distinct final replies ...: free text, generate"},
    "steps": 36, "best_step": 30, "stopped_early": True, "warnings": [],
    "samples": [{"prompt": [{"role": "user", "content": "Name a river"}],
                 "reference": "The Thames.", "completion": "The Seine."}],
}  # fmt: skip
ENV = {"packages": {"tuneforge": "1", "torch": "2", "transformers": "4"}, "cpu": "x86"}


def test_the_card_names_the_gemma_terms_and_shows_metrics_and_samples():
    card = render_generative_card(MANIFEST, RUN, METRICS, DATA, ENV, TRAINING, GEMMA_TERMS)
    assert "`gemma-3-270m`" in card
    assert "Gemma Terms of Use** (not an open-source licence)" in card
    assert "carries the same terms" in card
    assert "| validation | 10 | 1.1000 | 0.6500 | 3.0040 |" in card
    assert "LoRA adapter (r 16, alpha 32)" in card and "stopped early" in card
    assert "The Thames." in card and "The Seine." in card


def test_a_local_base_has_no_known_licence():
    card = render_generative_card(MANIFEST, RUN, METRICS, DATA, ENV, TRAINING, None)
    assert "not known to tuneforge" in card
