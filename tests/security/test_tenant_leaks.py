"""The endpoints without an API key (``/metrics``, ``/readyz``) name no tenant: no project,
model id, job id, suffix or alias; whether a model exists is asked with a key, and a key only
sees its own project's models."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.security.hostile import place_model
from tests.server.live import LiveServer, live_server, server_settings

from conftest import sentiment_rows, write_csv

pytestmark = [pytest.mark.security, pytest.mark.live]


@dataclass
class Tenant:
    project: str
    key: str
    model: str
    secrets: tuple[str, ...]  # every identifier of this tenant that could leak


@dataclass
class Env:
    server: LiveServer
    alpha: Tenant
    beta: Tenant


def tenant(server: LiveServer, bundle: Path, tmp: Path, name: str) -> Tenant:
    project, suffix, job_id = f"{name}-corp", f"{name}-secret-suffix", f"ftjob-{name}4242"
    key = server.key(project)
    model = place_model(server, bundle, project, job_id=job_id, suffix=suffix)
    alias = f"{name}-prod-alias"
    with server.http(key) as client:
        assert client.put(f"/v1/aliases/{alias}", json={"model": model}).status_code == 200
        for target in (model, alias):  # traffic: loads the model, counts predictions
            response = client.post("/v1/classify", json={"model": target, "input": ["good"]})
            assert response.status_code == 200, response.text
        data = write_csv(tmp / f"{name}.csv", sentiment_rows(20)).read_bytes()
        upload = client.post(
            "/v1/files", files={"file": (f"{name}.csv", data)}, data={"purpose": "fine-tune"}
        )
        assert upload.status_code == 200, upload.text
        job = client.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": "tiny-bert",
                "training_file": upload.json()["id"],
                "suffix": suffix,
                "metadata": {"team": f"{name}-team"},
            },
        )
        assert job.status_code == 200, job.text
    secrets = (project, suffix, job_id, model, alias, job.json()["id"], f"{name}-team")
    return Tenant(project, key, model, secrets)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, bundle: Path) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("tenants")
    with live_server(server_settings(tmp, tiny_model, workers=0, backend="torch")) as server:
        yield Env(
            server,
            tenant(server, bundle, tmp, "alpha"),
            tenant(server, bundle, tmp, "beta"),
        )


def assert_no_tenant(body: str, env: Env) -> None:
    leaked = [s for t in (env.alpha, env.beta) for s in t.secrets if s in body]
    assert not leaked, f"tenant identifiers {leaked} in {body[:2000]!r}"


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/healthz"])
def test_unauthenticated_endpoints_name_no_tenant(env: Env, path: str) -> None:
    response = httpx.get(f"{env.server.url}{path}", timeout=30)
    assert response.status_code == 200, response.text
    assert_no_tenant(response.text, env)


@pytest.mark.parametrize("key", [None, "sk-not-a-key"], ids=["no-key", "bad-key"])
def test_model_probe_needs_an_api_key(env: Env, key: str | None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for model in (env.alpha.model, "ft:tiny-bert:nobody::ftjob-nope"):
        response = httpx.get(
            f"{env.server.url}/readyz", params={"model": model}, headers=headers, timeout=30
        )
        assert response.status_code == 401, response.text
        assert_no_tenant(response.text, env)


def test_model_probe_sees_only_the_keys_project(env: Env) -> None:
    with env.server.http(env.alpha.key) as alpha:
        own = alpha.get("/readyz", params={"model": env.alpha.model})
        other = alpha.get("/readyz", params={"model": env.beta.model})
        missing = alpha.get("/readyz", params={"model": "ft:tiny-bert:nobody::ftjob-nope"})
    assert own.status_code == 200 and own.json()["status"] == "ready", own.text
    assert other.status_code == missing.status_code != 200, (other.text, missing.text)
    assert set(other.json()) == set(missing.json()), (other.text, missing.text)
    assert "beta-corp" not in other.text.replace(env.beta.model, "")
