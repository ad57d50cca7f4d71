"""Refuse model directories that would run code on load: pickle weights, custom model code.

tuneforge never unpickles and never runs code shipped with a checkpoint. A directory whose
weights exist only as ``pytorch_model.bin`` (a pickle), whose ``config.json`` or
``tokenizer_config.json`` names custom classes (``auto_map``), or that carries ``.py``
files is refused with an :class:`~tuneforge.errors.InputError` *before* transformers opens
anything in it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.errors import InputError

_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
_CONFIG_FILES = ("config.json", "tokenizer_config.json", "adapter_config.json")

CONVERT_HINT = (
    "convert it once in a trusted environment: "
    "AutoModel.from_pretrained(DIR).save_pretrained(NEW_DIR, safe_serialization=True)"
)


def check_safe_model_dir(path: Path, what: str = "model", *, needs_weights: bool = True) -> None:
    """Raise unless ``path`` can be loaded without unpickling or running its code.

    Args:
        path: A Hugging Face checkpoint directory (a base model, or a bundle's ``model/``,
            ``adapter/`` or ``tokenizer/`` folder).
        what: How to name the directory in the error message.
        needs_weights: Whether the directory must hold weights (a tokenizer folder does not).

    Raises:
        InputError: Weights only as pickle files, custom code (``auto_map`` or ``.py`` files).
    """
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else []
    code = sorted(p.name for p in files if p.suffix == ".py")
    if code:
        raise InputError(
            f"{what} {path} ships Python code ({', '.join(code[:3])}); tuneforge never runs "
            "code from a checkpoint (trust_remote_code is always off). Use a checkpoint of a "
            "model class built into transformers (e.g. BERT, RoBERTa, MiniLM)"
        )
    for name in _CONFIG_FILES:
        config = path / name
        if config.is_file() and "auto_map" in _read_json(config):
            raise InputError(
                f"{what} {path}: {name} has an 'auto_map' (custom model code); tuneforge never "
                "runs code from a checkpoint (trust_remote_code is always off). Use a checkpoint "
                "of a model class built into transformers (e.g. BERT, RoBERTa, MiniLM)"
            )
    if not needs_weights:
        return
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    pickles = sorted(p.name for p in files if p.suffix in _PICKLE_SUFFIXES)
    if pickles and not safetensors:
        raise InputError(
            f"{what} {path} ships its weights only as pickle ({', '.join(pickles[:3])}); "
            "tuneforge loads safetensors only, because unpickling can run arbitrary code. "
            f"{CONVERT_HINT}"
        )


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
    return value if isinstance(value, dict) else {}
