"""The two server-test tiers: the in-process app shares the live server's helpers, and a live
server cannot be started by a test outside the ``live`` tier (so ``-m "not live"`` is honest)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.server.api import ApiServer
from tests.server.live import LiveServer, live_server, server_settings


def test_the_in_process_app_has_the_live_servers_helpers(api: ApiServer) -> None:
    key = api.key("acme", "train")
    file_id = api.upload(key, "train.csv", b"text,label\ngood film,positive\nbad film,negative\n")
    with api.http(key) as client:
        listed = client.get("/v1/files").json()["data"]
    assert [f["id"] for f in listed] == [file_id]
    assert api.get("/v1/files").status_code == 401  # no key
    assert api.get("/readyz").json()["live_workers"] == 0  # workers=0: an API-only node
    assert isinstance(api, LiveServer) and not api.state.workers


def test_a_live_server_needs_the_live_marker(tmp_path: Path, tiny_model: Path) -> None:
    with (
        pytest.raises(RuntimeError, match=r"pytest\.mark\.live"),
        live_server(server_settings(tmp_path, tiny_model, workers=0)),
    ):
        pass  # pragma: no cover - never reached


@pytest.mark.live
def test_a_live_test_may_start_one(tmp_path: Path, tiny_model: Path) -> None:
    with live_server(server_settings(tmp_path, tiny_model, workers=0)) as server:
        assert server.url.startswith("http://127.0.0.1:")


def test_users_of_the_server_fixture_are_in_the_live_tier(
    request: pytest.FixtureRequest, server: LiveServer
) -> None:
    """Not marked here: collection marks it, or ``live_server`` would have refused."""
    assert request.node.get_closest_marker("live") is not None
    assert server.url.startswith("http://127.0.0.1:")
