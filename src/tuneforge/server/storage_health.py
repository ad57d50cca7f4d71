"""Storage health: requests the database cannot serve answer 503 ``database_unavailable``
(not 500), and ``/readyz`` reports such errors (a damaged file, a full disk, a lost
connection) while they last; a write that finds the data disk full answers 507
``disk_full``."""

from __future__ import annotations

import logging
import threading
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import (
    DatabaseError,
    DBAPIError,
    InterfaceError,
    InternalError,
    OperationalError,
)

from tuneforge.jobs.disk import is_disk_full
from tuneforge.server.errors import envelope

log = logging.getLogger("tuneforge.server")

RECENT_SECONDS = 10.0
"""/readyz stays not ready this long after a request failed on a database error."""


def unavailable(exc: DBAPIError) -> bool:
    """Whether ``exc`` is the database failing (unreachable, busy, full, damaged) rather
    than a bad statement of ours (an integrity or programming error stays a 500)."""
    return isinstance(exc, OperationalError | InterfaceError | InternalError) or (
        type(exc) is DatabaseError  # SQLite: "database disk image is malformed"
    )


def reason(exc: BaseException) -> str:
    """The driver's one-line reason (never the statement or its parameters)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return (text[0] if text else type(orig).__name__)[:200]


def failure_kind(why: str) -> str:
    """What kind of database failure ``why`` (the driver's reason) is, in words that name no
    host, file or statement."""
    text = why.lower()
    if "full" in text or "no space" in text:
        return "its disk is full"
    if "malformed" in text or "corrupt" in text or "not a database" in text:
        return "its file is damaged"
    if "locked" in text or "busy" in text or "timeout" in text:
        return "it is busy"
    return "it is unreachable or failing"


class DatabaseHealth:
    """The last database error a request met, for ``/readyz``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, str] | None = None

    def record(self, why: str) -> None:
        """Remember a database error (its reason) now."""
        with self._lock:
            self._last = (time.monotonic(), why)

    def recent(self, within: float = RECENT_SECONDS) -> str | None:
        """The reason of a database error in the last ``within`` seconds, or None."""
        with self._lock:
            last = self._last
        if last is None or time.monotonic() - last[0] > within:
            return None
        return last[1]


def install_database_error_handler(app: FastAPI) -> None:
    """Answer 503 ``database_unavailable`` (with ``Retry-After``) when the database fails."""

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if not unavailable(exc):
            log.exception("unhandled database error", exc_info=exc)
            return envelope(500, "Internal server error; see the server log.", "server_error")
        why = reason(exc)
        state = getattr(request.app.state, "tf", None)
        if state is not None:
            state.db_health.record(why)
        log.error("database error on %s %s: %s", request.method, request.url.path, why)
        return envelope(
            503,
            # the driver's own words may name hosts or files: the server log and /readyz
            # have them; the client gets the kind of failure
            f"The database cannot serve requests right now ({failure_kind(why)}); retry "
            "later (the operator will find the details in /readyz and the server log).",
            "database_unavailable",
            headers={"Retry-After": "5"},
        )


def install_disk_full_handler(app: FastAPI) -> None:
    """Answer 507 ``disk_full`` when a request cannot write because the disk is full."""

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        if not is_disk_full(exc):
            log.exception("unhandled error", exc_info=exc)
            return envelope(500, "Internal server error; see the server log.", "server_error")
        log.error("disk full on %s %s: %s", request.method, request.url.path, exc.strerror)
        return envelope(
            507,
            "The server's data disk is full; retry after the operator frees space.",
            "disk_full",
            headers={"Retry-After": "60"},
        )
