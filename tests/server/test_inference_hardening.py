"""Inference under hostile input, on the app in process (``TestClient``) with one small model:
text that is not valid Unicode, a poisoned request inside a shared micro-batch, chat messages
without text, the documented batch limit on an idle server, and oversized JSON bodies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.server.api import ApiServer, api_server
from tests.server.live import server_settings

from conftest import NEGATIVE, POSITIVE, run_cli, sentiment_rows, write_csv
from tuneforge.server import limits
from tuneforge.server.schemas.inference import MAX_INPUTS
from tuneforge.server.services import inference as service

UPLOAD_LIMIT = 64 * 1024
HONEST = [
    f"the film was {POSITIVE[i % 3]}" if i % 2 else f"a {NEGATIVE[i % 3]} story" for i in range(8)
]
POISON = "a \ud800 lone surrogate"  # valid JSON ("\ud800"), not encodable as UTF-8


@dataclass
class Env:
    server: ApiServer
    key: str
    model: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("hardening")
    bundle = tmp / "bundle"
    result = run_cli(
        "train",
        write_csv(tmp / "train.csv", sentiment_rows(40)),
        "--model",
        tiny_model,
        "--epochs",
        "1",
        "--threads",
        "1",
        "--export",
        "none",
        "--quiet",
        "--output",
        bundle,
    )
    assert result.code == 0, result
    settings = server_settings(
        tmp, tiny_model, workers=0, backend="torch", max_upload_bytes=UPLOAD_LIMIT
    )
    with api_server(settings) as server:
        dest = server.state.layout.models / "ftjob-hardening"
        shutil.copytree(bundle, dest)
        model = server.add_model("ftjob-hardening", str(dest.relative_to(server.state.layout.root)))
        yield Env(server, server.key("acme"), model)


@pytest.fixture()
def client(env: Env) -> Iterator[httpx.Client]:
    with env.server.http(env.key) as c:
        yield c


def post(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    """POST ``body`` as ASCII JSON: a lone surrogate travels as the escape ``\\ud800``."""
    content = json.dumps(body)  # ensure_ascii: httpx's json= would fail to encode it
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


def assert_error(response: httpx.Response, status: int, code: str, param: str | None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    return error["message"]


# ------------------------------------------------------------------ text that is not Unicode


def test_classify_refuses_text_that_is_not_valid_unicode(env: Env, client):
    message = assert_error(
        post(client, "/v1/classify", {"model": env.model, "input": POISON}),
        400,
        "invalid_text",
        "input",
    )
    assert "U+D800" in message and "UTF-8" in message
    listed = {"model": env.model, "input": ["fine", "good", "x\udfffy"]}
    message = assert_error(post(client, "/v1/classify", listed), 400, "invalid_text", "input.2")
    assert "'input.2'" in message
    # the model still answers honest requests
    ok = post(client, "/v1/classify", {"model": env.model, "input": HONEST[:2]})
    assert ok.status_code == 200, ok.text


def test_chat_refuses_text_that_is_not_valid_unicode(env: Env, client):
    plain = {"model": env.model, "messages": [{"role": "user", "content": POISON}]}
    assert_error(
        post(client, "/v1/chat/completions", plain), 400, "invalid_text", "messages.0.content"
    )
    parts = [{"type": "text", "text": "good"}, {"type": "text", "text": "\udc00"}]
    messages = [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": "fine"},
        {"role": "user", "content": parts},
    ]
    body = {"model": env.model, "messages": messages}
    assert_error(
        post(client, "/v1/chat/completions", body), 400, "invalid_text", "messages.2.content"
    )


def test_a_model_name_or_alias_target_that_is_not_unicode_is_refused(env: Env, client):
    """The model name goes to the database: a lone surrogate there is a 400, not a 500 from
    the driver, and the alias table is untouched."""
    for path, body in (
        ("/v1/classify", {"model": f"m{POISON}", "input": "fine"}),
        ("/v1/chat/completions", {"model": POISON, "messages": [{"role": "user", "content": "x"}]}),
    ):
        response = post(client, path, body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "model", response.text
    promoted = client.put(
        "/v1/aliases/prod",
        content=json.dumps({"model": POISON}),
        headers={"Content-Type": "application/json"},
    )
    assert promoted.status_code == 400, promoted.text
    assert promoted.json()["error"]["param"] == "model", promoted.text
    assert client.get("/v1/aliases").json()["data"] == []


def test_a_poisoned_request_fails_alone_while_honest_ones_share_its_batch(
    env: Env, client, monkeypatch: pytest.MonkeyPatch
):
    """Defence in depth: with request validation switched off, the poisoned text reaches the
    micro-batch (the tokenizer raises on it); only its own request fails."""
    singles = {
        t: post(client, "/v1/classify", {"model": env.model, "input": t}).json() for t in HONEST
    }
    loaded = env.server.state.models.peek(env.model)
    assert loaded is not None
    batches: list[list[str]] = []
    real_run = loaded.batcher.run

    def recording(texts):
        batches.append(list(texts))
        return real_run(texts)

    monkeypatch.setattr(service, "_check_texts", lambda *args, **kwargs: None)
    monkeypatch.setattr(loaded.batcher, "run", recording)
    monkeypatch.setattr(loaded.batcher, "max_wait", 0.5)  # everyone joins one batch

    def send(text: str) -> httpx.Response:
        with env.server.http(env.key) as c:
            return post(c, "/v1/classify", {"model": env.model, "input": text})

    with ThreadPoolExecutor(len(HONEST) + 1) as pool:
        futures = [pool.submit(send, t) for t in [*HONEST[:4], POISON, *HONEST[4:]]]
        responses = [f.result() for f in futures]
    poisoned = responses.pop(4)

    assert any(POISON in b and len(b) > 1 for b in batches), batches  # they did share a batch
    for text, response in zip(HONEST, responses, strict=True):
        assert response.status_code == 200, response.text
        (item,) = response.json()["data"]
        (alone,) = singles[text]["data"]
        assert item["label"] == alone["label"]
        assert item["score"] == pytest.approx(alone["score"], abs=1e-4)
    assert poisoned.status_code == 500, poisoned.text
    error = poisoned.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "inference_error",
        "server_error",
        None,
    )
    assert "Traceback" not in error["message"] and 'File "' not in error["message"]
    assert "TextEncodeInput" not in error["message"]  # the library's words stay in the log


# ------------------------------------------------------------------ chat without text


@pytest.mark.parametrize(
    "content",
    [
        None,
        "",
        "  \n ",
        [],
        [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}],
        [{"type": "text", "text": ""}, {"type": "input_audio", "input_audio": {"data": "AA=="}}],
    ],
    ids=["null", "empty", "blank", "no-parts", "image-only", "empty-text-part"],
)
def test_chat_user_message_without_text_is_refused(env: Env, client, content):
    messages = [
        {"role": "system", "content": "Classify the sentiment."},
        {"role": "user", "content": "an earlier message does not stand in for the last one"},
        {"role": "assistant", "content": "positive"},
        {"role": "user", "content": content},
    ]
    response = post(client, "/v1/chat/completions", {"model": env.model, "messages": messages})
    message = assert_error(response, 400, "empty_input", "messages.3.content")
    assert "no text" in message


# ------------------------------------------------------------------ the batch size limit


def test_the_documented_number_of_inputs_is_accepted_on_an_idle_server(env: Env, client):
    assert env.server.settings.queue_max_texts < MAX_INPUTS  # the default queue is smaller
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    assert f"up to {MAX_INPUTS:,} texts" in docs
    texts = [HONEST[i % len(HONEST)] for i in range(MAX_INPUTS)]
    response = post(client, "/v1/classify", {"model": env.model, "input": texts})
    assert response.status_code == 200, response.text[:500]
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(MAX_INPUTS))
    over = post(client, "/v1/classify", {"model": env.model, "input": [*texts, "one more"]})
    message = assert_error(over, 400, "too_many_inputs", "input")
    assert f"{MAX_INPUTS}" in message


# ------------------------------------------------------------------ oversized bodies


def big_json(model: str) -> bytes:
    return json.dumps({"model": model, "input": "x" * limits.DEFAULT_BODY_LIMIT}).encode()


@pytest.mark.parametrize("path", ["/v1/classify", "/v1/chat/completions"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_json_body_says_the_request_is_too_large(env: Env, client, path, chunked):
    body = big_json(env.model)
    content = (body[i : i + 65536] for i in range(0, len(body), 65536)) if chunked else body
    response = client.post(path, content=content, headers={"Content-Type": "application/json"})
    assert ("content-length" in response.request.headers) is not chunked
    message = assert_error(response, 413, "request_too_large", None)
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "8 MiB" in message and str(limits.DEFAULT_BODY_LIMIT) in message
    assert "upload" not in message.lower() and "file" not in message.lower()


def test_an_oversized_upload_keeps_its_upload_message(client):
    files = {"file": ("big.csv", b"text,label\n" + b"good film,positive\n" * 5000)}
    response = client.post("/v1/files", files=files, data={"purpose": "fine-tune"})
    message = assert_error(response, 413, "file_too_large", "file")
    assert str(UPLOAD_LIMIT) in message and "TUNEFORGE_MAX_UPLOAD_BYTES" in message
