"""Request body size limits, enforced while the body streams in (413 before it is stored)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PATHS = ("/v1/files",)
DEFAULT_BODY_LIMIT = 8 * 1024 * 1024  # JSON requests


def too_large_message(limit: int, upload: bool = True) -> str:
    """The 413 message: an upload names the setting that raises its limit; any other
    request names the JSON body limit."""
    if upload:
        return (
            f"Request body too large: the limit is {limit} bytes "
            "(TUNEFORGE_MAX_UPLOAD_BYTES for uploads)."
        )
    return (
        f"Request body too large: the limit for a JSON request is {limit / 2**20:g} MiB "
        f"({limit} bytes); send fewer or shorter inputs per request."
    )


class BodyTooLarge(HTTPException):
    """A body grew past its limit while streaming in.

    An ``HTTPException`` because FastAPI turns any other exception raised while it parses a
    body (a multipart upload) into a 400; this one it re-raises, and the error handlers
    answer 413 with the envelope, with this error's ``code`` and ``param``.
    """

    def __init__(self, limit: int, upload: bool) -> None:
        super().__init__(413, too_large_message(limit, upload))
        self.code = "file_too_large" if upload else "request_too_large"
        self.param = "file" if upload else None


class BodySizeLimit:
    """Answers 413 (OpenAI envelope) when a body exceeds its limit, without reading it all.

    Uploads to ``/v1/files`` get ``upload_limit``; every other request ``DEFAULT_BODY_LIMIT``.
    A ``Content-Length`` over the limit is refused before any byte is read; a chunked body
    is counted as it arrives and cut off at the limit.
    """

    def __init__(self, app: ASGIApp, upload_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        upload = scope["path"] in UPLOAD_PATHS
        limit = self.upload_limit if upload else DEFAULT_BODY_LIMIT
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_413(send, BodyTooLarge(limit, upload))
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit, upload)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if not started:
                await _send_413(send, exc)


async def _send_413(send: Send, error: BodyTooLarge) -> None:
    body = json.dumps(
        {
            "error": {
                "message": error.detail,
                "type": "invalid_request_error",
                "param": error.param,
                "code": error.code,
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
