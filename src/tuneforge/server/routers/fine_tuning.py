"""``/v1/fine_tuning/jobs``: create, list, retrieve, cancel, pause, resume, events,
checkpoints (OpenAI-compatible)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request

from tuneforge.server.deps import State, Trainer
from tuneforge.server.errors import APIError
from tuneforge.server.schemas.jobs import (
    CheckpointList,
    JobCreate,
    JobEventList,
    JobList,
    JobObject,
)
from tuneforge.server.services import jobs as service

METADATA_KEY = re.compile(r"^metadata\[(?P<key>[^\[\]]{1,64})\]$")


def metadata_filter(items: list[tuple[str, str]]) -> dict[str, str]:
    """``metadata[key]=value`` query parameters (the OpenAI form) as a dict.

    Raises:
        APIError: A ``metadata`` parameter of another form, or a key given twice.
    """
    out: dict[str, str] = {}
    for name, value in items:
        if not name.startswith("metadata"):
            continue
        match = METADATA_KEY.match(name)
        if match is None or match["key"] in out:
            raise APIError(
                400,
                f"Invalid metadata filter {name!r}: use metadata[KEY]=VALUE, each key once.",
                code="invalid_request",
                param="metadata",
            )
        out[match["key"]] = value
    return out


router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


@router.post("", response_model=JobObject)
def create_job(state: State, principal: Trainer, body: JobCreate) -> dict:
    """Create a fine-tuning job; its files are validated before it is queued."""
    with state.sessions() as session:
        job = service.create_job(state, session, principal.project, body)
        return service.job_object(job)


@router.get("", response_model=JobList)
def list_jobs(
    request: Request,
    state: State,
    principal: Trainer,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict:
    """List the project's jobs, newest first; ``metadata[key]=value`` (repeatable) keeps
    the jobs whose metadata has that value."""
    metadata = metadata_filter(request.query_params.multi_items())
    with state.sessions() as session:
        rows, more = service.list_jobs(session, principal.project, after, limit, metadata)
        return {"object": "list", "data": [service.job_object(j) for j in rows], "has_more": more}


@router.get("/{fine_tuning_job_id}", response_model=JobObject)
def retrieve_job(state: State, principal: Trainer, fine_tuning_job_id: str) -> dict:
    """Retrieve a job."""
    with state.sessions() as session:
        return service.job_object(service.get_job(session, principal.project, fine_tuning_job_id))


def _change(state: State, project: str, job_id: str, action: str) -> dict:
    with state.sessions() as session:
        job = service.change_state(state.store, session, project, job_id, action)
        return service.job_object(job)


@router.post("/{fine_tuning_job_id}/cancel", response_model=JobObject)
def cancel_job(state: State, principal: Trainer, fine_tuning_job_id: str) -> dict:
    """Cancel a job; a running one stops within seconds."""
    return _change(state, principal.project, fine_tuning_job_id, "cancel")


@router.post("/{fine_tuning_job_id}/pause", response_model=JobObject)
def pause_job(state: State, principal: Trainer, fine_tuning_job_id: str) -> dict:
    """Pause a queued or running job (its checkpoints are kept)."""
    return _change(state, principal.project, fine_tuning_job_id, "pause")


@router.post("/{fine_tuning_job_id}/resume", response_model=JobObject)
def resume_job(state: State, principal: Trainer, fine_tuning_job_id: str) -> dict:
    """Resume a paused job from its last complete checkpoint."""
    return _change(state, principal.project, fine_tuning_job_id, "resume")


@router.get("/{fine_tuning_job_id}/events", response_model=JobEventList)
def list_events(
    state: State,
    principal: Trainer,
    fine_tuning_job_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict:
    """A job's events, newest first."""
    with state.sessions() as session:
        service.get_job(session, principal.project, fine_tuning_job_id)
        rows, more = service.list_events(session, fine_tuning_job_id, after, limit)
        return {"object": "list", "data": [service.event_object(e) for e in rows], "has_more": more}


@router.get("/{fine_tuning_job_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(
    state: State,
    principal: Trainer,
    fine_tuning_job_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict:
    """A job's checkpoints, newest first."""
    with state.sessions() as session:
        job = service.get_job(session, principal.project, fine_tuning_job_id)
        steps = service.kept_checkpoint_steps(state, job)
        rows, more = service.list_checkpoints(session, fine_tuning_job_id, after, limit, steps)
        data = [service.checkpoint_object(c, job) for c in rows]
    return {
        "object": "list",
        "data": data,
        "has_more": more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
