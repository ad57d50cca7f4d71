"""FastAPI dependencies declared once: state, auth with scopes, rate limiting."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tuneforge.server.auth import Principal, authenticate
from tuneforge.server.errors import APIError
from tuneforge.server.ratelimit import RateLimiter
from tuneforge.server.state import AppState

_bearer = HTTPBearer(auto_error=False, description="An API key from `tuneforge keys create`.")


def get_state(request: Request) -> AppState:
    """The app's state (built in its lifespan)."""
    return request.app.state.tf


State = Annotated[AppState, Depends(get_state)]


def authenticate_credentials(
    state: AppState, credentials: HTTPAuthorizationCredentials | None, address: str
) -> Principal:
    """The caller behind the bearer credentials; 401 without a valid key, 429 when the
    client ``address`` sent too many invalid keys (then no key is looked up until its
    budget refills, so guessing keys is as slow as the limit)."""
    if credentials is None or not credentials.credentials:
        raise APIError(
            401,
            "Missing API key: send the header 'Authorization: Bearer <key>' "
            "(create one with `tuneforge keys create`).",
            code="missing_api_key",
        )
    failures = state.limiters["invalid_key"]
    wait = failures.wait(address)
    if wait > 0:
        state.metrics.rate_limited.labels("invalid_key").inc()
        raise APIError(
            429,
            f"Too many requests with invalid API keys from this address (limit "
            f"{state.settings.invalid_key_rate_limit_per_minute} per minute); retry later "
            "with a valid key.",
            code="rate_limit_exceeded",
            headers={"Retry-After": RateLimiter.retry_after(wait)},
        )
    # One indexed read, in the event loop (a read-only session never waits on a writer):
    # cheaper than a thread hop, and a revoked key is refused from the next request on.
    with state.store.read() as session:
        principal = authenticate(session, credentials.credentials)
    if principal is None:
        failures.acquire(address)
        raise APIError(401, "Invalid or revoked API key.", code="invalid_api_key")
    return principal


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def client_address(request: Request) -> str:
    """The client's address (the proxy's, unless uvicorn trusts its forwarded headers)."""
    return request.client.host if request.client else "unknown"


async def get_principal(state: State, credentials: Credentials, request: Request) -> Principal:
    """The caller behind ``Authorization: Bearer <key>``; 401 without a valid key."""
    return authenticate_credentials(state, credentials, client_address(request))


def rate_limit(state: AppState, principal: Principal, kind: str) -> None:
    """429 with ``Retry-After`` when the key is over its ``kind`` budget (api, inference)."""
    limiter = state.limiters[kind]
    wait = limiter.acquire(principal.key_id)
    if wait > 0:
        state.metrics.rate_limited.labels(kind).inc()
        inference = kind == "inference"
        per_minute = (
            state.settings.inference_rate_limit_per_minute
            if inference
            else state.settings.rate_limit_per_minute
        )
        what = "inference" if inference else "training and management endpoints"
        raise APIError(
            429,
            f"Rate limit of {per_minute} requests per minute ({what}) exceeded for this key; "
            "retry later.",
            code="rate_limit_exceeded",
            headers={"Retry-After": RateLimiter.retry_after(wait)},
        )


def admit(state: AppState, principal: Principal, scopes: tuple[str, ...], limit: str) -> None:
    """Within the key's ``limit`` rate budget (429 otherwise) and holding one of ``scopes``
    (403 otherwise)."""
    rate_limit(state, principal, limit)
    if principal.scopes & set(scopes):
        return
    message = (
        f"This API key lacks the '{scopes[0]}' scope; create a key with --scopes {scopes[0]}."
        if len(scopes) == 1
        else f"This API key needs one of the scopes {', '.join(scopes)}."
    )
    raise APIError(403, message, code="insufficient_scope")


def require(scope: str, limit: str = "api"):
    """A dependency that admits keys holding ``scope`` (403 otherwise), within the key's
    ``limit`` rate budget (429 otherwise)."""

    async def check(
        state: State, principal: Annotated[Principal, Depends(get_principal)]
    ) -> Principal:
        admit(state, principal, (scope,), limit)
        return principal

    return check


def require_any(*scopes: str):
    """A dependency that admits keys holding any of ``scopes`` (``api`` rate budget)."""

    async def check(
        state: State, principal: Annotated[Principal, Depends(get_principal)]
    ) -> Principal:
        admit(state, principal, scopes, "api")
        return principal

    return check


Trainer = Annotated[Principal, Depends(require("train"))]
Inferrer = Annotated[Principal, Depends(require("infer", limit="inference"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Reader = Annotated[Principal, Depends(require_any("train", "infer"))]
