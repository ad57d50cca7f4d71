"""The OpenAI error envelope ``{"error": {"message", "type", "param", "code"}}`` for every error."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tuneforge.server")

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class ErrorDetail(BaseModel):
    """What went wrong."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The OpenAI error envelope every error answers with."""

    error: ErrorDetail


# Documented for every /v1 operation (OpenAPI), instead of FastAPI's default 422 shape:
# validation errors answer 400, as OpenAI's API does for invalid parameters.
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Invalid request (validation errors included; `param` names the field)"),
        (401, "Missing, invalid or revoked API key"),
        (403, "The API key lacks the scope"),
        (404, "No such object in the key's project"),
        (409, "Conflicts with the object's state"),
        (413, "Request body too large"),
        (429, "Rate limit exceeded (see Retry-After)"),
        (503, "Overloaded (see Retry-After)"),
        (504, "Timed out"),
    )
}


class APIError(Exception):
    """An error answered with the envelope.

    Args:
        status: HTTP status code.
        message: What went wrong and what to do, for a human.
        code: A short machine-readable code (``not_found``, ``invalid_state``...).
        param: The request parameter at fault, if any.
        headers: Extra response headers (``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}


def not_found(kind: str, object_id: str, param: str | None = None) -> APIError:
    """404 for a missing object (or another project's: the same answer)."""
    return APIError(404, f"No such {kind}: {object_id}", code="not_found", param=param)


def envelope(
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error response."""
    body = {
        "error": {
            "message": message,
            "type": TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error path answers with the envelope; unexpected errors are logged, not leaked."""

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return envelope(exc.status, exc.message, exc.code, exc.param, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        # limits.BodyTooLarge carries its own code and param (an upload's or a JSON body's)
        code = getattr(exc, "code", None) or {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code
        )
        param = getattr(exc, "param", None)
        return envelope(exc.status_code, message, code, param, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":  # loc is ("body", offset): no parameter
            ctx = first.get("ctx") or {}
            return envelope(
                400,
                f"Invalid request: the body is not valid JSON ({ctx.get('error', 'decode error')} "
                f"at character {loc[0] if loc else '?'}).",
                "invalid_json",
                None,
            )
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
            for e in errors[:5]
        )
        return envelope(400, f"Invalid request: {message}", "invalid_request", param)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return envelope(500, "Internal server error; see the server log.", "server_error")
