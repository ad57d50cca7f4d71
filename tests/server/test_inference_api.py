"""``/v1/classify``, ``/v1/chat/completions`` and ``/v1/aliases`` on the app in process
(``TestClient``; its lifespan runs the local workers) with two small models trained once for
the module."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.server.api import ApiServer, api_server
from tests.server.live import TINY, server_settings

from conftest import NEGATIVE, POSITIVE, sentiment_rows, write_csv
from tuneforge.server.schemas.inference import MAX_CHARS, MAX_INPUTS

TERMINAL = {"succeeded", "failed", "cancelled"}
TEXTS = [f"the film was {POSITIVE[0]}", f"a {NEGATIVE[1]} story", "the music and the ending"]


def assert_error(response: httpx.Response, status: int, code: str, param: str | None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error", error
    assert (error["code"], error["param"]) == (code, param), error
    return error


@dataclass
class Env:
    server: ApiServer
    key: str  # train, infer, admin
    first: str  # model ids
    second: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("inference")
    with api_server(server_settings(tmp, tiny_model, workers=2)) as server:
        key = server.key("acme")
        data = write_csv(tmp / "train.csv", sentiment_rows(60)).read_bytes()
        train = server.upload(key, "train.csv", data)
        with server.http(key) as c:
            head = {"type": "head", "head": {"hyperparameters": {"n_epochs": 1}}}
            bodies = [
                {"suffix": "first", "hyperparameters": {"n_epochs": 2, "batch_size": 8}},
                {"suffix": "second", "method": head},
            ]
            jobs = []
            for body in bodies:
                response = c.post(
                    "/v1/fine_tuning/jobs", json={"model": TINY, "training_file": train, **body}
                )
                assert response.status_code == 200, response.text
                jobs.append(response.json()["id"])
        done = [server.wait_for_job(key, j, TERMINAL, timeout=240) for j in jobs]
        for job in done:
            assert job["status"] == "succeeded", job
        yield Env(server, key, done[0]["fine_tuned_model"], done[1]["fine_tuned_model"])


@pytest.fixture()
def client(env: Env) -> Iterator[httpx.Client]:
    with env.server.http(env.key) as c:
        yield c


def classify(client: httpx.Client, **body) -> httpx.Response:
    return client.post("/v1/classify", json=body)


# ------------------------------------------------------------------ /v1/classify


def test_classify_one_text(env: Env, client):
    response = classify(client, model=env.first, input=TEXTS[0])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == env.first
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    (item,) = body["data"]
    assert item["index"] == 0 and item["label"] in ("negative", "positive")
    assert item["labels"] == [item["label"]] and item["top_k"] is None
    assert 0.5 <= item["score"] <= 1.0


def test_classify_a_list_keeps_order_and_matches_single_calls(env: Env, client):
    batch = classify(client, model=env.first, input=TEXTS).json()
    assert [d["index"] for d in batch["data"]] == [0, 1, 2]
    for text, item in zip(TEXTS, batch["data"], strict=True):
        (single,) = classify(client, model=env.first, input=text).json()["data"]
        assert single["label"] == item["label"]
        assert single["score"] == pytest.approx(item["score"], abs=1e-4)
    singles = sum(
        classify(client, model=env.first, input=t).json()["usage"]["prompt_tokens"] for t in TEXTS
    )
    assert batch["usage"]["prompt_tokens"] == singles


def test_top_k(env: Env, client):
    for k in (1, 2, 50):
        (item,) = classify(client, model=env.first, input=TEXTS[1], top_k=k).json()["data"]
        top = item["top_k"]
        assert len(top) == min(k, 2)
        assert top[0] == {"label": item["label"], "score": item["score"]}
        scores = [t["score"] for t in top]
        assert scores == sorted(scores, reverse=True)
        if k >= 2:
            assert {t["label"] for t in top} == {"negative", "positive"}
            assert sum(scores) == pytest.approx(1.0, abs=1e-5)


def test_threshold_abstains_below_it(env: Env, client):
    (item,) = classify(client, model=env.first, input=TEXTS[2]).json()["data"]
    score = item["score"]
    (kept,) = classify(client, model=env.first, input=TEXTS[2], threshold=score / 2).json()["data"]
    assert kept["label"] == item["label"] and kept["labels"] == [item["label"]]
    above = min(1.0, score + (1 - score) / 2)
    assert above > score
    (none,) = classify(client, model=env.first, input=TEXTS[2], threshold=above, top_k=2).json()[
        "data"
    ]
    assert none["label"] is None and none["labels"] == []
    assert none["score"] == pytest.approx(score, abs=1e-4)  # the score is still reported
    assert none["top_k"][0]["label"] == item["label"]  # and the candidates


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"input": []}, 400, "empty_input", "input"),
        ({"input": ["x"] * (MAX_INPUTS + 1)}, 400, "too_many_inputs", "input"),
        ({"input": "x" * (MAX_CHARS + 1)}, 400, "input_too_long", "input"),
        ({"input": "x", "top_k": 0}, 400, "invalid_request", "top_k"),
        ({"input": "x", "threshold": 1.5}, 400, "invalid_request", "threshold"),
        ({"input": 42}, 400, "invalid_request", "input"),
        ({"input": ["ok", None]}, 400, "invalid_request", "input"),
    ],
)
def test_classify_refuses_bad_input(env: Env, client, body, status, code, param):
    response = classify(client, model=env.first, **body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code, error
    assert error["param"] == param or error["param"].startswith(param + "."), error


def test_classify_unknown_and_base_models(env: Env, client):
    error = assert_error(
        classify(client, model="ft:nope", input="x"), 404, "model_not_found", "model"
    )
    assert "ft:nope" in error["message"]
    for base in (TINY, "default"):
        error = assert_error(
            classify(client, model=base, input="x"), 400, "not_a_classifier", "model"
        )
        assert "fine-tune" in error["message"]
    # another project cannot use acme's model, even knowing its id
    with env.server.http(env.server.key("bravo", "infer")) as other:
        assert_error(classify(other, model=env.first, input="x"), 404, "model_not_found", "model")


# ------------------------------------------------------------------ /v1/chat/completions


def chat(client: httpx.Client, **body) -> httpx.Response:
    return client.post("/v1/chat/completions", json=body)


def test_chat_completion_answers_with_the_label(env: Env, client):
    messages = [
        {"role": "system", "content": "Classify the sentiment."},
        {"role": "user", "content": "ignored: only the last user message counts"},
        {"role": "assistant", "content": "positive"},
        {"role": "user", "content": [{"type": "text", "text": TEXTS[1]}]},
    ]
    response = chat(client, model=env.first, messages=messages, logprobs=True, top_logprobs=2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == env.first
    (choice,) = body["choices"]
    (expected,) = classify(client, model=env.first, input=TEXTS[1]).json()["data"]
    assert choice["message"] == {"role": "assistant", "content": expected["label"], "refusal": None}
    assert choice["finish_reason"] == "stop"
    (token,) = choice["logprobs"]["content"]
    assert token["token"] == expected["label"]
    assert token["logprob"] == pytest.approx(math.log(expected["score"]), abs=1e-3)
    assert token["top_logprobs"][0]["token"] == expected["label"]
    assert len(token["top_logprobs"]) == 2
    assert body["usage"]["completion_tokens"] == 1
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 1


def test_chat_completion_refusals(env: Env, client):
    system_only = [{"role": "system", "content": "Classify."}]
    error = assert_error(
        chat(client, model=env.first, messages=system_only), 400, "no_user_message", "messages"
    )
    assert "user message" in error["message"]
    user = [{"role": "user", "content": "good"}]
    error = assert_error(
        chat(client, model=env.first, messages=user, stream=True), 400, "unsupported", "stream"
    )
    assert "stream" in error["message"].lower()
    assert_error(chat(client, model=TINY, messages=user), 400, "not_a_classifier", "model")
    assert chat(client, model=env.first, messages=[]).status_code == 400
    assert chat(client, model=env.first, messages=user, n=2).status_code == 400
    bad_role = [{"role": "wizard", "content": "good"}]
    assert chat(client, model=env.first, messages=bad_role).status_code == 400


# ------------------------------------------------------------------ models and aliases


def test_models_list_and_retrieve(env: Env, client):
    listed = client.get("/v1/models").json()["data"]
    ids = [m["id"] for m in listed]
    assert TINY in ids and env.first in ids and env.second in ids
    model = client.get(f"/v1/models/{env.first}").json()
    assert model["id"] == env.first and model["base_model"] == TINY
    assert model["owned_by"] == "acme" and model["job_id"] == env.first.rsplit(":", 1)[1]
    assert client.get(f"/v1/models/{TINY}").json()["owned_by"] == "tuneforge"


def test_alias_promote_classify_rollback_and_delete(env: Env, client):
    a, b = env.first, env.second
    assert_error(client.get("/v1/aliases/production"), 404, "not_found", "name")
    assert_error(client.post("/v1/aliases/production/rollback"), 404, "not_found", "name")
    assert_error(
        client.put("/v1/aliases/production", json={"model": "ft:nope"}),
        404,
        "model_not_found",
        "model",
    )
    # an alias names a fine-tuned model, never a base model or another alias' name pattern
    assert client.put("/v1/aliases/production", json={"model": TINY}).status_code == 404
    assert client.put("/v1/aliases/bad name!", json={"model": a}).status_code in (404, 400)
    assert client.put("/v1/aliases/-x", json={"model": a}).status_code == 400

    promoted = client.put("/v1/aliases/production", json={"model": a}).json()
    assert promoted["name"] == "production" and promoted["object"] == "alias"
    assert promoted["model"] == a and promoted["history"] == []
    assert classify(client, model="production", input=TEXTS[0]).json()["model"] == a
    assert client.get("/v1/models/production").json()["id"] == a
    # promoting the current model again changes nothing
    assert client.put("/v1/aliases/production", json={"model": a}).json()["history"] == []
    assert_error(client.post("/v1/aliases/production/rollback"), 409, "no_history", "name")

    promoted = client.put("/v1/aliases/production", json={"model": b}).json()
    assert (promoted["model"], promoted["history"]) == (b, [a])
    assert classify(client, model="production", input=TEXTS[0]).json()["model"] == b
    reply = chat(client, model="production", messages=[{"role": "user", "content": "good"}])
    assert reply.json()["model"] == b
    assert client.get("/v1/aliases").json()["data"] == [client.get("/v1/aliases/production").json()]

    rolled = client.post("/v1/aliases/production/rollback").json()
    assert (rolled["model"], rolled["history"]) == (a, [])
    assert classify(client, model="production", input=TEXTS[0]).json()["model"] == a
    assert_error(client.post("/v1/aliases/production/rollback"), 409, "no_history", "name")

    # the aliased model cannot be deleted; the other one can
    error = assert_error(client.delete(f"/v1/models/{a}"), 409, "model_in_use", "model")
    assert "production" in error["message"]
    assert classify(client, model=a, input="x").status_code == 200
    deleted = client.delete(f"/v1/models/{b}").json()
    assert deleted == {"id": b, "object": "model", "deleted": True}
    assert not env.server.state.layout.bundle(b.rsplit(":", 1)[1]).exists()
    assert_error(classify(client, model=b, input="x"), 404, "model_not_found", "model")
    assert b not in [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert_error(client.delete(f"/v1/models/{b}"), 404, "model_not_found", "model")
    # promoting a deleted model is refused; the alias still names the first model
    assert_error(
        client.put("/v1/aliases/production", json={"model": b}), 404, "model_not_found", "model"
    )
    assert client.get("/v1/aliases/production").json()["model"] == a
    # base models are not deletable
    response = client.delete(f"/v1/models/{TINY}")
    assert response.status_code == 403 and response.json()["error"]["code"] == "base_model"
