"""Server settings: environment variables (``TUNEFORGE_*``) overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tuneforge.jobs.db import sqlite_url


class Settings(BaseSettings):
    """Everything ``tuneforge serve`` can be told; each field is also ``TUNEFORGE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TUNEFORGE_", extra="ignore")

    data_dir: Path = Field(Path("tuneforge-data"), description="Uploaded files, bundles, jobs.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file DATA_DIR/tuneforge.db."
    )
    workers: int = Field(1, ge=0, description="Local job workers started with the server.")
    lease_seconds: float = Field(
        30.0, gt=0, description="Job lease; a dead worker's job is taken again after this long."
    )
    max_attempts: int = Field(3, ge=1, description="Attempts before a crashing job fails.")
    max_upload_bytes: int = Field(512 * 1024 * 1024, gt=0, description="Upload size limit.")
    rate_limit_per_minute: int = Field(
        600, ge=0, description="Requests per minute per API key (0: no limit)."
    )
    base_models: dict[str, str] = Field(
        default_factory=dict,
        description="Extra base models: id -> local directory or hub id (JSON in the env).",
    )
    model_cache_mb: int = Field(
        4096, ge=1, description="Memory for loaded models (MiB); least recently used go first."
    )
    pinned_models: list[str] = Field(
        default_factory=list, description="Model ids never evicted from memory."
    )
    backend: str = Field(
        "auto",
        description="Inference backend: auto (fastest within max_accuracy_drop), "
        "torch, onnx or onnx-int8.",
    )
    max_accuracy_drop: float = Field(
        0.01, ge=0, le=1, description="auto backend: accuracy drop allowed (0.01 = 1 point)."
    )
    batch_max_size: int = Field(32, ge=1, le=1024, description="Micro-batch: most texts.")
    batch_max_wait_ms: float = Field(5.0, ge=0, le=1000, description="Micro-batch: most wait.")
    queue_max_texts: int = Field(
        1024, ge=1, description="Texts waiting per model before 503 (Retry-After)."
    )
    request_timeout_seconds: float = Field(
        30.0, gt=0, description="Inference request timeout (504 after it)."
    )
    inference_threads: int = Field(2, ge=1, le=64, description="Threads running batches.")
    onnx_threads: int | None = Field(
        None, ge=1, le=256, description="ONNX Runtime threads per model (default: cores)."
    )
    worker_timeout_seconds: float = Field(
        90.0, gt=0, description="/readyz: a worker is alive if it beat within this long."
    )

    def resolved_database_url(self) -> str:
        """The database URL (the SQLite default inside the data directory)."""
        return self.database_url or sqlite_url(Path(self.data_dir) / "tuneforge.db")
