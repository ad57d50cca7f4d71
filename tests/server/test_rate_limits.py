"""Two per-key rate limits: ``api`` (training and management) and ``inference``; contract
tests on FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from tests.server.live import server_settings

from tuneforge.server.app import create_app
from tuneforge.server.auth import create_key

CLASSIFY = {"model": "no-such-model", "input": ["great"]}


@contextmanager
def client(tmp_path: Path, tiny_model: Path, **limits: int) -> Iterator[tuple[TestClient, str]]:
    settings = server_settings(tmp_path, tiny_model, workers=0, **limits)
    with TestClient(create_app(settings)) as c:
        state = c.app.state.tf  # type: ignore[attr-defined]
        with state.sessions.begin() as session:
            _, secret = create_key(session, "acme", ["train", "infer"])
        c.headers["Authorization"] = f"Bearer {secret}"
        yield c, secret


def _metrics(c: TestClient) -> dict[tuple[str, str], float]:
    text = c.get("/metrics").text
    return {
        (s.name, s.labels.get("kind", "")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.startswith("tuneforge_rate_limit")
    }


def test_inference_is_not_limited_by_the_training_limit(tmp_path: Path, tiny_model: Path):
    with client(tmp_path, tiny_model, rate_limit_per_minute=2) as (c, _):
        assert [c.get("/v1/files").status_code for _ in range(3)] == [200, 200, 429]
        # the api budget is spent; inference requests pass the limiter (404: no such model)
        for _ in range(5):
            assert c.post("/v1/classify", json=CLASSIFY).status_code == 404
            response = c.post(
                "/v1/chat/completions",
                json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]},
            )
            assert response.status_code == 404


def test_each_limit_refuses_over_its_own_budget(tmp_path: Path, tiny_model: Path):
    with client(
        tmp_path, tiny_model, rate_limit_per_minute=3, inference_rate_limit_per_minute=2
    ) as (c, _):
        assert [c.post("/v1/classify", json=CLASSIFY).status_code for _ in range(2)] == [404, 404]
        limited = c.post("/v1/classify", json=CLASSIFY)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert "2 requests per minute (inference)" in limited.json()["error"]["message"]
        assert 1 <= int(limited.headers["retry-after"]) <= 30  # one token per 30 s
        # the api budget is untouched by inference
        assert [c.get("/v1/files").status_code for _ in range(3)] == [200, 200, 200]
        limited = c.get("/v1/models")
        assert limited.status_code == 429 and "retry-after" in limited.headers
        assert "3 requests per minute (training" in limited.json()["error"]["message"]
        seen = _metrics(c)
        assert seen[("tuneforge_rate_limited_total", "inference")] == 1
        assert seen[("tuneforge_rate_limited_total", "api")] == 1


def test_metrics_show_both_limits(tmp_path: Path, tiny_model: Path):
    with client(tmp_path, tiny_model, rate_limit_per_minute=0) as (c, _):
        seen = _metrics(c)
        assert seen[("tuneforge_rate_limit_per_minute", "api")] == 0
        assert seen[("tuneforge_rate_limit_per_minute", "inference")] == 60_000  # the default
        assert seen[("tuneforge_rate_limited_total", "api")] == 0
        assert seen[("tuneforge_rate_limited_total", "inference")] == 0
