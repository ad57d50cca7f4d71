"""Which kind of model a command was given: a generative (causal language) model or not.

``tuneforge eval`` dispatches on it: a generative model is scored on generated text, a
classifier bundle on its labels.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.bundle import MANIFEST
from tuneforge.models.registry import known_generative_bases


def _causal_lm_config(config: Path) -> bool:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    architectures = data.get("architectures") if isinstance(data, dict) else None
    return isinstance(architectures, list) and any(
        isinstance(a, str) and a.endswith("ForCausalLM") for a in architectures
    )


def _generative_bundle(manifest: Path) -> bool:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("task") == "generate"


def is_generative(model_or_dir: str | Path) -> bool:
    """Whether ``model_or_dir`` names a generative model.

    True for a generative base name (``default-chat``), a bundle whose manifest's task is
    ``generate`` (from ``tuneforge train`` on a chat set), and a directory whose
    ``config.json`` declares a ``*ForCausalLM`` architecture; False for anything else
    (a classifier bundle, a missing path), which the caller then treats as a classifier.
    Reading never raises: a broken file reads as not generative.
    """
    name = str(model_or_dir)
    if name in known_generative_bases():
        return True
    path = Path(name).expanduser()
    try:
        if not path.is_dir():
            return False
        return _generative_bundle(path / MANIFEST) or _causal_lm_config(path / "config.json")
    except OSError:
        return False
