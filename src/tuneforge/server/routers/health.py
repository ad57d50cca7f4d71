"""``/healthz``, ``/readyz`` and Prometheus ``/metrics``.

No API key is needed for these, so they name no tenant: no project, model id or job id (an
aggregate, never a per-model label). ``/readyz?model=ID`` is the exception: it needs a key
and sees only the key's project, as the rest of the API does.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tuneforge.jobs.db import ping, probe
from tuneforge.jobs.disk import describe_low, free_bytes
from tuneforge.jobs.tables import Base
from tuneforge.server.auth import Principal
from tuneforge.server.deps import (
    Credentials,
    State,
    admit,
    authenticate_credentials,
    client_address,
)
from tuneforge.server.services.models import bundle_for

router = APIRouter(tags=["operations"])
TABLES = [table.name for table in Base.metadata.sorted_tables]


@router.get("/healthz")
def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        401: {"description": "``?model=`` without a valid API key"},
        404: {"description": "``?model=`` names no model of the key's project"},
        503: {"description": "Not ready", "content": {"application/json": {}}},
    },
)
def readyz(
    state: State, credentials: Credentials, request: Request, model: str | None = None
) -> JSONResponse:
    """The database answers and (unless no worker is configured) a worker is alive; with
    ``?model=ID`` and an API key, whether that model of the key's project is loaded and
    serving (503 until it is)."""
    if model is not None:
        principal = authenticate_credentials(state, credentials, client_address(request))
        return _model_readiness(state, principal, model)
    reachable = ping(state.engine)
    problem = None
    if reachable:
        problem = probe(state.engine, TABLES) or state.db_health.recent()
    database = reachable and problem is None
    workers = state.store.live_workers(state.settings.worker_timeout_seconds) if database else 0
    need_worker = state.settings.workers > 0
    floor = state.settings.min_free_bytes()
    free = free_bytes(state.layout.root)
    disk = floor <= 0 or free >= floor
    ready = database and disk and (workers > 0 or not need_worker)
    loaded = state.models.describe()
    body: dict = {
        "status": "ready" if ready else "not_ready",
        "database": "ok" if database else ("error" if reachable else "unreachable"),
    }
    if problem is not None:
        body["database_error"] = problem
    body.update(disk="ok" if disk else "low", disk_free_bytes=free)
    if not disk:
        body["disk_error"] = describe_low(free, floor)
    body.update(
        live_workers=workers,
        models_loaded=len(loaded["models"]),
        model_memory_bytes=loaded["used_bytes"],
    )
    return JSONResponse(body, status_code=200 if ready else 503)


def _model_readiness(state: State, principal: Principal, model: str) -> JSONResponse:
    admit(state, principal, ("train", "infer"), "api")
    with state.store.read() as session:
        model_id, _bundle = bundle_for(state, session, principal.project, model)
    loaded = state.models.describe()["models"].get(model_id)
    body = {"model": model, "status": "ready" if loaded else "not_loaded", **(loaded or {})}
    return JSONResponse(body, status_code=200 if loaded else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
def metrics(state: State) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
