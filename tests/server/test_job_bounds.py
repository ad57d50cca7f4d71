"""Bounds on what one job may ask for: OpenAI's hyperparameter limits, a batch no larger than
the training rows, a server cap on total steps, OpenAI's metadata limits. Every refusal is a
400 naming the field in ``param``, and creates no job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.server.api import ApiServer, api_server
from tests.server.live import TINY, server_settings

from conftest import sentiment_rows, write_csv
from tuneforge.jobs.tables import Job

MAX_TRAIN_STEPS = 500
ROWS = 60  # 48 training rows after the 10% validation and test splits are carved


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("job-bounds")
    settings = server_settings(tmp, tiny_model, workers=0, max_train_steps=MAX_TRAIN_STEPS)
    with api_server(settings) as server:
        key = server.key("acme", "train")
        train = write_csv(tmp / "train.csv", sentiment_rows(ROWS))
        file_id = server.upload(key, "t.csv", train.read_bytes())
        yield {"server": server, "key": key, "train": file_id}


def _post(env: dict, body: dict | None = None, content: bytes | None = None) -> httpx.Response:
    server: ApiServer = env["server"]
    with server.http(env["key"]) as client:
        if content is not None:
            return client.post(
                "/v1/fine_tuning/jobs",
                content=content,
                headers={"content-type": "application/json"},
            )
        return client.post(
            "/v1/fine_tuning/jobs", json={"model": TINY, "training_file": env["train"], **body}
        )


def _jobs(env: dict) -> int:
    with env["server"].state.sessions() as session:
        return session.query(Job).count()


def _refused(env: dict, response: httpx.Response, param: str) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert "Traceback" not in error["message"]
    return error


def _hp(where: str, values: dict) -> dict:
    """Hyperparameters at the top level or under ``method.supervised``."""
    if where == "top":
        return {"hyperparameters": values}
    return {"method": {"type": "supervised", "supervised": {"hyperparameters": values}}}


PREFIX = {"top": "hyperparameters", "method": "method.supervised.hyperparameters"}

OUT_OF_BOUNDS = {
    "n_epochs 1e9": ("n_epochs", 1e9, "50"),
    "n_epochs 51": ("n_epochs", 51, "50"),
    "n_epochs 1e308": ("n_epochs", 1e308, "50"),
    "batch_size 1e9": ("batch_size", 10**9, "256"),
    "batch_size 2**63": ("batch_size", 2**63, "256"),
    "batch_size 257": ("batch_size", 257, "256"),
    "learning_rate_multiplier 1e300": ("learning_rate_multiplier", 1e300, "10"),
    "learning_rate_multiplier 10.5": ("learning_rate_multiplier", 10.5, "10"),
    "weight_decay 1e300": ("weight_decay", 1e300, "1"),
    "gradient_accumulation 2**63": ("gradient_accumulation", 2**63, "1024"),
}


@pytest.mark.parametrize("where", ["top", "method"])
@pytest.mark.parametrize("case", list(OUT_OF_BOUNDS), ids=list(OUT_OF_BOUNDS))
def test_out_of_bounds_hyperparameters_are_400_naming_the_field(env: dict, case: str, where: str):
    before = _jobs(env)
    name, value, limit = OUT_OF_BOUNDS[case]
    error = _refused(env, _post(env, _hp(where, {name: value})), f"{PREFIX[where]}.{name}")
    assert error["code"] == "invalid_request"
    assert limit in error["message"], error
    assert _jobs(env) == before


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_numbers_are_refused(env: dict, literal: str):
    """Python's JSON parser accepts these literals; the API must not."""
    before = _jobs(env)
    for name in ("n_epochs", "learning_rate_multiplier", "weight_decay"):
        body = (
            f'{{"model": "{TINY}", "training_file": "{env["train"]}", '
            f'"hyperparameters": {{"{name}": {literal}}}}}'
        )
        _refused(env, _post(env, content=body.encode()), f"hyperparameters.{name}")
    assert _jobs(env) == before


def test_the_limits_themselves_are_accepted(env: dict):
    limits = {"n_epochs": 10, "batch_size": 48, "learning_rate_multiplier": 10}
    response = _post(env, _hp("top", limits))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"


@pytest.mark.parametrize("where", ["top", "method"])
def test_a_batch_larger_than_the_training_rows_is_refused(env: dict, where: str):
    before = _jobs(env)
    error = _refused(env, _post(env, _hp(where, {"batch_size": 49})), f"{PREFIX[where]}.batch_size")
    assert "48 training rows" in error["message"], error
    assert _jobs(env) == before


@pytest.mark.parametrize("where", ["top", "method"])
def test_total_steps_over_the_server_cap_are_refused(env: dict, where: str):
    """48 rows at batch 1 for 11 epochs: 528 steps, over this server's 500."""
    before = _jobs(env)
    response = _post(env, _hp(where, {"n_epochs": 11, "batch_size": 1}))
    error = _refused(env, response, f"{PREFIX[where]}.n_epochs")
    message = error["message"]
    assert "528" in message and "500" in message, message
    assert "max_train_steps" in message  # the setting that raises the cap
    assert _jobs(env) == before
    ok = _post(env, _hp(where, {"n_epochs": 10, "batch_size": 1}))  # 480 steps
    assert ok.status_code == 200, ok.text


def test_gradient_accumulation_counts_in_the_step_cap(env: dict):
    # 48 batches of 1 per epoch, 4 per optimizer step: 12 steps per epoch, 480 for 40 epochs
    ok = _post(env, _hp("top", {"n_epochs": 40, "batch_size": 1, "gradient_accumulation": 4}))
    assert ok.status_code == 200, ok.text


# ------------------------------------------------------------------ metadata


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ({"k" * 65: "v"}, "64 characters"),
        ({"team": "v" * 513}, "512 characters"),
        ({str(i): "v" for i in range(17)}, "16"),
    ],
    ids=["key of 65 characters", "value of 513 characters", "17 keys"],
)
def test_metadata_beyond_openai_limits_is_400(env: dict, metadata: dict, needle: str):
    before = _jobs(env)
    error = _refused(env, _post(env, {"metadata": metadata}), "metadata")
    assert needle in error["message"], error
    assert _jobs(env) == before


def test_metadata_at_openai_limits_is_kept(env: dict):
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    response = _post(env, {"metadata": metadata})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == metadata


def test_a_multiplied_learning_rate_above_one_is_refused(env: dict):
    before = _jobs(env)
    hp = {"learning_rate": 0.5, "learning_rate_multiplier": 4}
    error = _refused(
        env, _post(env, _hp("method", hp)), PREFIX["method"] + ".learning_rate_multiplier"
    )
    assert "above 1" in error["message"] and "train." not in error["message"], error
    assert _jobs(env) == before
