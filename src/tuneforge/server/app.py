"""The FastAPI app factory: ``create_app(settings)``; heavy objects are built in lifespan."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from tuneforge.jobs.db import make_engine, migrate
from tuneforge.jobs.layout import DataDir
from tuneforge.jobs.store import JobStore
from tuneforge.jobs.worker import Worker, WorkerSettings
from tuneforge.server.errors import ERROR_RESPONSES, install_error_handlers
from tuneforge.server.limits import BodySizeLimit
from tuneforge.server.metrics import Metrics, MetricsMiddleware
from tuneforge.server.model_cache import ModelCache
from tuneforge.server.ratelimit import RateLimiter
from tuneforge.server.routers import files, fine_tuning, health, inference, models
from tuneforge.server.services.files import remove_stale_uploads
from tuneforge.server.settings import Settings
from tuneforge.server.state import AppState, base_model_table, cache_settings, rate_limits
from tuneforge.server.storage_health import (
    install_database_error_handler,
    install_disk_full_handler,
)

log = logging.getLogger("tuneforge.server")

DESCRIPTION = """Fine-tune text classifiers and serve them. The `/v1/files`,
`/v1/fine_tuning/jobs`, `/v1/models` and `/v1/chat/completions` endpoints follow the OpenAI API
(point the `openai` client's `base_url` here); `/v1/classify` and `/v1/aliases` are tuneforge's
own. Authenticate with `Authorization: Bearer <key>` (keys from `tuneforge keys create`)."""


def build_state(settings: Settings) -> AppState:
    """Open (and migrate) the database, the data directory and the caches."""
    url = settings.resolved_database_url()
    engine = make_engine(url)
    migrate(engine)
    layout = DataDir(settings.data_dir.resolve())
    layout.create()
    removed = remove_stale_uploads(layout)
    if removed:
        log.warning("removed %d upload(s) left half-written by a stopped server", removed)
    store = JobStore(engine)
    state = AppState(
        settings=settings,
        engine=engine,
        store=store,
        layout=layout,
        base_models=base_model_table(settings),
        models=ModelCache(cache_settings(settings)),
        limiters={kind: RateLimiter(n) for kind, n in rate_limits(settings).items()},
        metrics=None,  # type: ignore[arg-type]  # set below: Metrics reads the state
    )
    try:
        fail_interrupted_validations(store)
    except DBAPIError as exc:  # a damaged table: start anyway; /readyz says why
        log.error("could not check for interrupted validations: %s", getattr(exc, "orig", exc))
    state.metrics = Metrics(
        state.job_counts,
        lambda: store.live_workers(settings.worker_timeout_seconds),
        rate_limits=rate_limits(settings),
    )
    return state


def fail_interrupted_validations(store: JobStore) -> None:
    """Jobs left in ``validating_files`` by a server that stopped mid-request: fail them
    with the reason (their files were never checked), so none waits forever."""
    from sqlalchemy import select

    from tuneforge.jobs.status import JobStatus
    from tuneforge.jobs.tables import Job

    with store.sessions.begin() as session:
        query = select(Job).where(Job.status == JobStatus.VALIDATING_FILES)
        for job in session.scalars(query):
            message = "The server stopped while validating the files; create the job again."
            store.transition(
                job,
                JobStatus.FAILED,
                error={"code": "validation_interrupted", "message": message, "param": None},
            )
            store.add_event(job.id, message, level="error", session=session)


def start_workers(state: AppState) -> None:
    """Start ``settings.workers`` local workers, each in a thread (training runs in children)."""
    url = state.settings.resolved_database_url()
    for _ in range(state.settings.workers):
        worker = Worker(
            state.engine,
            url,
            state.layout.root,
            WorkerSettings(
                lease_seconds=state.settings.lease_seconds,
                min_free_bytes=state.settings.min_free_bytes(),
            ),
        )
        thread = threading.Thread(target=worker.run, name=f"tuneforge-{worker.id}", daemon=True)
        thread.start()
        state.workers.append(worker)
        state.threads.append(thread)


def stop_workers(state: AppState) -> None:
    """Stop local workers; a running job goes back to the queue."""
    for worker in state.workers:
        worker.stop()
    for thread in state.threads:
        thread.join(timeout=30)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The tuneforge API app.

    Args:
        settings: Server settings (default: from ``TUNEFORGE_*`` environment variables).
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state.tf if getattr(app.state, "tf", None) else build_state(settings)
        app.state.tf = state
        start_workers(state)
        try:
            yield
        finally:
            stop_workers(state)
            state.models.close()
            state.engine.dispose()

    app = FastAPI(
        title="tuneforge",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_database_error_handler(app)
    install_disk_full_handler(app)
    for router in (
        files.router,
        fine_tuning.router,
        models.router,
        inference.router,
    ):
        app.include_router(router, responses=ERROR_RESPONSES)
    app.include_router(health.router)
    app.add_middleware(_LazyMetrics)
    app.add_middleware(BodySizeLimit, upload_limit=settings.max_upload_bytes)
    return app


class _LazyMetrics:
    """Metrics middleware that finds the registry in the app state once lifespan built it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        state = getattr(scope.get("app").state, "tf", None) if scope.get("app") else None
        if state is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await MetricsMiddleware(self.app, state.metrics)(scope, receive, send)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tuneforge")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"
