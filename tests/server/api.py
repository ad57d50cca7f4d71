"""The tuneforge app in process, behind FastAPI's ``TestClient``: the contract-test tier.

``ApiServer`` has the helpers of ``LiveServer`` (``key``, ``upload``, ``add_model``,
``wait_for_job``, ``http``), inherited rather than copied: only the transport differs. The
app is the real one (``create_app`` on a fresh SQLite file; lifespan runs, so ``workers=N``
starts the same local workers), without a socket or uvicorn. Use ``live_server`` only where a
real HTTP server matters: the ``openai`` SDK, worker processes, crashes, schemathesis.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.server.live import LiveServer

from tuneforge.server.app import create_app
from tuneforge.server.settings import Settings

BASE_URL = "http://testserver"


class _KeyClient(TestClient):
    """A client with its own headers that shares the app's running portal and lifespan.

    Entering it (``with api.http(key) as client``) does not run the app's lifespan again;
    leaving it only closes the client.
    """

    def __enter__(self) -> _KeyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ApiServer(LiveServer):
    """The app behind ``TestClient``; ``url`` is the test client's base URL."""

    app: FastAPI | None = None
    main: TestClient | None = None

    def http(
        self,
        key: str | None,
        headers: dict[str, str] | None = None,
        client_address: str = "testclient",
    ) -> TestClient:
        """A client with the key as bearer token (plus ``headers``), calling from
        ``client_address``."""
        assert self.app is not None and self.main is not None, "use api_server() to build one"
        all_headers = {"Authorization": f"Bearer {key}"} if key else {}
        all_headers.update(headers or {})
        client = _KeyClient(
            self.app, base_url=BASE_URL, headers=all_headers, client=(client_address, 50000)
        )
        client.portal = self.main.portal  # the lifespan's event loop, where the state lives
        return client

    def get(self, path: str, key: str | None = None, **kwargs: Any):
        """One GET request (no key unless given)."""
        with self.http(key) as client:
            return client.get(path, **kwargs)

    def openai(self, key: str):  # pragma: no cover - the SDK tier runs on a live server
        raise TypeError("the openai client needs a live server: use the live_server fixture")


@contextmanager
def api_server(settings: Settings) -> Iterator[ApiServer]:
    """Build the app with ``settings`` and run its lifespan around a ``TestClient``."""
    app = create_app(settings)
    with TestClient(app, base_url=BASE_URL) as main:
        yield ApiServer(BASE_URL, settings, app.state.tf, app=app, main=main)
