"""A fine-tuning job on a chat file whose replies are free text (a generation set) fails at
creation saying the file looks generative and why, not "class '<reply>' has 1 example(s)"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.server.api import api_server
from tests.server.live import TINY, server_settings


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("generative-job")
    with api_server(server_settings(tmp, tiny_model, workers=0)) as server:
        yield {"server": server, "key": server.key("acme", "train")}


def test_a_generation_set_fails_at_creation_saying_it_looks_generative(env: dict):
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"name[Place {i}], area[riverside]"},
                    {"role": "assistant", "content": f"Place {i} is a venue by the riverside."},
                ]
            }
        )
        for i in range(40)
    ]
    server = env["server"]
    with server.http(env["key"]) as client:
        upload = client.post(
            "/v1/files",
            files={"file": ("e2e.jsonl", "\n".join(lines).encode())},
            data={"purpose": "fine-tune"},
        )
        assert upload.status_code == 200, upload.text
        response = client.post(
            "/v1/fine_tuning/jobs", json={"model": TINY, "training_file": upload.json()["id"]}
        )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "failed", job
    error = job["error"]
    assert (error["code"], error["param"]) == ("invalid_training_file", "training_file")
    assert "has 1 example(s)" not in error["message"]
    assert "looks like a generation set" in error["message"]
    assert "40 distinct final replies among 40 examples" in error["message"]
    assert str(server.settings.data_dir) not in error["message"]
