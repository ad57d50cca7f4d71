"""``is_generative``: the one place ``tuneforge eval`` decides between scoring generated
text and scoring a classifier's labels."""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.models.model_kind import is_generative


def _model_dir(path: Path, config: object) -> Path:
    path.mkdir()
    text = config if isinstance(config, str) else json.dumps(config)
    (path / "config.json").write_text(text, encoding="utf-8")
    return path


def test_a_generative_base_name_is_generative() -> None:
    assert is_generative("default-chat")


def test_a_causal_lm_directory_is_generative(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "llama", {"architectures": ["LlamaForCausalLM"]})
    assert is_generative(model)
    assert is_generative(str(model))


def test_classifiers_missing_paths_and_broken_configs_are_not(tmp_path: Path) -> None:
    bert = _model_dir(tmp_path / "bert", {"architectures": ["BertForSequenceClassification"]})
    assert not is_generative(bert)
    assert not is_generative(_model_dir(tmp_path / "broken", "{not json"))
    assert not is_generative(_model_dir(tmp_path / "list", "[1, 2]"))
    assert not is_generative(tmp_path / "missing")
    bundle = tmp_path / "bundle"  # a classifier bundle: no config.json at its top
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}", encoding="utf-8")
    assert not is_generative(bundle)
    assert not is_generative("distilbert")
