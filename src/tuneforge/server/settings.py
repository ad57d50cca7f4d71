"""Server settings, declared once: flag > environment (``TUNEFORGE_*``) > config file > default.

``tuneforge serve``, ``worker`` and ``keys`` pass only the flags a user gave (as init
arguments); pydantic-settings layers the environment and the optional config file
(``--config FILE`` or ``TUNEFORGE_CONFIG``, YAML or JSON) under them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tuneforge.config import load_yaml
from tuneforge.errors import InputError
from tuneforge.jobs.db import mask_url, sqlite_url


class Settings(BaseSettings):
    """Everything ``tuneforge serve`` can be told; each field is also ``TUNEFORGE_<NAME>``
    and a key of the config file."""

    model_config = SettingsConfigDict(env_prefix="TUNEFORGE_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface `serve` binds.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port `serve` listens on.")
    log_level: str = Field("info", description="uvicorn log level.")

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
    # Caps an upload is inspected under (413 beyond): what a file holds, not what it weighs.
    max_upload_rows: int = Field(
        2_000_000,
        gt=0,
        description="Most rows in an uploaded file (lines of a CSV/TSV/JSONL file, rows of a "
        "Parquet file); checked before the rows are parsed.",
    )
    max_upload_decompressed_bytes: int = Field(
        512 * 1024 * 1024,
        gt=0,
        description="Most bytes of data in an uploaded file once decompressed (a Parquet "
        "file's text and label columns as decoded; a text file's size).",
    )
    max_upload_memory_bytes: int = Field(
        4 * 1024 * 1024 * 1024,
        gt=0,
        description="Most memory inspecting one upload may take, estimated before it is "
        "parsed from its rows, size and the values its syntax can create.",
    )
    rate_limit_per_minute: int = Field(
        600,
        ge=0,
        description="Requests per minute per API key to the training, files, jobs, models "
        "and admin endpoints (0: no limit).",
    )
    inference_rate_limit_per_minute: int = Field(
        60_000,
        ge=0,
        description="Requests per minute per API key to /v1/chat/completions and "
        "/v1/classify (0: no limit); an abuse cap: overload gets 503 + Retry-After.",
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
        None,
        ge=1,
        le=256,
        description="ONNX Runtime threads per model (default: the CPUs this process may use).",
    )
    # Operations: readiness, invalid keys, disk space.
    worker_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="/readyz: a worker is alive if it beat within this long (workers beat "
        "every second; a worker that stops cleanly deregisters at once).",
    )
    invalid_key_rate_limit_per_minute: int = Field(
        60,
        ge=0,
        description="Requests with an invalid or revoked API key per minute per client "
        "address before that address gets 429 (0: no limit).",
    )
    min_free_disk_mb: int = Field(
        1024,
        ge=0,
        description="Free space the data disk needs (MiB): below it workers take no job, "
        "a training attempt that dies fails with disk_full, and /readyz is not ready "
        "(0: no floor).",
    )
    # Fine-tuning jobs: how much training one job may ask for.
    max_train_steps: int = Field(
        100_000,
        ge=1,
        description="Most optimizer steps one fine-tuning job may plan (epochs x steps per "
        "epoch); a job over it is refused with 400 at creation.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init arguments) > environment > config file > defaults."""
        # The file comes from ``config_file=`` (the --config flag) or TUNEFORGE_CONFIG.
        path = getattr(init_settings, "init_kwargs", {}).get("config_file")
        path = path or os.environ.get("TUNEFORGE_CONFIG")
        if not path:
            return init_settings, env_settings
        values = read_settings_file(Path(path), settings_cls)
        return init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=values)

    def min_free_bytes(self) -> int:
        """``min_free_disk_mb`` in bytes."""
        return self.min_free_disk_mb * 1024 * 1024

    def resolved_database_url(self) -> str:
        """The database URL (the SQLite default inside the data directory)."""
        return self.database_url or sqlite_url(Path(self.data_dir) / "tuneforge.db")

    def masked_database_url(self) -> str:
        """The database URL with any password replaced by ``***`` (safe to print)."""
        return mask_url(self.resolved_database_url())


def read_settings_file(path: Path, settings_cls: type[BaseSettings] = Settings) -> dict[str, Any]:
    """The settings in a YAML or JSON file; unknown keys are an error naming them.

    Raises:
        InputError: Missing, unreadable, not a mapping, or unknown keys.
    """
    import yaml  # JSON is YAML too

    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise InputError(f"server config {path}: file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"server config {path}: not readable YAML or JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise InputError(f"server config {path}: expected a mapping of settings")
    known = set(settings_cls.model_fields)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(
            f"server config {path}: unknown settings {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return raw


def load_settings(flags: Mapping[str, Any] | None = None) -> Settings:
    """The settings a command runs with: the flags given (None = not given) over the
    environment over the config file (flag ``config_file`` or ``TUNEFORGE_CONFIG``) over the
    defaults.

    Raises:
        InputError: A value from any source is invalid (the message names the setting).
    """
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}, got {e.get('input')!r}"
            for e in exc.errors()
        )
        raise InputError(
            f"invalid server setting {problems} (from a flag, TUNEFORGE_<NAME> or the config file)"
        ) from None
