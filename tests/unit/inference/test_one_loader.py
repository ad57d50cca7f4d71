"""One loader of a bundle's model: ``inference/loading.py`` (the shared-base adapter path
reuses its base check and unwrapping; the generator calls its generative-bundle loader);
nothing else builds a model from a bundle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "tuneforge"


def _callers(owner: str, method: str) -> set[str]:
    """Modules (relative paths) that call ``owner.method(...)``."""
    found = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            func = node.func if isinstance(node, ast.Call) else None
            if (
                isinstance(func, ast.Attribute)
                and func.attr == method
                and isinstance(func.value, ast.Name)
                and func.value.id == owner
            ):
                found.add(path.relative_to(SRC).as_posix())
    return found


def test_only_the_loader_reads_a_bundles_weights():
    # models/classifier.py builds a *base* model for training; loading.py loads bundles
    assert _callers("AutoModelForSequenceClassification", "from_pretrained") == {
        "models/classifier.py",
        "inference/loading.py",
    }
    assert _callers("PeftModel", "from_pretrained") == {
        "inference/loading.py",
        "inference/shared_base.py",
    }


def test_base_check_has_one_home():
    """The base model's hash is compared in one function, used by both adapter paths."""
    uses = {
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*.py")
        if "check_base_model(" in path.read_text(encoding="utf-8")
    }
    assert uses == {"inference/loading.py", "inference/shared_base.py"}
    hashers = {
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*.py")
        if "weights_sha256(" in path.read_text(encoding="utf-8")
    }
    # the registry defines it, the recipes record it, the loader checks it
    assert hashers == {
        "models/registry.py",
        "recipes/finetune_classifier.py",
        "recipes/finetune_chat.py",
        "inference/loading.py",
    }
