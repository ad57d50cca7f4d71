"""A generative bundle's manifest: task generate, no labels, generation defaults; the
classifier manifest is unchanged (labels required, no generation key)."""

from __future__ import annotations

import pytest

from tuneforge.bundle import BaseModelRef, GenerationDefaults, Manifest
from tuneforge.errors import InputError

BASE = BaseModelRef(name="default-chat", source="package", sha256="ab" * 32)


def _generate(**overrides) -> Manifest:
    values = dict(
        task="generate",
        method="lora",
        adapter=True,
        labels=(),
        max_length=512,
        base_model=BASE,
        generation=GenerationDefaults(eos_token_ids=(2,), context=8192),
    )
    values.update(overrides)
    return Manifest(**values)


def test_a_generate_manifest_round_trips():
    manifest = _generate()
    data = manifest.to_dict()
    assert data["generation"] == {"eos_token_ids": [2], "context": 8192, "max_new_tokens": 256}
    assert Manifest.from_dict(data) == manifest and manifest.generative


def test_a_generate_manifest_needs_generation_defaults_and_no_labels():
    with pytest.raises(ValueError, match="generation"):
        _generate(generation=None)
    with pytest.raises(ValueError, match="labels"):
        _generate(labels=("a", "b"))
    data = _generate().to_dict()
    data["generation"]["eos_token_ids"] = "2"
    with pytest.raises(InputError, match=r"generation\.eos_token_ids"):
        Manifest.from_dict(data)
    data["generation"] = {"eos_token_ids": [2], "context": 8, "top_k": 3}
    with pytest.raises(InputError, match=r"unknown key generation\.'top_k'"):
        Manifest.from_dict(data)


def test_classifier_manifests_keep_requiring_labels_and_have_no_generation_key():
    with pytest.raises(ValueError, match="labels"):
        Manifest("single_label", "full", False, (), 128, BASE)
    classifier = Manifest("single_label", "full", False, ("a", "b"), 128, BASE)
    assert "generation" not in classifier.to_dict() and not classifier.generative
    with pytest.raises(ValueError, match="generate bundles only"):
        Manifest(
            "single_label",
            "full",
            False,
            ("a", "b"),
            128,
            BASE,
            generation=GenerationDefaults((2,), 64),
        )
