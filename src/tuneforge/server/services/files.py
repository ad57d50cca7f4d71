"""Uploaded files: store under an id (never the given name), validate, list, delete."""

from __future__ import annotations

import os
import re
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.data.tables import TableTooLarge, read_table
from tuneforge.errors import InputError
from tuneforge.jobs.ids import new_id
from tuneforge.jobs.layout import DataDir
from tuneforge.jobs.status import UNFINISHED
from tuneforge.jobs.tables import File, Job
from tuneforge.server.errors import APIError, not_found
from tuneforge.server.text_checks import printable

PURPOSES = ("fine-tune",)
EXTENSIONS = (".jsonl", ".csv", ".tsv", ".parquet")
_UNSAFE = re.compile(r"[^\w.\- ()+,=@]")
_MAX_NAME = 255
_MAX_SUFFIX = 16
# Inspecting a file holds its decoded rows in memory (up to the estimate capped by
# max_upload_memory_bytes), and memory is the process's: inspections in one process run one
# at a time, so concurrent uploads wait for each other rather than add up.
_ONE_INSPECTION_AT_A_TIME = threading.Lock()


@dataclass(frozen=True)
class UploadCaps:
    """What an uploaded file may hold (from the server settings of the same names).

    Attributes:
        max_upload_rows: Most rows (lines of a text file, rows of a Parquet file).
        max_upload_decompressed_bytes: Most bytes of data once decompressed.
        max_upload_memory_bytes: Most memory reading the file may take (an estimate).
    """

    max_upload_rows: int
    max_upload_decompressed_bytes: int
    max_upload_memory_bytes: int


def display_name(raw: str | None) -> str:
    """A harmless display name: the last path component, no control or odd characters.

    ``../../etc/passwd`` becomes ``passwd``; the name is only ever shown, never used as a path.
    """
    name = unicodedata.normalize("NFKC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", name).strip(" .")
    if len(name) > _MAX_NAME:  # shorten the stem: the extension says what the file is
        stem, dot, ext = name.rpartition(".")
        suffix = dot + ext if stem and dot and len(ext) < _MAX_SUFFIX else ""
        name = name[: _MAX_NAME - len(suffix)].rstrip(" .") + suffix
    return name or "upload"


def file_object(row: File) -> dict[str, Any]:
    """The OpenAI ``File`` shape of a row."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": row.status,
        "status_details": row.status_details,
        "expires_at": None,
        "tuneforge": row.info,
    }


def create_file(
    session: Session,
    layout: DataDir,
    project: str,
    upload: BinaryIO,
    filename: str | None,
    purpose: str,
    caps: UploadCaps,
) -> File:
    """Store an upload, record what reading it as training data found, and commit its row.

    The bytes are staged under a hidden name and inspected there (under ``caps``: 413 beyond);
    any failure before the row is committed removes them, so no file is ever stored without
    its row.
    """
    if purpose not in PURPOSES:
        raise APIError(
            400,
            f"Unsupported purpose {purpose!r}; use one of: {', '.join(PURPOSES)}.",
            code="invalid_purpose",
            param="purpose",
        )
    name = display_name(filename)
    ext = Path(name).suffix.lower()
    if ext not in EXTENSIONS:
        raise APIError(
            400,
            f"Unsupported file type {ext or '(no extension)'!r} for {name!r}; upload "
            f"{', '.join(EXTENSIONS)} (OpenAI chat JSONL or tuneforge text/label tables).",
            code="unsupported_file",
            param="file",
        )
    file_id = new_id("file-")
    storage = f"{file_id}{ext}"
    layout.files.mkdir(parents=True, exist_ok=True)
    tmp = layout.files / f".{file_id}.partial{ext}"  # the extension: read_table's format
    final = layout.file_path(storage)
    try:
        size = _write(upload, tmp)
        if size == 0:
            raise APIError(400, f"{name!r} is empty.", code="empty_file", param="file")
        status_details, info = _inspect(tmp, name, caps)
        row = File(
            id=file_id,
            project=project,
            filename=name,
            purpose=purpose,
            bytes=size,
            created_at=int(time.time()),
            status="processed",
            status_details=status_details,
            storage_name=storage,
            info=info,
        )
        session.add(row)
        os.replace(tmp, final)
        session.commit()
    except BaseException:
        final.unlink(missing_ok=True)  # the caller's session, closed, rolls the row back
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return row


def _write(upload: BinaryIO, path: Path) -> int:
    """Copy the upload to ``path`` (fsynced); its size in bytes."""
    size = 0
    with path.open("wb") as out:
        while chunk := upload.read(1 << 20):
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


def _inspect(path: Path, name: str, caps: UploadCaps) -> tuple[str | None, dict[str, Any]]:
    """(problems or None, summary) of reading the file as labelled training data.

    Raises:
        APIError: 413 ``file_too_large`` when the file is over a cap.
    """
    try:
        with _ONE_INSPECTION_AT_A_TIME:
            table = read_table(
                path,
                max_rows=caps.max_upload_rows,
                max_bytes=caps.max_upload_decompressed_bytes,
                max_memory=caps.max_upload_memory_bytes,
            )
    except TableTooLarge as exc:
        raise APIError(413, _too_large(name, exc), code="file_too_large", param="file") from None
    except InputError as exc:
        problems = [str(p).replace(str(path), name) for p in exc.problems[:5]]
        details = "; ".join(problems) or str(exc).replace(str(path), name)
        return printable(details), {"valid": False}
    counts = Counter(label for labels in table.labels for label in labels)
    return None, {
        "valid": True,
        "format": table.format,
        "rows": len(table),
        "labels": dict(counts.most_common(100)),
    }


def _too_large(name: str, exc: TableTooLarge) -> str:
    """The 413 message: what the file holds, the cap, and the setting that raises it."""
    if exc.limit == "rows":
        setting, held = "max_upload_rows", f"{exc.found:,} rows"
    elif exc.limit == "memory":
        setting = "max_upload_memory_bytes"
        return (
            f"Reading {name!r} would take about {exc.found:,} bytes of memory (estimated from "
            f"its rows, size and the values it holds); this server reads a file in at most "
            f"{exc.cap:,} (setting {setting}, environment TUNEFORGE_{setting.upper()}). Split "
            "the file, or keep a sample of its rows."
        )
    else:
        setting = "max_upload_decompressed_bytes"
        amount = f"{exc.found:,}" if exc.found is not None else f"more than {exc.cap:,}"
        held = f"{amount} bytes of data once decompressed"
    return (
        f"{name!r} holds {held}; this server accepts at most {exc.cap:,} per file (setting "
        f"{setting}, environment TUNEFORGE_{setting.upper()}). Split the file, or keep a "
        "sample of its rows."
    )


STALE_UPLOAD_SECONDS = 3600.0
"""An upload's hidden staging file older than this belongs to no request in flight."""


def remove_stale_uploads(layout: DataDir, older_than: float = STALE_UPLOAD_SECONDS) -> int:
    """Delete staging files (``.file-*.partial*``) left by a server killed mid-upload; a
    request removes its own on any error, but not when the process dies. Only files older
    than ``older_than`` seconds go: another server on the same data directory may be
    receiving one right now. Returns how many were removed."""
    if not layout.files.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than
    for path in layout.files.glob(".file-*.partial*"):
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
    return removed


def get_file(session: Session, project: str, file_id: str, param: str | None = None) -> File:
    """A project's file or 404."""
    row = session.get(File, file_id)
    if row is None or row.project != project or row.deleted:
        raise not_found("file", file_id, param)
    return row


def list_files(
    session: Session,
    project: str,
    purpose: str | None,
    limit: int,
    after: str | None,
    order: str,
) -> tuple[list[File], bool]:
    """A page of a project's files (``after`` is an id cursor)."""
    q = select(File).where(File.project == project, File.deleted.is_(False))
    if purpose:
        q = q.where(File.purpose == purpose)
    desc = order == "desc"
    q = q.order_by(File.created_at.desc() if desc else File.created_at, File.id)
    rows = list(session.scalars(q))
    if after:
        ids = [r.id for r in rows]
        rows = rows[ids.index(after) + 1 :] if after in ids else []
    return rows[:limit], len(rows) > limit


def delete_file(session: Session, layout: DataDir, project: str, file_id: str) -> None:
    """Delete a file and its bytes; refused (409) while an unfinished job uses it."""
    row = get_file(session, project, file_id)
    busy = session.scalar(
        select(Job.id).where(
            Job.status.in_(UNFINISHED),
            (Job.training_file == file_id) | (Job.validation_file == file_id),
        )
    )
    if busy:
        raise APIError(
            409,
            f"File {file_id} is used by unfinished job {busy}; cancel it first.",
            code="file_in_use",
            param="file_id",
        )
    row.deleted = True
    layout.file_path(row.storage_name).unlink(missing_ok=True)
