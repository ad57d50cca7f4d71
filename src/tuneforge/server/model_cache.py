"""Hosted models: loaded on first use, kept in an LRU bounded by memory, optionally pinned.

Each loaded model has a ``MicroBatcher`` that coalesces concurrent requests. Full bundles use
the fastest backend within the accuracy bound recorded at export (``tuneforge export``);
adapter bundles (LoRA, IA3) run on torch and share one copy of their base model.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuneforge.bundle import read_bundle
from tuneforge.inference.backends import TorchBackend
from tuneforge.inference.batching import MicroBatcher
from tuneforge.inference.predictor import Predictor
from tuneforge.inference.shared_base import SharedBases, tensor_bytes

log = logging.getLogger("tuneforge.server")
# After a failed load, requests for that model fail at once for this long (a broken bundle
# asked for by many clients is not loaded once per request), then loading is tried again.
RETRY_FAILED_LOAD_SECONDS = 5.0


class ModelUnavailable(Exception):
    """A model's bundle could not be loaded; the cause is logged, not carried.

    Attributes:
        model_id: The model.
        retry_after: Seconds until loading it is tried again.
    """

    def __init__(self, model_id: str, retry_after: float) -> None:
        super().__init__(f"model {model_id} could not be loaded")
        self.model_id = model_id
        self.retry_after = retry_after


@dataclass
class LoadedModel:
    """A model ready to serve: predictor, batcher, memory it holds of its own."""

    model_id: str
    predictor: Predictor
    batcher: MicroBatcher
    own_bytes: int
    base_key: str | None
    load_seconds: float

    @property
    def backend(self) -> str:
        return self.predictor.backend_name


@dataclass(frozen=True)
class CacheSettings:
    """How models are hosted."""

    max_bytes: int = 4 * 1024**3
    backend: str = "auto"
    max_accuracy_drop: float = 0.01
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    pinned: frozenset[str] = frozenset()
    threads: int = 2
    onnx_threads: int | None = None


class ModelCache:
    """LRU of loaded models bounded by ``max_bytes`` (pinned models are never evicted)."""

    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._failed: dict[str, float] = {}  # model id -> monotonic time to retry loading
        self.bases = SharedBases()
        self._tokenizers: dict[str, object] = {}
        self.executor = ThreadPoolExecutor(settings.threads, thread_name_prefix="tuneforge-infer")
        self.evictions = 0

    def get(self, model_id: str, bundle: Path) -> LoadedModel:
        """The loaded model, loading (and evicting others) if needed. Thread-safe.

        Raises:
            ModelUnavailable: The bundle does not load (the cause is logged once per try;
                for ``RETRY_FAILED_LOAD_SECONDS`` after a failure, without trying again).
        """
        with self._lock:
            if model_id in self._models:
                self._models.move_to_end(model_id)
                return self._models[model_id]
            load_lock = self._loading.setdefault(model_id, threading.Lock())
        with load_lock:
            with self._lock:
                if model_id in self._models:
                    return self._models[model_id]
                retry_at = self._failed.get(model_id, 0.0)
            if retry_at > time.monotonic():
                raise ModelUnavailable(model_id, retry_at - time.monotonic())
            try:
                loaded = self._load(model_id, bundle)
            except Exception as exc:
                log.exception("model %s could not be loaded from %s", model_id, bundle)
                with self._lock:
                    self._failed[model_id] = time.monotonic() + RETRY_FAILED_LOAD_SECONDS
                raise ModelUnavailable(model_id, RETRY_FAILED_LOAD_SECONDS) from exc
            with self._lock:
                self._models[model_id] = loaded
                self._loading.pop(model_id, None)
                self._failed.pop(model_id, None)
                self._evict_over_budget(keep=model_id)
            return loaded

    def peek(self, model_id: str) -> LoadedModel | None:
        """The model if it is loaded (marked as just used), else None; never loads."""
        with self._lock:
            loaded = self._models.get(model_id)
            if loaded is not None:
                self._models.move_to_end(model_id)
            return loaded

    def _load(self, model_id: str, bundle: Path) -> LoadedModel:
        started = time.perf_counter()
        info = read_bundle(bundle)
        base_key = None
        if info.adapter:
            import torch

            model, base_key, own = self.bases.load_adapter_model(info)
            tokenizer = self._tokenizer(info.path / "tokenizer")
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            predictor = Predictor(info, TorchBackend(model, pad_id, torch.device("cpu")), tokenizer)
            _trim_heap()  # the temporary full model built while loading goes back to the OS
        else:
            predictor = Predictor.load(
                bundle,
                device="cpu",
                backend=self.settings.backend,
                max_accuracy_drop=self.settings.max_accuracy_drop,
                threads=self.settings.onnx_threads,
                spin=False,  # the cores are shared with the event loop
            )
            own = _predictor_bytes(predictor)
        batcher = MicroBatcher(
            _runner(predictor),
            max_batch_size=self.settings.max_batch_size,
            max_wait_ms=self.settings.max_wait_ms,
            max_queue=self.settings.max_queue,
            executor=self.executor,
        )
        return LoadedModel(
            model_id, predictor, batcher, own, base_key, time.perf_counter() - started
        )

    def _tokenizer(self, folder: Path):
        """Adapters of one base usually carry the same tokenizer: load it once (by content)."""
        import hashlib

        from transformers import AutoTokenizer

        from tuneforge.models.safety import check_safe_model_dir

        digest = hashlib.sha256()
        for file in sorted(folder.iterdir()):
            if file.is_file():
                digest.update(file.name.encode() + b"\0" + file.read_bytes())
        key = digest.hexdigest()
        with self._lock:
            tokenizer = self._tokenizers.get(key)
        if tokenizer is None:
            check_safe_model_dir(folder, "tokenizer", needs_weights=False)
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
            with self._lock:
                tokenizer = self._tokenizers.setdefault(key, tokenizer)
        return tokenizer

    def _used_bytes(self) -> int:
        bases = {m.base_key for m in self._models.values() if m.base_key}
        return sum(m.own_bytes for m in self._models.values()) + sum(
            self.bases.base_bytes(k) for k in bases
        )

    def _evict_over_budget(self, keep: str) -> None:
        for model_id in list(self._models):
            if self._used_bytes() <= self.settings.max_bytes:
                break
            if model_id == keep or model_id in self.settings.pinned:
                continue
            self._drop(model_id)
            self.evictions += 1

    def _drop(self, model_id: str) -> None:
        gone = self._models.pop(model_id, None)
        in_use = gone is not None and any(
            m.base_key == gone.base_key for m in self._models.values()
        )
        if gone is not None and gone.base_key and not in_use:
            self.bases.drop(gone.base_key)

    def evict(self, model_id: str) -> None:
        """Drop a model (deleted)."""
        with self._lock:
            self._drop(model_id)
            self._failed.pop(model_id, None)

    def loaded(self) -> list[str]:
        """Ids of the loaded models, least recently used first."""
        with self._lock:
            return list(self._models)

    def describe(self) -> dict:
        """Memory and backends of the loaded models (for /readyz)."""
        with self._lock:
            return {
                "used_bytes": self._used_bytes(),
                "max_bytes": self.settings.max_bytes,
                "models": {
                    m.model_id: {
                        "backend": m.backend,
                        "own_bytes": m.own_bytes,
                        "shared_base": m.base_key is not None,
                        "queued": m.batcher.queued,
                    }
                    for m in self._models.values()
                },
            }

    def close(self) -> None:
        """Stop the inference threads."""
        self.executor.shutdown(wait=False, cancel_futures=True)


def _runner(predictor: Predictor):
    """Batch function: one row per text, the probabilities then the text's token count
    (tokenised once, for the answer's ``usage``)."""
    from tuneforge.data.encode import encode_texts
    from tuneforge.models.forward import sigmoid, softmax

    def run(texts) -> np.ndarray:
        encoded = encode_texts(predictor.tokenizer, list(texts), predictor.info.max_length)
        logits = predictor.backend.logits(encoded, len(texts))
        probs = sigmoid(logits) if predictor.multi_label else softmax(logits)
        return np.hstack([probs, encoded.lengths[:, None].astype(np.float64)])

    return run


def _trim_heap() -> None:
    """Return freed heap memory to the OS (glibc); a no-op elsewhere."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _predictor_bytes(predictor: Predictor) -> int:
    model = predictor.model
    if model is not None:
        return tensor_bytes(model.state_dict().values())
    path = getattr(predictor.backend, "path", None)
    return int(Path(path).stat().st_size * 1.2) if path else 0
