"""The objects one app instance owns, built in its lifespan (never at import)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.jobs.layout import DataDir
from tuneforge.jobs.store import JobStore
from tuneforge.jobs.tables import Job
from tuneforge.jobs.worker import Worker
from tuneforge.server.metrics import Metrics
from tuneforge.server.model_cache import CacheSettings, ModelCache
from tuneforge.server.ratelimit import RateLimiter
from tuneforge.server.settings import Settings
from tuneforge.server.storage_health import DatabaseHealth

DEFAULT_BASE_ID = "all-MiniLM-L6-v2"


@dataclass
class AppState:
    """Settings, database, storage, loaded models, limiter, metrics and local workers."""

    settings: Settings
    engine: Engine
    store: JobStore
    layout: DataDir
    base_models: dict[str, str]
    models: ModelCache
    limiters: dict[str, RateLimiter]
    metrics: Metrics
    workers: list[Worker] = field(default_factory=list)
    # (project, model name or alias) -> (model id, valid until monotonic time)
    resolved: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)
    db_health: DatabaseHealth = field(default_factory=DatabaseHealth)

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.store.sessions

    def job_counts(self) -> dict[str, int]:
        """Jobs by status (for /metrics)."""
        with self.sessions() as s:
            rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        return {status: int(n) for status, n in rows}

    def resolve_base(self, model: str) -> tuple[str, str] | None:
        """(id, model spec) of a base model id, ``default`` naming the default one."""
        if model == "default":
            model = DEFAULT_BASE_ID
        spec = self.base_models.get(model)
        return (model, spec) if spec is not None else None


def rate_limits(settings: Settings) -> dict[str, int]:
    """Requests per minute by kind: per key, ``api`` (training, files, jobs, models, admin)
    and ``inference`` (chat completions, classify); per client address, ``invalid_key``
    (requests with an invalid or revoked key); 0 is no limit."""
    return {
        "api": settings.rate_limit_per_minute,
        "inference": settings.inference_rate_limit_per_minute,
        "invalid_key": settings.invalid_key_rate_limit_per_minute,
    }


def cache_settings(settings: Settings) -> CacheSettings:
    """How the server hosts models, from its settings."""
    return CacheSettings(
        max_bytes=settings.model_cache_mb * 1024 * 1024,
        backend=settings.backend,
        max_accuracy_drop=settings.max_accuracy_drop,
        max_batch_size=settings.batch_max_size,
        max_wait_ms=settings.batch_max_wait_ms,
        max_queue=settings.queue_max_texts,
        pinned=frozenset(settings.pinned_models),
        threads=settings.inference_threads,
        onnx_threads=settings.onnx_threads,
    )


def base_model_table(settings: Settings) -> dict[str, str]:
    """Base model id -> spec understood by ``resolve_base_model`` (``default``, a path)."""
    table = {DEFAULT_BASE_ID: "default"}
    for name, spec in settings.base_models.items():
        table[name] = str(Path(spec).resolve()) if Path(spec).is_dir() else spec
    return table
