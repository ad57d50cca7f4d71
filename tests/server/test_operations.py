"""Operations endpoints and the per-key rate limit: on the app in process (``TestClient``),
and on a live server where local worker threads or the rate limit are under test."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from tests.server.api import ApiServer, api_server
from tests.server.live import TINY, live_server, server_settings

from conftest import sentiment_rows, write_csv


def metrics(server: ApiServer) -> dict[str, list]:
    """Scrape /metrics: {family name: samples}."""
    response = server.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def sample(families: dict[str, list], name: str, **labels: str) -> float | None:
    """The value of one sample (by its own name and labels), or None."""
    for samples in families.values():
        for s in samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


@pytest.fixture(scope="module")
def api_only(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[ApiServer]:
    """The app without local workers (jobs wait for ``tuneforge worker``)."""
    tmp = tmp_path_factory.mktemp("ops")
    with api_server(server_settings(tmp, tiny_model, workers=0)) as server:
        yield server


# ------------------------------------------------------------------ health and readiness


def test_healthz(api_only: ApiServer):
    response = api_only.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_without_configured_workers_is_ready(api_only: ApiServer):
    # workers=0 means an API-only node: readiness does not wait for external workers
    response = api_only.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready" and body["database"] == "ok"
    assert body["live_workers"] == 0 and body["models_loaded"] == 0
    # an external worker's heartbeat shows up
    api_only.state.store.heartbeat("worker-external", socket.gethostname(), 1, None)
    try:
        assert api_only.get("/readyz").json()["live_workers"] == 1
    finally:
        api_only.state.store.remove_worker("worker-external")


def test_readyz_is_503_when_the_database_does_not_answer(api_only: ApiServer, monkeypatch):
    broken = create_engine("sqlite:////nonexistent-dir/for/sure/tuneforge.db")
    monkeypatch.setattr(api_only.state, "engine", broken)
    response = api_only.get("/readyz")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "not_ready" and body["database"] == "unreachable"
    monkeypatch.undo()
    assert api_only.get("/readyz").status_code == 200


@pytest.mark.live
def test_readyz_follows_the_local_workers(tmp_path: Path, tiny_model: Path):
    settings = server_settings(tmp_path, tiny_model, workers=1)
    with live_server(settings) as server:
        deadline = time.monotonic() + 30
        while (response := httpx.get(f"{server.url}/readyz")).status_code != 200:
            assert time.monotonic() < deadline, response.text  # the worker beats at start
            time.sleep(0.1)
        assert response.json()["live_workers"] == 1
        # the configured worker stops (it deregisters): the node is no longer ready
        for worker in server.state.workers:
            worker.stop()
        for thread in server.state.threads:
            thread.join(timeout=30)
        response = httpx.get(f"{server.url}/readyz")
        assert response.status_code == 503, response.text
        body = response.json()
        assert (body["status"], body["database"], body["live_workers"]) == ("not_ready", "ok", 0)
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive, not ready


def test_readyz_ignores_workers_whose_heartbeat_is_stale(tmp_path: Path, tiny_model: Path):
    settings = server_settings(tmp_path, tiny_model, workers=0, worker_timeout_seconds=5)
    with api_server(settings) as server:
        server.state.store.heartbeat("worker-old", "elsewhere", 1, None)
        assert server.get("/readyz").json()["live_workers"] == 1
        with server.state.sessions.begin() as session:
            from tuneforge.jobs.tables import Worker

            session.get(Worker, "worker-old").heartbeat_at = time.time() - 60
        assert server.get("/readyz").json()["live_workers"] == 0


# ------------------------------------------------------------------ metrics


def test_metrics_counts_requests_by_route_template_and_jobs_by_status(api_only: ApiServer):
    key = api_only.key("metrics")
    with api_only.http(key) as c:
        before = metrics(api_only)
        assert c.get("/v1/files").status_code == 200
        assert c.get("/v1/files/file-secret123").status_code == 404
        assert api_only.get("/v1/files").status_code == 401
        assert api_only.get("/no/such/path").status_code == 404
        content = write_csv(Path(api_only.settings.data_dir) / "m.csv", sentiment_rows(20))
        train = c.post(
            "/v1/files",
            files={"file": ("m.csv", content.read_bytes())},
            data={"purpose": "fine-tune"},
        ).json()["id"]
        queued = c.post("/v1/fine_tuning/jobs", json={"model": TINY, "training_file": train})
        assert queued.json()["status"] == "queued"
        bad = c.post(
            "/v1/files",
            files={"file": ("b.csv", b"text,label\nx,\n")},
            data={"purpose": "fine-tune"},
        )
        failed = c.post(
            "/v1/fine_tuning/jobs", json={"model": TINY, "training_file": bad.json()["id"]}
        )
        assert failed.json()["status"] == "failed"
    after = metrics(api_only)

    def delta(**labels: str) -> float:
        name = "tuneforge_http_requests_total"
        return (sample(after, name, **labels) or 0) - (sample(before, name, **labels) or 0)

    assert delta(method="GET", route="/v1/files", status="200") == 1
    assert delta(method="GET", route="/v1/files", status="401") == 1
    assert delta(method="GET", route="/v1/files/{file_id}", status="404") == 1
    assert delta(method="GET", route="unmatched", status="404") == 1
    assert delta(method="POST", route="/v1/fine_tuning/jobs", status="200") == 2
    # labels are route templates: ids never become label values (bounded cardinality)
    routes = {s.labels["route"] for s in after["tuneforge_http_requests"]}
    assert not any("file-" in r or "/no/such" in r for r in routes), routes
    assert sample(after, "tuneforge_http_request_seconds_count", route="/v1/files") >= 1
    assert sample(after, "tuneforge_jobs", status="queued") == 1
    assert sample(after, "tuneforge_jobs", status="failed") == 1
    assert sample(after, "tuneforge_live_workers") == 0


# ------------------------------------------------------------------ rate limit


@pytest.mark.live
def test_rate_limit_answers_429_with_retry_after(tmp_path: Path, tiny_model: Path):
    settings = server_settings(tmp_path, tiny_model, workers=0, rate_limit_per_minute=3)
    with live_server(settings) as server:
        key, other = server.key("acme"), server.key("acme")
        files = server.state.layout.files
        with server.http(key) as c:
            for _ in range(3):
                assert c.get("/v1/files").status_code == 200
            before = {p.name for p in files.iterdir()}
            limited = c.post(
                "/v1/files",
                files={"file": ("t.csv", b"text,label\ngood,positive\n")},
                data={"purpose": "fine-tune"},
            )
            assert limited.status_code == 429, limited.text
            error = limited.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
            assert "3 requests per minute" in error["message"]
            retry = limited.headers["retry-after"]
            assert retry.isdigit() and 1 <= int(retry) <= 20  # one token per 20 s
            assert {p.name for p in files.iterdir()} == before  # the upload did not happen
            assert c.get("/v1/models").status_code == 429  # every endpoint shares the budget
        # the limit is per key, and public endpoints are not limited
        with server.http(other) as c:
            assert c.get("/v1/files").status_code == 200
        for _ in range(5):
            assert httpx.get(f"{server.url}/healthz").status_code == 200
        # a bad key is refused as such, not rate limited
        with server.http("tf-invalid") as c:
            for _ in range(5):
                assert c.get("/v1/files").status_code == 401
        metrics_text = httpx.get(f"{server.url}/metrics").text
        assert 'status="429"' in metrics_text
