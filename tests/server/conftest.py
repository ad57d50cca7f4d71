"""Fixtures for server tests, in two tiers.

* ``api``: the real app (``create_app`` on a fresh SQLite file, no workers) behind FastAPI's
  ``TestClient`` — the contract tier, for everything that does not need a real process.
* ``server``: a live uvicorn server with one local worker — the ``live`` tier, for the
  ``openai`` SDK, workers, crashes and schemathesis. A test that starts a live server must be
  marked ``@pytest.mark.live`` (``live_server`` refuses otherwise; tests that use the
  ``server`` fixture are marked automatically), so that ``pytest -m "not live"`` runs the
  contract tier alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.server import live
from tests.server.api import ApiServer, api_server
from tests.server.live import LiveServer, live_server, server_settings


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses this conftest's ``server`` fixture (not one of its own module) is in
    the ``live`` tier without saying so."""
    for item in items:
        module = getattr(item, "module", None)
        uses_live = "server" in getattr(item, "fixturenames", ())
        if uses_live and module is not None and not hasattr(module, "server"):
            item.add_marker(pytest.mark.live)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tell ``live_server`` whether the test about to set up is in the ``live`` tier."""
    live.LIVE_TIER_ALLOWED = item.get_closest_marker("live") is not None


@pytest.fixture()
def api(tmp_path: Path, tiny_model: Path) -> Iterator[ApiServer]:
    """The app in process without workers; the tiny model is base model ``tiny-bert``."""
    with api_server(server_settings(tmp_path, tiny_model, workers=0)) as app:
        yield app


@pytest.fixture()
def server(tmp_path: Path, tiny_model: Path) -> Iterator[LiveServer]:
    """A live server with one local worker and the tiny model as base model ``tiny-bert``."""
    with live_server(server_settings(tmp_path, tiny_model)) as running:
        yield running
