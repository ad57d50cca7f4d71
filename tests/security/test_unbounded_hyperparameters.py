"""Hyperparameters are bounded when the job is created: a tenant cannot queue a 595-year
job, a job whose batch is larger than its data, or numbers that overflow every attempt
(400, ``param`` naming the field; no job is created)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.security.hostile import assert_clean_message
from tests.server.live import TINY, LiveServer, live_server, server_settings

from conftest import sentiment_rows, write_csv

pytestmark = [pytest.mark.security, pytest.mark.live]

ROWS = 60


@dataclass
class Env:
    server: LiveServer
    key: str
    train: str  # a 60-row file


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("hyper")
    with live_server(server_settings(tmp, tiny_model, workers=0)) as server:  # jobs stay queued
        key = server.key("acme", "train")
        train = server.upload(
            key, "train.csv", write_csv(tmp / "t.csv", sentiment_rows(ROWS)).read_bytes()
        )
        yield Env(server, key, train)


def supervised(**hyperparameters) -> dict:
    return {"method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}}


def lora(**hyperparameters) -> dict:
    return {"method": {"type": "lora", "lora": {"hyperparameters": hyperparameters}}}


H = "hyperparameters"
OUT_OF_BOUNDS = {
    "n_epochs-1e9-no-patience": ({H: {"n_epochs": 1e9, "patience": 0}}, "hyperparameters.n_epochs"),
    "n_epochs-1e308": ({H: {"n_epochs": 1e308}}, "hyperparameters.n_epochs"),
    "n_epochs-1e6": ({H: {"n_epochs": 1_000_000}}, "hyperparameters.n_epochs"),
    "batch_size-1e9": ({H: {"batch_size": 1_000_000_000}}, "hyperparameters.batch_size"),
    "batch_size-2**63": ({H: {"batch_size": 2**63}}, "hyperparameters.batch_size"),
    "batch_size-over-rows": ({H: {"batch_size": 100_000}}, "hyperparameters.batch_size"),
    "lr_multiplier-1e300": (
        {H: {"learning_rate_multiplier": 1e300}},
        "hyperparameters.learning_rate_multiplier",
    ),
    "lr_multiplier-1000": (
        {H: {"learning_rate_multiplier": 1000}},
        "hyperparameters.learning_rate_multiplier",
    ),
    # tuneforge's own training settings in the same object
    "gradient_accumulation-2**63": (
        {H: {"gradient_accumulation": 2**63}},
        "hyperparameters.gradient_accumulation",
    ),
    "head_lr_multiplier-1e300": (
        {H: {"head_lr_multiplier": 1e300}},
        "hyperparameters.head_lr_multiplier",
    ),
    "supervised-n_epochs-1e9": (
        supervised(n_epochs=1e9),
        "method.supervised.hyperparameters.n_epochs",
    ),
    "lora-batch_size-2**63": (lora(batch_size=2**63), "method.lora.hyperparameters.batch_size"),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_BOUNDS))
def test_out_of_bounds_hyperparameters_are_400_with_the_field(env: Env, case: str) -> None:
    extra, param = OUT_OF_BOUNDS[case]
    body = {"model": TINY, "training_file": env.train, "suffix": case.replace("*", "")[:40]}
    with env.server.http(env.key) as client:
        before = client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
        response = client.post("/v1/fine_tuning/jobs", json={**body, **extra})
        after = client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert_clean_message(error["message"])
    assert len(after) == len(before), "a refused job was created"


def test_sane_hyperparameters_are_still_accepted(env: Env) -> None:
    body = {
        "model": TINY,
        "training_file": env.train,
        H: {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 2.0},
    }
    with env.server.http(env.key) as client:
        response = client.post("/v1/fine_tuning/jobs", json=body)
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["hyperparameters"]["n_epochs"] == 3
        client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
