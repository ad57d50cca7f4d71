"""Loaded fine-tuned models: an LRU of ``Predictor`` objects, loaded on first use."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from tuneforge.inference.predictor import Predictor


class ModelCache:
    """At most ``size`` predictors in memory; the least recently used is dropped first.

    Loading happens outside the cache lock, one load per model at a time, so a slow load
    never blocks requests for models already loaded.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._models: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, model_id: str, bundle: Path) -> Predictor:
        """The predictor of ``model_id``, loading ``bundle`` if needed."""
        with self._lock:
            if model_id in self._models:
                self._models.move_to_end(model_id)
                return self._models[model_id]
            load_lock = self._loading.setdefault(model_id, threading.Lock())
        with load_lock:
            with self._lock:
                if model_id in self._models:
                    return self._models[model_id]
            predictor = Predictor.load(bundle, device="cpu")
            with self._lock:
                self._models[model_id] = predictor
                while len(self._models) > self.size:
                    self._models.popitem(last=False)
                self._loading.pop(model_id, None)
            return predictor

    def evict(self, model_id: str) -> None:
        """Drop a model (deleted)."""
        with self._lock:
            self._models.pop(model_id, None)

    def loaded(self) -> list[str]:
        """Ids of the loaded models, least recently used first."""
        with self._lock:
            return list(self._models)
