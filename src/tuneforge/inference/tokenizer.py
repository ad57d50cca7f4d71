"""Load a bundle's tokenizer fast: the Rust ``tokenizers`` file, without transformers.

Importing transformers to build a tokenizer costs more than a second of CPU before the
first prediction. A bundle of a BERT-family model holds ``tokenizer.json``, the complete
fast tokenizer (normaliser, pre-tokeniser, vocabulary, special-token template), so
``tokenizers.Tokenizer.from_file`` gives the same ids. The transformers tokenizer is
loaded only if a caller uses its wider API (``tokenizer(texts, return_tensors=...)``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

TOKENIZER_FILE = "tokenizer.json"
# Tokenizer classes whose ``tokenizer.json`` is the whole tokenizer: transformers adds no
# special tokens of its own around it (checked against AutoTokenizer by the tests).
FILE_COMPLETE = {
    "BertTokenizer",
    "BertTokenizerFast",
    "DistilBertTokenizer",
    "DistilBertTokenizerFast",
    "ElectraTokenizer",
    "ElectraTokenizerFast",
    "MPNetTokenizer",
    "MPNetTokenizerFast",
    "RobertaTokenizer",
    "RobertaTokenizerFast",
    "XLMRobertaTokenizer",
    "XLMRobertaTokenizerFast",
    "CamembertTokenizer",
    "CamembertTokenizerFast",
    "DebertaV2Tokenizer",
    "DebertaV2TokenizerFast",
}


class FileTokenizer:
    """A ``tokenizers.Tokenizer`` with the few attributes tuneforge's encoding uses.

    ``backend_tokenizer``, ``pad_token_id`` and ``truncation_side`` are read from the
    bundle's files; any other attribute (calling it like a transformers tokenizer, ...)
    loads the transformers tokenizer once and is answered by it.
    """

    def __init__(self, directory: Path, backend: Any, config: dict[str, Any]) -> None:
        self.directory = directory
        self.backend_tokenizer = backend
        self.truncation_side = config.get("truncation_side") or "right"
        pad = config.get("pad_token")
        if isinstance(pad, dict):  # an AddedToken saved in full
            pad = pad.get("content")
        self.pad_token_id = backend.token_to_id(pad) if isinstance(pad, str) else None
        self._full: Any = None
        self._lock = threading.Lock()

    def _transformers(self) -> Any:
        with self._lock:
            if self._full is None:
                from transformers import AutoTokenizer

                self._full = AutoTokenizer.from_pretrained(self.directory, trust_remote_code=False)
            return self._full

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._transformers()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._transformers(), name)


def load_inference_tokenizer(directory: Path) -> Any:
    """The tokenizer saved in ``directory``: a ``FileTokenizer`` when the tokenizer file
    is complete on its own, else the transformers tokenizer."""
    config_path = directory / "tokenizer_config.json"
    file = directory / TOKENIZER_FILE
    config: dict[str, Any] = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
    if file.is_file() and config.get("tokenizer_class") in FILE_COMPLETE:
        from tokenizers import Tokenizer

        return FileTokenizer(directory, Tokenizer.from_file(str(file)), config)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
