"""``/healthz``, ``/readyz`` and Prometheus ``/metrics`` (no API key needed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tuneforge.jobs.db import ping
from tuneforge.server.deps import State

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready", "content": {"application/json": {}}}},
)
def readyz(state: State, model: str | None = None) -> JSONResponse:
    """The database answers and (unless no worker is configured) a worker is alive; with
    ``?model=ID``, whether that model is loaded and serving (503 until it is)."""
    if model is not None:
        loaded = state.models.describe()["models"].get(model)
        body = {"model": model, "status": "ready" if loaded else "not_loaded", **(loaded or {})}
        return JSONResponse(body, status_code=200 if loaded else 503)
    database = ping(state.engine)
    workers = state.store.live_workers(state.settings.worker_timeout_seconds) if database else 0
    need_worker = state.settings.workers > 0
    ready = database and (workers > 0 or not need_worker)
    body = {
        "status": "ready" if ready else "not_ready",
        "database": "ok" if database else "unreachable",
        "live_workers": workers,
        "models_loaded": state.models.loaded(),
        "model_memory_bytes": state.models.describe()["used_bytes"],
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
def metrics(state: State) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
