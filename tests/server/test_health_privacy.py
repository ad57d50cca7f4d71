"""The endpoints without a key (/readyz, /metrics) name no tenant: no project, model id,
suffix or job id; the per-model readiness probe needs a key and sees only its project."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.server.api import ApiServer, api_server
from tests.server.live import TINY, server_settings

from conftest import run_cli, sentiment_rows, write_csv
from tuneforge.jobs.tables import FineTunedModel

SERVED = "ft:tiny-bert:alpha:secretsuffix:ftjob-alpha0001"
IDLE = "ft:tiny-bert:alpha:othersuffix:ftjob-alpha0002"
TENANT_WORDS = ("alpha", "secretsuffix", "othersuffix", "ftjob-alpha", "ft:tiny-bert")


@pytest.fixture(scope="module")
def bundle(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("privacy")
    out = root / "bundle"
    result = run_cli(
        "train",
        write_csv(root / "t.csv", sentiment_rows(60)),
        "--model",
        tiny_model,
        "--epochs",
        "1",
        "--threads",
        "1",
        "--quiet",
        "--output",
        out,
    )
    assert result.code == 0, result
    return out


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, bundle: Path
) -> Iterator[ApiServer]:
    tmp = tmp_path_factory.mktemp("privacy-app")
    with api_server(server_settings(tmp, tiny_model, workers=0, backend="torch")) as server:
        for model_id, folder in ((SERVED, "m1"), (IDLE, "m2")):
            dest = server.state.layout.models / folder
            shutil.copytree(bundle, dest)
            with server.state.sessions.begin() as session:
                session.add(
                    FineTunedModel(
                        id=model_id,
                        project="alpha",
                        base_model=TINY,
                        job_id=folder,
                        bundle=str(dest.relative_to(server.state.layout.root)),
                        created_at=int(time.time()),
                    )
                )
        alpha = server.key("alpha", "train,infer")
        with server.http(alpha) as client:
            answer = client.post("/v1/classify", json={"model": SERVED, "input": ["good", "bad"]})
            assert answer.status_code == 200, answer.text
        yield server


def test_metrics_and_readyz_without_a_key_name_no_tenant(app: ApiServer):
    metrics = app.get("/metrics")
    ready = app.get("/readyz")
    assert metrics.status_code == 200 and ready.status_code == 200, ready.text
    for word in TENANT_WORDS:
        assert word not in metrics.text, word
        assert word not in ready.text, word
    # what operators need is still there, in aggregate
    assert "tuneforge_predictions_total 2.0" in metrics.text
    body = ready.json()
    assert body["models_loaded"] == 1 and body["model_memory_bytes"] > 0


def test_the_model_probe_needs_a_key(app: ApiServer):
    for model in (SERVED, "ft:tiny-bert:nobody::ftjob-none"):
        response = app.get("/readyz", params={"model": model})
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "missing_api_key"
        assert "ftjob" not in response.text
    bad = app.get("/readyz", params={"model": SERVED}, key="tf-not-a-key")
    assert bad.status_code == 401


def test_the_model_probe_sees_only_the_keys_project(app: ApiServer):
    alpha, beta = app.key("alpha", "infer"), app.key("beta", "infer")
    loaded = app.get("/readyz", params={"model": SERVED}, key=alpha)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["status"] == "ready" and loaded.json()["backend"] == "torch"
    idle = app.get("/readyz", params={"model": IDLE}, key=alpha)
    assert idle.status_code == 503 and idle.json()["status"] == "not_loaded"
    # another project's model and a model that does not exist get the same 404
    for model in (SERVED, IDLE):
        other = app.get("/readyz", params={"model": model}, key=beta)
        assert other.status_code == 404, other.text
        assert other.json()["error"]["code"] == "model_not_found"
    missing = app.get("/readyz", params={"model": "ft:tiny-bert:beta::nothing"}, key=beta)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
