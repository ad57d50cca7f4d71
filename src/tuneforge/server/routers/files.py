"""``/v1/files``: upload, list, retrieve, delete, content (OpenAI-compatible)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse

from tuneforge.server.deps import State, Trainer
from tuneforge.server.schemas.files import FileDeleted, FileList, FileObject
from tuneforge.server.services import files as service

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("", response_model=FileObject)
def upload_file(
    state: State,
    principal: Trainer,
    file: Annotated[UploadFile, File(description="CSV, TSV, JSONL (chat or table), Parquet.")],
    purpose: Annotated[str, Form(description="`fine-tune`.")],
) -> dict:
    """Upload a training or validation file."""
    caps = service.UploadCaps(
        max_upload_rows=state.settings.max_upload_rows,
        max_upload_decompressed_bytes=state.settings.max_upload_decompressed_bytes,
        max_upload_memory_bytes=state.settings.max_upload_memory_bytes,
    )
    with state.sessions() as session:
        row = service.create_file(
            session, state.layout, principal.project, file.file, file.filename, purpose, caps
        )
        return service.file_object(row)


@router.get("", response_model=FileList)
def list_files(
    state: State,
    principal: Trainer,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict:
    """List the project's files."""
    with state.sessions() as session:
        rows, more = service.list_files(session, principal.project, purpose, limit, after, order)
        data = [service.file_object(r) for r in rows]
    return {
        "object": "list",
        "data": data,
        "has_more": more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(state: State, principal: Trainer, file_id: str) -> dict:
    """Retrieve a file's metadata."""
    with state.sessions() as session:
        return service.file_object(service.get_file(session, principal.project, file_id))


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(state: State, principal: Trainer, file_id: str) -> dict:
    """Delete a file."""
    with state.sessions() as session:
        service.delete_file(session, state.layout, principal.project, file_id)
        session.commit()
    return {"id": file_id, "object": "file", "deleted": True}


@router.get(
    "/{file_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def file_content(state: State, principal: Trainer, file_id: str) -> FileResponse:
    """Download a file's bytes."""
    with state.sessions() as session:
        row = service.get_file(session, principal.project, file_id)
    return FileResponse(
        state.layout.file_path(row.storage_name),
        media_type="application/octet-stream",
        filename=row.filename,
    )
