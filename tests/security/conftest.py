"""The hostile-tenant suite: shared fixtures (helpers are in ``tests/security/hostile.py``).

Every test here replays an attack against a live server (uvicorn on loopback, the real app,
a real SQLite file; see ``tests/server/live.py``) and is marked ``security`` and ``live``.
The bundles under attack are copies of two real bundles trained once per session from the
tiny random BERT (``full`` and ``lora``), changed the way a hostile tenant would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.server import live
from tests.server.live import LiveServer, live_server, server_settings

from conftest import run_cli, sentiment_rows, write_csv


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tell ``live_server`` whether the test about to set up is in the ``live`` tier (as
    tests/server/conftest.py does for its own tests)."""
    live.LIVE_TIER_ALLOWED = item.get_closest_marker("live") is not None


# ---------------------------------------------------------------- bundles


def _train(out: Path, data: Path, tiny_model: Path, method: str) -> Path:
    result = run_cli(
        "train", data, "--model", tiny_model, "--method", method, "--epochs", "1",
        "--patience", "0", "--threads", "1", "--export", "none", "--quiet", "--output", out,
    )  # fmt: skip
    assert result.code == 0, result
    return out


@pytest.fixture(scope="session")
def bundles(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real bundles of the tiny model: ``full`` (model/) and ``lora`` (adapter/)."""
    root = tmp_path_factory.mktemp("security-bundles")
    data = write_csv(root / "train.csv", sentiment_rows(40))
    return {m: _train(root / m, data, tiny_model, m) for m in ("full", "lora")}


@pytest.fixture(scope="session")
def bundle(bundles: dict[str, Path]) -> Path:
    """The ``full`` bundle (a standalone model)."""
    return bundles["full"]


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def quiet_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[LiveServer]:
    """A live server without local workers (jobs stay queued), shared by a module."""
    tmp = tmp_path_factory.mktemp("security-server")
    with live_server(server_settings(tmp, tiny_model, workers=0, backend="torch")) as running:
        yield running
