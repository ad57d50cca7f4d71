"""A project's aliases resolve first, and model ids are looked up in the caller's project only.

Another project registering a model whose id is one of this project's alias names (``models
import --project beta --name prod``) must not take this project's alias ``prod`` away.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.server.api import ApiServer

from conftest import run_cli, sentiment_rows, write_csv
from tuneforge.server.services.models import import_bundle


@pytest.fixture(scope="module")
def bundle(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aliases")
    data = write_csv(root / "train.csv", sentiment_rows(40))
    result = run_cli(
        "train", data, "--model", tiny_model, "--epochs", "1", "--patience", "0",
        "--threads", "1", "--quiet", "--export", "none", "--output", root / "bundle",
    )  # fmt: skip
    assert result.code == 0, result
    return root / "bundle"


def imported(api: ApiServer, bundle: Path, project: str, name: str) -> None:
    state = api.state
    import_bundle(state.layout, state.sessions, state.base_models, bundle, project, name)


def test_another_projects_model_id_does_not_shadow_an_alias(api: ApiServer, bundle: Path) -> None:
    alpha, beta = api.key("alpha"), api.key("beta")
    imported(api, bundle, "alpha", "alpha-v1")
    with api.http(alpha) as client:
        promoted = client.put("/v1/aliases/prod", json={"model": "alpha-v1"})
        assert promoted.status_code == 200, promoted.text
        assert client.post("/v1/classify", json={"model": "prod", "input": "x"}).status_code == 200

    imported(api, bundle, "beta", "prod")  # beta's model id is alpha's alias name
    with api.http(alpha) as client:
        answer = client.post("/v1/classify", json={"model": "prod", "input": "good movie"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "alpha-v1"
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "prod", "messages": [{"role": "user", "content": "good movie"}]},
        )
        assert chat.status_code == 200 and chat.json()["model"] == "alpha-v1", chat.text
        retrieved = client.get("/v1/models/prod")
        assert retrieved.status_code == 200 and retrieved.json()["id"] == "alpha-v1"
    with api.http(beta) as client:  # beta still reaches its own model by its id
        answer = client.post("/v1/classify", json={"model": "prod", "input": "good movie"})
        assert answer.status_code == 200 and answer.json()["model"] == "prod", answer.text
        other = client.post("/v1/classify", json={"model": "alpha-v1", "input": "x"})
        assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"


def test_an_alias_resolves_before_a_model_id_of_the_same_name(api: ApiServer, bundle: Path) -> None:
    key = api.key("alpha")
    imported(api, bundle, "alpha", "v1")
    imported(api, bundle, "alpha", "v2")
    with api.http(key) as client:
        assert client.put("/v1/aliases/v2", json={"model": "v1"}).status_code == 200
        answer = client.post("/v1/classify", json={"model": "v2", "input": "good movie"})
        assert answer.status_code == 200 and answer.json()["model"] == "v1", answer.text
