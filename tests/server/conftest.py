"""Fixtures for server tests: a live server with one local worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.server.live import LiveServer, live_server, server_settings


@pytest.fixture()
def server(tmp_path: Path, tiny_model: Path) -> Iterator[LiveServer]:
    """A server with one local worker and the tiny model as base model ``tiny-bert``."""
    with live_server(server_settings(tmp_path, tiny_model)) as live:
        yield live
